"""Training and evaluation images/s: cnnlab's pipeline against the usual DataLoader pipeline.

The reference does per item what torchvision's MNIST with ToTensor and Normalize does (a PIL image
from the uint8 array, a float tensor in [0, 1], normalised), batched by
``DataLoader(batch_size=64, shuffle=True)``, with the lecture's training loop (``loss.item()``
every step). Both train the same model with the same recipe and threads, interleaved in one
process; each figure is the median over repeats.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.config import TrainConfig
from cnnlab.data import BatchLoader, load_dataset
from cnnlab.engine import evaluate, train
from cnnlab.models import create_model

from benchmarks.common import median, write


class ReferenceMNIST(torch.utils.data.Dataset):
    """What torchvision.datasets.MNIST + ToTensor + Normalize do, per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float):
        self.images = images[:, 0].numpy()  # (N, 28, 28) uint8
        self.labels = labels.numpy()
        self.mean, self.std = mean, std

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i], mode="L")  # as torchvision's MNIST.__getitem__
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).view(28, 28, 1).permute(2, 0, 1)  # ToTensor
        x = x.contiguous().to(torch.float32).div(255)
        x = (x - self.mean) / self.std  # Normalize
        return x, int(self.labels[i])


def reference_train(model, data, steps: int, batch_size: int = 64) -> float:
    """Images/s of the usual pipeline for ``steps`` steps (after 5 warm-up steps)."""
    ds = ReferenceMNIST(data.train_images, data.train_labels, data.mean, data.std)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    model.train()
    it = iter(itertools.cycle(loader))
    for _ in range(5):
        x, y = next(it)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    t0 = time.perf_counter()
    running = 0.0
    for _ in range(steps):
        x, y = next(it)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        running += loss.item()  # the usual loop reads the loss every step
    return steps * batch_size / (time.perf_counter() - t0)


def _train_seconds(name: str, data, steps: int, **options) -> tuple[float, int]:
    cfg = TrainConfig(model=name, dataset=data.name, device="cuda" if torch.cuda.is_available() else "cpu",
                      max_steps=steps, eval_limit=1, **options)
    res = train(cfg, dataset=data, write=False, report=False, quiet=True, log=lambda m: None)
    return res.train_seconds, cfg.batch_size


def cnnlab_train(name: str, data, steps: int, warmup: int = 5, **options) -> float:
    """Steady-state images/s of ``cnnlab.engine.train``, excluding ``warmup`` steps like the reference:
    the time of a ``warmup``-step run is subtracted from that of a ``warmup + steps`` run (same seed,
    same first steps), so one-off costs (first-step kernel setup, compilation) cancel out."""
    short, _ = _train_seconds(name, data, warmup, **options)
    full, batch = _train_seconds(name, data, warmup + steps, **options)
    return steps * batch / max(full - short, 1e-9)


def reference_eval(model, data, batch_size: int = 1000) -> float:
    ds = ReferenceMNIST(data.test_images, data.test_labels, data.mean, data.std)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    model.eval()
    t0 = time.perf_counter()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return len(ds) / (time.perf_counter() - t0)


def cnnlab_eval(model, data, batch_size: int = 1000) -> float:
    loader = BatchLoader(data.test_images, data.test_labels, batch_size, mean=data.mean, std=data.std,
                         shuffle=False, device=next(model.parameters()).device)
    t0 = time.perf_counter()
    evaluate(model, loader)
    return len(data.test_labels) / (time.perf_counter() - t0)


OPTIONS = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "channels_last": {"channels_last": True},
    "bf16+channels_last": {"precision": "bf16", "channels_last": True},
}


def run(models=("inception", "resnet"), steps: int = 150, repeats: int = 5, options=OPTIONS) -> dict:
    data = load_dataset("mnist")
    results = {}
    for name in models:
        torch.manual_seed(0)
        ref_model = create_model(name)
        samples = {"reference": [], **{k: [] for k in options}}
        for _ in range(repeats):  # interleaved: every repeat measures every pipeline once
            samples["reference"].append(reference_train(ref_model, data, steps))
            for key, opts in options.items():
                samples[key].append(cnnlab_train(name, data, steps, **opts))
        ev_model = create_model(name)
        ev = {"reference": [], "cnnlab": []}
        for _ in range(repeats):
            ev["reference"].append(reference_eval(ev_model, data))
            ev["cnnlab"].append(cnnlab_eval(ev_model, data))
        med = {k: median(v) for k, v in samples.items()}
        best = max(options, key=lambda k: med[k])
        results[name] = {
            "train_images_per_s": med,
            "train_samples": samples,
            "ratio_fp32": med["fp32"] / med["reference"],
            "best_option": best,
            "ratio_best": med[best] / med["reference"],
            "eval_images_per_s": {k: median(v) for k, v in ev.items()},
            "eval_ratio": median(ev["cnnlab"]) / median(ev["reference"]),
        }
    lines = [
        f"## Training throughput at batch 64 (images/s, median of {repeats} interleaved repeats of {steps} steps)",
        "",
        "| model | reference DataLoader | " + " | ".join(f"cnnlab {k}" for k in options) + " | ratio fp32 | best ratio |",
        "|---|---:|" + "---:|" * len(options) + "---:|---:|",
    ]
    for name, r in results.items():
        m = r["train_images_per_s"]
        lines.append(f"| {name} | {m['reference']:,.0f} | " + " | ".join(f"{m[k]:,.0f}" for k in options)
                     + f" | {r['ratio_fp32']:.2f}x | {r['ratio_best']:.2f}x ({r['best_option']}) |")
    lines += ["", "## Evaluation throughput (images/s, batch 1000)", "",
              "| model | reference | cnnlab | ratio |", "|---|---:|---:|---:|"]
    for name, r in results.items():
        e = r["eval_images_per_s"]
        lines.append(f"| {name} | {e['reference']:,.0f} | {e['cnnlab']:,.0f} | {r['eval_ratio']:.2f}x |")
    write("throughput", {"steps": steps, "repeats": repeats, "results": results}, "\n".join(lines) + "\n")
    return results
