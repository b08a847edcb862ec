"""Wall seconds from process start to a target test accuracy, and to the end of the whole process.

Each measurement is a fresh ``python -m cnnlab train`` process with ``--target-accuracy``; the clock starts
just before the process is launched (imports and data loading count). "to target" stops at the moment the
run reports the target reached (evaluations count); "whole process" at its exit (the report counts too).

    python -m benchmarks.time_to_accuracy --seeds 3
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import median, write

#: What is measured: (name, recipe, target %, extra flags, models or None for all). The best recipe's time to 99.5%
#: uses a 4-epoch schedule of the same recipe with a faster EMA (0.99: the 0.999 average lags a short run by about
#: 2 epochs) and four checks an epoch (docs/accuracy.md); the other arms run their recipe as it is. ``fast-2ep`` is
#: the fast recipe as the residual net ran it before 2026-12-05 (2 epochs at batch 128, as the Inception net still
#: does), and ``fast-fp32`` the fast recipe in fp32 as it was until bf16 autocast joined it (2026-12-05, night),
#: both measured beside it.
ARMS = (
    ("fast", "fast", 99.0, (), None),
    ("fast-fp32", "fast", 99.0, ("--precision", "fp32"), None),
    ("fast-2ep", "fast", 99.0, ("--epochs", "2", "--batch-size", "128", "--precision", "fp32"), ("resnet",)),
    ("lecture", "lecture", 99.0, (), None),
    ("best", "best", 99.5, ("--epochs", "4", "--ema", "0.99", "--evals-per-epoch", "4"), None),
)
MODELS = ("resnet", "inception")


def one_run(model: str, recipe: str, seed: int, target: float, extra: tuple[str, ...] = ()) -> dict:
    with tempfile.TemporaryDirectory(prefix="cnnlab-tta-") as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "cnnlab", "train", "--model", model, "--recipe", recipe, "--seed", str(seed),
               "--target-accuracy", str(target), *extra, "--quiet", "--out", str(out)]
        start = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
        summary = json.loads((out / "summary.json").read_text())
    t = summary.get("target")
    return {
        "seed": seed,
        "reached": t is not None,
        "seconds": (t["reached_at_unix"] - start) if t else None,
        "epoch": t["epoch"] if t else None,
        "final_accuracy": summary["accuracy"],
        "process_seconds": wall,
    }


def _row(model: str, recipe: str, target: float, extra, r: dict) -> str:
    secs = ", ".join(f"{x['seconds']:.1f}" if x["reached"] else f"not reached ({x['final_accuracy']:.2f}%)"
                     for x in r["runs"])
    eps = ", ".join(f"{x['epoch']:.2f}" if x["reached"] else "-" for x in r["runs"])
    med = f"**{r['median_seconds']:.1f}**" if r["median_seconds"] is not None else "-"
    whole = median([x["process_seconds"] for x in r["runs"]])
    flags = f" `{' '.join(extra)}`" if extra else ""
    return (f"| {model} | {recipe}{flags} | {target:g}% | {secs} | {med} | {whole:.1f} | {eps} | "
            f"{'yes' if r['all_reached'] else 'no'} |")


def run(models=MODELS, arms=ARMS, seeds: int = 3) -> dict:
    """Every arm for each model, the arms alternated seed by seed (this machine's speed drifts)."""
    results, lines = {}, []
    for model in models:
        mine = [a for a in arms if a[4] is None or model in a[4]]
        runs = {a[0]: [] for a in mine}
        for s in range(seeds):
            for name, recipe, target, extra, _ in mine:
                runs[name].append(one_run(model, recipe, s, target, tuple(extra)))
        for name, recipe, target, extra, _ in mine:
            reached = [r["seconds"] for r in runs[name] if r["reached"]]
            key = f"{model}/{name}/{target:g}"
            results[key] = {"runs": runs[name], "all_reached": len(reached) == seeds, "extra": list(extra),
                            "median_seconds": median(reached) if len(reached) == seeds else None}
            print(f"{key}: {[round(r['seconds'], 1) if r['reached'] else None for r in runs[name]]}", flush=True)
            lines.append(_row(model, recipe, target, extra, results[key]))
    header = [f"## Time to a target test accuracy (fresh processes, {seeds} seeds)", "",
              "Seconds from launch: to the evaluation that reached the target, and to the exit of the whole process "
              "(report included).", "",
              "| model | recipe | target | seconds to target per seed | median | whole process (median) | "
              "epochs at target | all seeds reached |", "|---|---|---|---|---:|---:|---|---|"]
    # a subset of the arms writes its own file, beside the full run's
    name = "time_to_accuracy" if (tuple(models), tuple(arms)) == (MODELS, ARMS) else \
        "time_to_accuracy-" + "-".join([*models, *(a[0] for a in arms)])
    write(name, {"results": results}, "\n".join(header + lines) + "\n")
    return results


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks.time_to_accuracy")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--recipes", nargs="+", default=[a[0] for a in ARMS], choices=[a[0] for a in ARMS],
                   help="which arms to run, by name (default: all)")
    args = p.parse_args()
    run(models=tuple(args.models), arms=tuple(a for a in ARMS if a[0] in args.recipes), seeds=args.seeds)
