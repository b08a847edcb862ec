"""Achieved training FLOP/s as a fraction of this machine's measured matrix-multiply peak.

FLOPs of one training step (forward + backward) are counted with ``torch.utils.flop_counter``;
the peak is the median FLOP/s of large square matmuls in the same dtype on the same threads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.data import load_dataset
from cnnlab.models import create_model

from benchmarks.common import Stopwatch, bench_device, median, write
from benchmarks.throughput import cnnlab_train


def matmul_peak(dtype=torch.float32, n: int = 2048, repeats: int = 7) -> float:
    """Median FLOP/s of an n x n matmul on the benchmark device (the GPU when there is one)."""
    device = bench_device()
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        clock = Stopwatch(device).start()
        for _ in range(3):
            torch.mm(a, b)
        times.append(clock.stop() / 3)
    return 2 * n**3 / median(times)


def train_step_flops(name: str, batch: int = 64) -> int:
    model = create_model(name)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return int(counter.get_total_flops())


def bf16_supported() -> bool:
    """Whether the benchmark device multiplies bf16 matrices."""
    one = torch.ones(4, 4, dtype=torch.bfloat16, device=bench_device())
    try:
        torch.mm(one, one)
        return True
    except RuntimeError:
        return False


#: What is measured: (column, precision of the peak it is compared with, cnnlab training options).
#: Every column is fp32 training except bf16 (autocast), which is compared with the bf16 peak.
COLUMNS = (
    ("fp32", "fp32", {}),
    ("fp32+channels_last", "fp32", {"channels_last": True}),
    ("bf16+channels_last", "bf16", {"precision": "bf16", "channels_last": True}),
    ("fp32+compile", "fp32", {"compile": True}),
)


def run(models=("inception", "resnet"), steps: int = 150, repeats: int = 3, compiled: bool = True) -> dict:
    """cnnlab's engine applies its allocator setting (cnnlab.hostmem) on the first run, so every column
    here is measured with it; benchmarks/throughput.py shows what it is worth."""
    data = load_dataset("mnist")
    peaks = {"fp32": matmul_peak(torch.float32)}
    if bf16_supported():
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    columns = [(c, p, o) for c, p, o in COLUMNS if p in peaks and (compiled or not o.get("compile"))]
    results = {}
    for name in models:
        flops = train_step_flops(name)
        row = {"flops_per_step": flops, "flops_per_image": flops / 64}
        for column, peak, options in columns:
            if options.get("compile"):
                # torch.compile: one untimed run first, so that compilation (tens of seconds) is cached
                cnnlab_train(name, data, 5, **options)
            ips = median([cnnlab_train(name, data, steps, **options) for _ in range(repeats)])
            achieved = ips / 64 * flops
            row[column] = {"images_per_s": ips, "achieved_flops": achieved, "peak": peak,
                           "fraction_of_peak": achieved / peaks[peak]}
        results[name] = row
    names = [c for c, _, _ in columns]
    lines = [
        "## Roofline: achieved training FLOP/s vs measured matmul peak (bf16 vs the bf16 peak, the rest vs fp32's)",
        "",
        "Peak: " + ", ".join(f"{k} {v / 1e9:,.1f} GFLOP/s" for k, v in peaks.items()) + " (2048x2048 matmul, median).",
        "",
        "| model | train GFLOP/image | " + " | ".join(f"{c} img/s | {c} GFLOP/s | {c} % of peak" for c in names) + " |",
        "|---|---:|" + "---:|---:|---:|" * len(names),
    ]
    for name, r in results.items():
        cells = " | ".join(f"{r[c]['images_per_s']:,.0f} | {r[c]['achieved_flops'] / 1e9:,.1f} | "
                           f"{100 * r[c]['fraction_of_peak']:.0f}%" for c in names)
        lines.append(f"| {name} | {r['flops_per_image'] / 1e9:.4f} | {cells} |")
    write("roofline", {"peaks": peaks, "results": results}, "\n".join(lines) + "\n")
    return results
