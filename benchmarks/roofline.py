"""Achieved training FLOP/s as a fraction of this machine's measured matrix-multiply peak.

FLOPs of one training step (forward + backward) are counted with ``torch.utils.flop_counter``.
The peak is measured, per dtype and on the same threads, as the median FLOP/s of one 2048^3 matrix
product computed three ways: ``torch.mm`` (the BLAS torch is built with: MKL on x86) and the same
product as a 1x1 convolution in either memory layout (oneDNN on the CPU, cuDNN on a GPU, the
libraries that run the nets' convolutions). All are reported and the highest is the peak: on
this AMD CPU MKL's fp32 sgemm runs at about half of what oneDNN gets from the same cores, so
``torch.mm`` alone would make every fraction look twice as good as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.data import load_dataset
from cnnlab.models import create_model

from benchmarks.common import Stopwatch, bench_device, median, write
from benchmarks.throughput import cnnlab_train


def _median_rate(fn, flops: float, device: torch.device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        clock = Stopwatch(device).start()
        for _ in range(3):
            fn()
        times.append(clock.stop() / 3)
    return flops / median(times)


def matmul_rates(dtype=torch.float32, n: int = 2048, repeats: int = 7) -> dict[str, float]:
    """FLOP/s of an n x n x n matrix product on the benchmark device, by each way of computing it: torch.mm,
    and a 1x1 convolution of a (1, n, n, 1) input (n channels) with n filters, in either memory layout."""
    device = bench_device()
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    x = torch.randn(1, n, n, 1, device=device).to(dtype)
    w = torch.randn(n, n, 1, 1, device=device).to(dtype)
    xc, wc = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    flops = 2.0 * n**3
    return {"torch.mm": _median_rate(lambda: torch.mm(a, b), flops, device, repeats),
            "1x1 conv": _median_rate(lambda: F.conv2d(x, w), flops, device, repeats),
            "1x1 conv channels-last": _median_rate(lambda: F.conv2d(xc, wc), flops, device, repeats)}


def matmul_peak(dtype=torch.float32, n: int = 2048, repeats: int = 7) -> float:
    """The best of :func:`matmul_rates`."""
    return max(matmul_rates(dtype, n, repeats).values())


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
    ("fp32", "fp32", {"channels_last": False}),
    ("fp32+channels_last", "fp32", {"channels_last": True}),
    ("bf16+channels_last", "bf16", {"precision": "bf16", "channels_last": True}),
    ("fp32+compile", "fp32", {"compile": True, "channels_last": False}),
)


def run(models=("inception", "resnet"), steps: int = 150, repeats: int = 3, compiled: bool = True) -> dict:
    """cnnlab's engine applies its allocator setting (cnnlab.hostmem) on the first run, so every column
    here is measured with it; benchmarks/throughput.py shows what it is worth."""
    data = load_dataset("mnist")
    rates = {"fp32": matmul_rates(torch.float32)}
    if bf16_supported():
        rates["bf16"] = matmul_rates(torch.bfloat16)
    peaks = {dtype: max(by_way.values()) for dtype, by_way in rates.items()}
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
                           "fraction_of_peak": achieved / peaks[peak],
                           "fraction_of_torch_mm": achieved / rates[peak]["torch.mm"]}
        results[name] = row
    names = [c for c, _, _ in columns]
    lines = [
        "## Roofline: achieved training FLOP/s vs measured matmul peak (bf16 vs the bf16 peak, the rest vs fp32's)",
        "",
        "Matrix product 2048^3, median GFLOP/s: " + "; ".join(
            f"{dtype} " + ", ".join(f"{way} {v / 1e9:,.1f}" for way, v in by_way.items())
            + f" -> peak {peaks[dtype] / 1e9:,.1f}" for dtype, by_way in rates.items()) + ".",
        "",
        "| model | train GFLOP/image | " + " | ".join(f"{c} img/s | {c} GFLOP/s | {c} % of peak (% of torch.mm)"
                                                     for c in names) + " |",
        "|---|---:|" + "---:|---:|---:|" * len(names),
    ]
    for name, r in results.items():
        cells = " | ".join(f"{r[c]['images_per_s']:,.0f} | {r[c]['achieved_flops'] / 1e9:,.1f} | "
                           f"{100 * r[c]['fraction_of_peak']:.0f}% ({100 * r[c]['fraction_of_torch_mm']:.0f}%)"
                           for c in names)
        lines.append(f"| {name} | {r['flops_per_image'] / 1e9:.4f} | {cells} |")
    write("roofline", {"matmul_rates": rates, "peaks": peaks, "results": results}, "\n".join(lines) + "\n")
    return results
