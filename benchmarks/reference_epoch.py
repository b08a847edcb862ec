"""The whole-process reference: one epoch of the lecture's training script as users run it, then one test pass.

What the lecture series' script does, without torchvision (which does not load beside this torch): read the
raw IDX files into arrays (torchvision's ``MNIST`` does this at start), then per item a PIL image, ``ToTensor``
and ``Normalize((0.1307,), (0.3081,))``, batched by ``DataLoader(batch_size=64, shuffle=True)``; the lecture's
own classes (as written, with the Inception pool's stride fixed to 1); SGD lr 0.01 momentum 0.5;
``loss.item()`` every step and a line every 300 batches; the test set with ``DataLoader(batch_size=64)`` under
``no_grad``, and its accuracy printed.

    python -m benchmarks.reference_epoch --model resnet --data DIR_WITH_RAW_IDX_FILES
"""

from __future__ import annotations

import argparse
import struct

import numpy as np
import torch
from PIL import Image

from benchmarks.lecture import LectureInceptionNet, LectureResNet


def read_idx(path: str) -> np.ndarray:
    """A raw IDX file as an array (what torchvision's ``read_sn3_pascalvincent_tensor`` does)."""
    with open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class MNIST(torch.utils.data.Dataset):
    """Per item: a PIL image, ToTensor, Normalize (torchvision's MNIST with the lecture's transform)."""

    def __init__(self, directory: str, train: bool):
        prefix = "train" if train else "t10k"
        self.images = read_idx(f"{directory}/{prefix}-images-idx3-ubyte")
        self.labels = torch.from_numpy(read_idx(f"{directory}/{prefix}-labels-idx1-ubyte").astype(np.int64))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i], mode="L")
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).view(28, 28, 1).permute(2, 0, 1)  # ToTensor
        x = x.contiguous().to(torch.float32).div(255)
        return (x - 0.1307) / 0.3081, int(self.labels[i])  # Normalize


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=("resnet", "inception"), required=True)
    p.add_argument("--data", required=True)
    args = p.parse_args()
    train_loader = torch.utils.data.DataLoader(MNIST(args.data, True), shuffle=True, batch_size=64)
    test_loader = torch.utils.data.DataLoader(MNIST(args.data, False), shuffle=False, batch_size=64)
    model = LectureResNet() if args.model == "resnet" else LectureInceptionNet()
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    running_loss = 0.0
    for batch_idx, (inputs, target) in enumerate(train_loader):
        optimizer.zero_grad()
        loss = criterion(model(inputs), target)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        if batch_idx % 300 == 299:
            print(f"[1, {batch_idx + 1:5d}] loss: {running_loss / 300:.3f}", flush=True)
            running_loss = 0.0
    correct = total = 0
    with torch.no_grad():
        for images, labels in test_loader:
            predicted = model(images).argmax(1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    print(f"accuracy on test set: {100 * correct / total:.2f} % [{correct}/{total}]")


if __name__ == "__main__":
    main()
