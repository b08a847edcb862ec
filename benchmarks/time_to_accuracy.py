"""Wall seconds from process start to the first evaluation at or above a target test accuracy.

Each measurement is a fresh ``python -m cnnlab train`` process with ``--target-accuracy``; the
clock starts just before the process is launched (imports and data loading count) and stops at
the moment the run reports the target reached (evaluation time counts).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import median, write


def one_run(model: str, recipe: str, seed: int, target: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="cnnlab-tta-") as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "cnnlab", "train", "--model", model, "--recipe", recipe, "--seed", str(seed),
               "--target-accuracy", str(target), "--quiet", "--out", str(out)]
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


def run(models=("resnet", "inception"), recipes=("fast", "lecture"), seeds: int = 3, target: float = 99.0) -> dict:
    results = {}
    for model in models:
        for recipe in recipes:
            runs = [one_run(model, recipe, s, target) for s in range(seeds)]
            reached = [r["seconds"] for r in runs if r["reached"]]
            results[f"{model}/{recipe}"] = {
                "runs": runs,
                "all_reached": len(reached) == seeds,
                "median_seconds": median(reached) if len(reached) == seeds else None,
            }
            print(f"{model}/{recipe}: {[round(r['seconds'], 1) if r['reached'] else None for r in runs]}", flush=True)
    lines = [f"## Time to {target}% test accuracy (whole process, {seeds} seeds)", "",
             "| model | recipe | seconds per seed | median | epochs at target | all seeds reached |",
             "|---|---|---|---:|---|---|"]
    for key, r in results.items():
        model, recipe = key.split("/")
        secs = ", ".join(f"{x['seconds']:.1f}" if x["reached"] else f"not reached ({x['final_accuracy']:.2f}%)" for x in r["runs"])
        eps = ", ".join(f"{x['epoch']:.2f}" if x["reached"] else "-" for x in r["runs"])
        med = f"{r['median_seconds']:.1f}" if r["median_seconds"] is not None else "-"
        lines.append(f"| {model} | {recipe} | {secs} | {med} | {eps} | {'yes' if r['all_reached'] else 'no'} |")
    for model in models:
        fast, lec = results.get(f"{model}/fast"), results.get(f"{model}/lecture")
        if fast and lec and fast["median_seconds"] and lec["median_seconds"]:
            lines.append(f"\n{model}: fast recipe is {lec['median_seconds'] / fast['median_seconds']:.1f}x faster to {target}% than the lecture recipe.")
        elif fast and lec and fast["median_seconds"]:
            lines.append(f"\n{model}: the lecture recipe did not reach {target}% on every seed within its 10 epochs.")
    write("time_to_accuracy", {"target": target, "results": results}, "\n".join(lines) + "\n")
    return results
