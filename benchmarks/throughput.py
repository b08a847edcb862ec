"""Training and evaluation images/s: cnnlab's pipeline against the usual DataLoader pipeline.

The reference does per item what torchvision's MNIST with ToTensor and Normalize does (a PIL image
from the uint8 array, a float tensor in [0, 1], normalised), batched by
``DataLoader(batch_size=64, shuffle=True)``, with the lecture's training loop (``loss.item()``
every step). Both train the same model with the same recipe and threads; each figure is the median
over repeats.

Every measurement ("arm") runs in a fresh process, and the arms are interleaved: repeat 1 runs
every arm once, then repeat 2, and so on. One process per arm because cnnlab's engine changes a
process-wide setting (glibc's allocator thresholds, ``cnnlab.hostmem``) that cannot be undone: in
one shared process the reference would inherit it after the first cnnlab arm. The reference is
therefore measured twice: as users run it (glibc's defaults) and with cnnlab's allocator setting, so
the table shows how much of the gain is the allocator and how much the pipeline.

    python -m benchmarks.throughput --arm reference --model resnet --steps 150   # one arm, JSON out
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.config import TrainConfig
from cnnlab.data import BatchLoader, load_dataset
from cnnlab.engine import train
from cnnlab.evaluation import evaluate
from cnnlab.hostmem import keep_freed_memory
from cnnlab.models import create_model

from benchmarks.common import Stopwatch, bench_device, median, write


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
    """Images/s of the usual pipeline for ``steps`` steps (after 5 warm-up steps), on the benchmark device:
    the model lives there and every batch is copied there, as in the usual loop."""
    device = bench_device()
    model.to(device)
    ds = ReferenceMNIST(data.train_images, data.train_labels, data.mean, data.std)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    model.train()
    it = iter(itertools.cycle(loader))
    for _ in range(5):
        x, y = next(it)
        opt.zero_grad()
        F.cross_entropy(model(x.to(device)), y.to(device)).backward()
        opt.step()
    clock = Stopwatch(device).start()
    running = 0.0
    for _ in range(steps):
        x, y = next(it)
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        running += loss.item()  # the usual loop reads the loss every step
    return steps * batch_size / clock.stop()


def _train_seconds(name: str, data, steps: int, **options) -> tuple[float, int]:
    """``engine.train``'s own training seconds (on CUDA it synchronises before reading the clock)."""
    cfg = TrainConfig(model=name, dataset=data.name, device=bench_device().type,
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
    device = bench_device()
    model.to(device).eval()
    ds = ReferenceMNIST(data.test_images, data.test_labels, data.mean, data.std)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    clock = Stopwatch(device).start()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
    return len(ds) / clock.stop()


def cnnlab_eval(model, data, batch_size: int = 1000) -> float:
    device = bench_device()
    model.to(device)
    loader = BatchLoader(data.test_images, data.test_labels, batch_size, mean=data.mean, std=data.std,
                         shuffle=False, device=device)  # the test set moves to the device once, untimed
    clock = Stopwatch(device).start()
    evaluate(model, loader)
    return len(data.test_labels) / clock.stop()


#: cnnlab's training options measured (the engine's default allocator setting is on in all of them). Every
#: arm names its memory format: channels-last is the lecture recipe's default since cnnlab 0.2, NCHW before.
OPTIONS = {
    "fp32": {"channels_last": False},
    "bf16": {"precision": "bf16", "channels_last": False},
    "channels_last": {"channels_last": True},
    "bf16+channels_last": {"precision": "bf16", "channels_last": True},
}
#: The arms of one repeat, in the order they run. "reference" is the usual pipeline as users run it;
#: "reference+malloc" the same with cnnlab's allocator setting; "fp32 (no malloc tuning)" is cnnlab's
#: fp32 pipeline with glibc's defaults, to separate the two effects.
TRAIN_ARMS = ("reference", "reference+malloc", "fp32 (no malloc tuning)", *OPTIONS)
EVAL_ARMS = ("reference_eval", "cnnlab_eval")
ROOT = Path(__file__).resolve().parents[1]


def measure_arm(arm: str, name: str, dataset: str = "mnist", steps: int = 150) -> float:
    """Images/s of one arm, in this process (which should be fresh: see the module docstring)."""
    data = load_dataset(dataset)
    torch.manual_seed(0)
    if arm in ("reference", "reference+malloc"):
        if arm == "reference+malloc":
            keep_freed_memory()
        return reference_train(create_model(name), data, steps)
    if arm == "fp32 (no malloc tuning)":
        return cnnlab_train(name, data, steps, malloc_tuning=False, channels_last=False)
    if arm in OPTIONS:
        return cnnlab_train(name, data, steps, **OPTIONS[arm])
    if arm == "reference_eval":
        return reference_eval(create_model(name), data)
    if arm == "cnnlab_eval":
        return cnnlab_eval(create_model(name), data)
    raise ValueError(f"unknown arm {arm!r}; one of {', '.join(TRAIN_ARMS + EVAL_ARMS)}")


def arm_in_fresh_process(arm: str, name: str, dataset: str = "mnist", steps: int = 150) -> float:
    out = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--arm", arm, "--model", name,
                          "--dataset", dataset, "--steps", str(steps)],
                         cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark arm {arm!r} ({name}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]


def run(models=("inception", "resnet"), steps: int = 150, repeats: int = 5, dataset: str = "mnist") -> dict:
    results = {}
    for name in models:
        samples = {arm: [] for arm in TRAIN_ARMS + EVAL_ARMS}
        for _ in range(repeats):  # interleaved: every repeat measures every arm once
            for arm in TRAIN_ARMS + EVAL_ARMS:
                samples[arm].append(arm_in_fresh_process(arm, name, dataset, steps))
        med = {k: median(v) for k, v in samples.items()}
        best = max(OPTIONS, key=lambda k: med[k])
        results[name] = {
            "train_images_per_s": {k: med[k] for k in TRAIN_ARMS},
            "train_samples": {k: samples[k] for k in TRAIN_ARMS},
            "ratio_fp32": med["fp32"] / med["reference"],
            "best_option": best,
            "ratio_best": med[best] / med["reference"],
            "ratio_best_vs_reference_malloc": med[best] / med["reference+malloc"],
            "eval_images_per_s": {"reference": med["reference_eval"], "cnnlab": med["cnnlab_eval"]},
            "eval_ratio": med["cnnlab_eval"] / med["reference_eval"],
        }
    lines = [
        f"## Training throughput at batch 64 (images/s, median of {repeats} interleaved repeats of {steps} steps, "
        "each in a fresh process)",
        "",
        "| model | " + " | ".join(a if a.startswith("reference") else f"cnnlab {a}" for a in TRAIN_ARMS)
        + " | ratio fp32 | best ratio | best vs reference+malloc |",
        "|---|" + "---:|" * len(TRAIN_ARMS) + "---:|---:|---:|",
    ]
    for name, r in results.items():
        m = r["train_images_per_s"]
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:,.0f}" for k in TRAIN_ARMS)
                     + f" | {r['ratio_fp32']:.2f}x | {r['ratio_best']:.2f}x ({r['best_option']}) "
                       f"| {r['ratio_best_vs_reference_malloc']:.2f}x |")
    lines += ["", "Ratios are against `reference` (the usual pipeline with glibc's default allocator, as users run it); "
              "`reference+malloc` is the same pipeline with cnnlab's allocator setting (`cnnlab.hostmem`).",
              "", "## Evaluation throughput (images/s, batch 1000)", "",
              "| model | reference | cnnlab | ratio |", "|---|---:|---:|---:|"]
    for name, r in results.items():
        e = r["eval_images_per_s"]
        lines.append(f"| {name} | {e['reference']:,.0f} | {e['cnnlab']:,.0f} | {r['eval_ratio']:.2f}x |")
    write("throughput", {"steps": steps, "repeats": repeats, "results": results}, "\n".join(lines) + "\n")
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description="measure one arm, print JSON")
    p.add_argument("--arm", required=True, choices=TRAIN_ARMS + EVAL_ARMS)
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--steps", type=int, default=150)
    args = p.parse_args(argv)
    ips = measure_arm(args.arm, args.model, args.dataset, args.steps)
    print(json.dumps({"arm": args.arm, "model": args.model, "images_per_s": ips}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
