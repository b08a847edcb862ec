"""Achieved training FLOP/s as a fraction of this machine's measured matrix-multiply peak.

FLOPs of one training step (forward + backward) are counted with ``torch.utils.flop_counter``;
the peak is the median FLOP/s of large square matmuls in the same dtype on the same threads.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.data import load_dataset
from cnnlab.models import create_model

from benchmarks.common import median, write
from benchmarks.throughput import cnnlab_train


def matmul_peak(dtype=torch.float32, n: int = 2048, repeats: int = 7) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(3):
            torch.mm(a, b)
        times.append((time.perf_counter() - t0) / 3)
    return 2 * n**3 / median(times)


def train_step_flops(name: str, batch: int = 64) -> int:
    model = create_model(name)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return int(counter.get_total_flops())


def bf16_supported() -> bool:
    try:
        torch.mm(torch.ones(4, 4, dtype=torch.bfloat16), torch.ones(4, 4, dtype=torch.bfloat16))
        return True
    except RuntimeError:
        return False


def run(models=("inception", "resnet"), steps: int = 150, repeats: int = 3, compiled: bool = True) -> dict:
    data = load_dataset("mnist")
    peaks = {"fp32": matmul_peak(torch.float32)}
    if bf16_supported():
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    results = {}
    for name in models:
        flops = train_step_flops(name)
        row = {"flops_per_step": flops, "flops_per_image": flops / 64}
        for prec in peaks:
            ips = median([cnnlab_train(name, data, steps, precision=prec) for _ in range(repeats)])
            achieved = ips / 64 * flops
            row[prec] = {"images_per_s": ips, "achieved_flops": achieved, "fraction_of_peak": achieved / peaks[prec]}
        if compiled:
            # torch.compile: one untimed run first, so that compilation (tens of seconds) is cached
            cnnlab_train(name, data, 5, compile=True)
            ips = median([cnnlab_train(name, data, steps, compile=True) for _ in range(repeats)])
            achieved = ips / 64 * flops
            row["fp32+compile"] = {"images_per_s": ips, "achieved_flops": achieved,
                                   "fraction_of_peak": achieved / peaks["fp32"]}
        results[name] = row
    columns = [*peaks, *(["fp32+compile"] if compiled else [])]
    lines = [
        "## Roofline: achieved training FLOP/s vs measured matmul peak (fp32+compile: vs the fp32 peak)",
        "",
        "Peak: " + ", ".join(f"{k} {v / 1e9:,.1f} GFLOP/s" for k, v in peaks.items()) + " (2048x2048 matmul, median).",
        "",
        "| model | train GFLOP/image | " + " | ".join(f"{p} img/s | {p} GFLOP/s | {p} % of peak" for p in columns) + " |",
        "|---|---:|" + "---:|---:|---:|" * len(columns),
    ]
    for name, r in results.items():
        cells = " | ".join(f"{r[p]['images_per_s']:,.0f} | {r[p]['achieved_flops'] / 1e9:,.1f} | "
                           f"{100 * r[p]['fraction_of_peak']:.0f}%" for p in columns)
        lines.append(f"| {name} | {r['flops_per_image'] / 1e9:.4f} | {cells} |")
    write("roofline", {"peaks": peaks, "results": results}, "\n".join(lines) + "\n")
    return results
