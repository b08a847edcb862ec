"""What a user feels: whole processes, timed from launch to exit, in fresh processes, alternated, medians.

1. One lecture epoch of each net with default flags, ``cnnlab train --model M --epochs 1``, against the
   per-item reference script (``benchmarks.reference_epoch``: the lecture's training script as users run it).
   Both start from MNIST on disk: cnnlab from its verified cache, the reference from raw IDX files.
2. The latency of ``cnnlab evaluate RUN``, ``cnnlab predict RUN one.png``, ``cnnlab data info`` and
   ``cnnlab models``, each against ``python -c "import torch"``: the floor every one of them pays.

    python -m benchmarks.whole_process [--repeats 3]
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnnlab.data import load_dataset
from cnnlab.data.catalog import MNIST, ROLES
from cnnlab.data.sources import cache_dir

from benchmarks.common import median, write

MODELS = ("resnet", "inception")
GOALS = {"resnet": 2.0, "inception": 1.5}
LATENCY_GOAL_S = 0.8


def wall(cmd: list[str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return seconds


def raw_mnist(directory: Path) -> Path:
    """The four MNIST files uncompressed, as torchvision keeps them after its download."""
    load_dataset("mnist")  # verified and cached
    for role, (name, _) in ROLES.items():
        (directory / name).write_bytes(gzip.decompress((cache_dir(MNIST) / f"{name}.gz").read_bytes()))
    return directory


def epoch_arms(work: Path) -> dict[str, list[str]]:
    py = sys.executable
    data = raw_mnist(work)
    arms = {}
    for model in MODELS:
        arms[f"reference {model}"] = [py, "-m", "benchmarks.reference_epoch", "--model", model, "--data", str(data)]
        arms[f"cnnlab {model}"] = [py, "-m", "cnnlab", "train", "--model", model, "--epochs", "1", "--quiet",
                                   "--out", str(work / f"run-{model}")]
    return arms


def latency_arms(work: Path) -> dict[str, list[str]]:
    from PIL import Image, ImageDraw

    py = sys.executable
    img = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(img).line([(100, 30), (100, 170)], fill=0, width=18)
    img.save(work / "one.png")
    run = str(work / "run-resnet")
    return {
        'python -c "import torch"': [py, "-c", "import torch"],
        "cnnlab evaluate RUN": [py, "-m", "cnnlab", "evaluate", run],
        "cnnlab predict RUN one.png": [py, "-m", "cnnlab", "predict", run, str(work / "one.png")],
        "cnnlab data info": [py, "-m", "cnnlab", "data", "info"],
        "cnnlab models": [py, "-m", "cnnlab", "models"],
    }


def alternate(arms: dict[str, list[str]], repeats: int, fresh_out: bool = False) -> dict[str, list[float]]:
    """Run every arm once per repeat, in order: a slow spell of the machine hits every arm alike."""
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(repeats):
        for name, cmd in arms.items():
            if fresh_out and "--out" in cmd:  # a run folder that holds a run is refused: a new one each time
                cmd = [*cmd[:-1], f"{cmd[-1]}-{r}"]
            times[name].append(wall(cmd))
            print(f"  {name}: {times[name][-1]:.2f} s", flush=True)
    return times


def report_lines(epochs: dict[str, list[float]], latency: dict[str, list[float]], med: dict[str, float],
                 repeats: int) -> list[str]:
    """The results page: the epoch table (ratio of medians, and each round's own ratio) and the latency table."""
    floor = med['python -c "import torch"']
    lines = ["## One lecture epoch, whole process (default flags), and command latency", "",
             f"Fresh processes, alternated, median of {repeats} (latency: {max(repeats, 5)}); seconds from launch "
             "to exit." + (" Each round runs a net's two arms back to back, so each round's ratio (per round) "
                           "is a pair: their spread is the machine's noise." if epochs else ""), "",
             *(["| net | reference (per-item DataLoader) | cnnlab train --epochs 1 | ratio | goal | per round |",
                "|---|---:|---:|---:|---|---|"] if epochs else [])]
    for model in MODELS if epochs else ():
        ref, ours = med[f"reference {model}"], med[f"cnnlab {model}"]
        ratio = ref / ours
        rounds = ", ".join(f"{r / o:.2f}x" for r, o in zip(epochs[f"reference {model}"], epochs[f"cnnlab {model}"]))
        lines.append(f"| {model} | {ref:.2f} | {ours:.2f} | **{ratio:.2f}x** | >= {GOALS[model]}x: "
                     f"{'met' if ratio >= GOALS[model] else 'not met'} | {rounds} |")
    lines += ["", "| command | seconds | above `import torch` | goal |", "|---|---:|---:|---|",
              f"| `python -c \"import torch\"` (the floor) | {floor:.2f} | - | - |"]
    for name in list(latency)[1:]:
        extra = med[name] - floor
        goal = "-" if name == "cnnlab models" else f"<= {LATENCY_GOAL_S} s: {'met' if extra <= LATENCY_GOAL_S else 'not met'}"
        lines.append(f"| `{name}` | {med[name]:.2f} | {extra:+.2f} | {goal} |")
    return lines


def run(repeats: int = 3, epochs_too: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="cnnlab-whole-") as tmp:
        work = Path(tmp)
        if epochs_too:
            epochs = alternate(epoch_arms(work), repeats, fresh_out=True)
            (work / "run-resnet").symlink_to(work / "run-resnet-0")
        else:  # latency only: a short run is as costly to evaluate as a long one
            epochs = {}
            wall([sys.executable, "-m", "cnnlab", "train", "--model", "resnet", "--max-steps", "20", "--quiet",
                  "--out", str(work / "run-resnet")])
        latency = alternate(latency_arms(work), max(repeats, 5))
    med = {name: median(v) for name, v in {**epochs, **latency}.items()}
    lines = report_lines(epochs, latency, med, repeats)
    result = {"repeats": repeats, "times": {**epochs, **latency}, "medians": med}
    write("whole_process" if epochs else "whole_process-latency", result, "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks.whole_process")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--latency-only", action="store_true", help="only the command latencies (own results file)")
    args = p.parse_args()
    run(args.repeats, epochs_too=not args.latency_only)
