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
import torch.nn.functional as F
from PIL import Image


class InceptionModule(torch.nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch_pool = torch.nn.Conv2d(in_channels, 24, kernel_size=1)
        self.branch1x1 = torch.nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_1 = torch.nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_2 = torch.nn.Conv2d(16, 24, kernel_size=5, padding=2)
        self.branch3x3_1 = torch.nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch3x3_2 = torch.nn.Conv2d(16, 24, kernel_size=3, padding=1)
        self.branch3x3_3 = torch.nn.Conv2d(24, 24, kernel_size=3, padding=1)

    def forward(self, x):
        y1 = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))  # the lecture's stride 3 fails
        y2 = self.branch1x1(x)
        y3 = self.branch5x5_2(self.branch5x5_1(x))
        y4 = self.branch3x3_3(self.branch3x3_2(self.branch3x3_1(x)))
        return torch.cat([y1, y2, y3, y4], dim=1)


class InceptionNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = torch.nn.Conv2d(88, 20, kernel_size=5)
        self.incept1 = InceptionModule(in_channels=10)
        self.incept2 = InceptionModule(in_channels=20)
        self.mp = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(1408, 10)

    def forward(self, x):
        in_size = x.size(0)
        x = F.relu(self.mp(self.conv1(x)))
        x = self.incept1(x)
        x = F.relu(self.mp(self.conv2(x)))
        x = self.incept2(x)
        return self.fc(x.view(in_size, -1))


class ResidualBlock(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = torch.nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        return F.relu(x + self.conv2(y))


class ResNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, kernel_size=5)
        self.conv2 = torch.nn.Conv2d(16, 32, kernel_size=5)
        self.mp = torch.nn.MaxPool2d(2)
        self.rblock1 = ResidualBlock(16)
        self.rblock2 = ResidualBlock(32)
        self.fc = torch.nn.Linear(512, 10)

    def forward(self, x):
        in_size = x.size(0)
        x = self.mp(F.relu(self.conv1(x)))
        x = self.rblock1(x)
        x = self.mp(F.relu(self.conv2(x)))
        x = self.rblock2(x)
        return self.fc(x.view(in_size, -1))


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
    model = ResNet() if args.model == "resnet" else InceptionNet()
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
