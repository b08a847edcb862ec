"""Clothes: do the shipped Fashion-MNIST nets read a user's image files as they read the test set's arrays?

Fashion-MNIST *test* images (the first ``--n``) given three ways besides the arrays themselves: as 28x28 PNG files;
as a product photo (the item dark on white, as the dataset's sources were: negated, enlarged 8 times with bicubic,
on a white page with a margin of 40 and 60 px); and the same photo on grey paper (85%) with sensor noise (sd 0.03)
saved as JPEG (quality 60). ``cnnlab.predictor(model=M, dataset="fashion-mnist")`` reads each file as
``cnnlab predict`` does. Per net: accuracy, and the share refused. Printed, and written to
``benchmarks/results/clothes_photos.{json,md}``; ``--baseline REV`` runs the same on the source at git revision REV
(in a worktree, a process of its own) for a before column.

    python -m benchmarks.clothes_photos [--n 1000] [--baseline REV]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

from benchmarks.common import write

WAYS = ("28x28 PNG", "photo, white page", "photo, grey paper, noise, JPEG")


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def photo(a: np.ndarray, grey: bool, rng: np.random.Generator) -> bytes:
    big = Image.fromarray(255 - a).resize((224, 224), Image.Resampling.BICUBIC)
    page = Image.new("L", (224 + 80, 224 + 120), 255)
    page.paste(big, (40, 60))
    if not grey:
        return png(np.asarray(page))
    g = np.asarray(page, np.float32) / 255 * 0.85 + rng.normal(0, 0.03, page.size[::-1])
    buf = io.BytesIO()
    Image.fromarray(np.clip(g * 255, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=60)
    return buf.getvalue()


def measure(n: int) -> dict:
    import cnnlab
    from cnnlab.data import load_dataset

    data = load_dataset("fashion-mnist")
    x, y = data.test_images[:n, 0].numpy(), data.test_labels[:n].numpy()
    rng = np.random.default_rng(0)
    files = {WAYS[0]: [png(a) for a in x], WAYS[1]: [photo(a, False, rng) for a in x],
             WAYS[2]: [photo(a, True, rng) for a in x]}
    out = {}
    for model in ("resnet", "inception"):
        pr = cnnlab.predictor(model=model, dataset="fashion-mnist")
        row = {"arrays": 100 * float(np.mean([p.label == pr.classes[t] for p, t in zip(pr(list(x)), y)]))}
        for way, blobs in files.items():
            right = refused = 0
            for blob, t in zip(blobs, y):
                try:
                    right += pr(blob).label == pr.classes[t]
                except Exception:  # noqa: BLE001 - a refusal (or an error) counts as not read
                    refused += 1
            row[way] = {"accuracy": 100 * right / n, "refused": 100 * refused / n}
        out[model] = row
    return out


def baseline(rev: str, n: int) -> dict:
    """:func:`measure` on the source at ``rev``, in a worktree and a process of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "tree")
        subprocess.run(["git", "worktree", "add", "-f", tree, rev, "-q"], check=True)
        try:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(tree, "src"), os.getcwd()])}
            code = f"import json, benchmarks.clothes_photos as b; print(json.dumps(b.measure({n})))"
            done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            return json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", tree], check=False)


def markdown(after: dict, before: dict | None, n: int, rev: str | None) -> str:
    lines = [f"## Clothes: the first {n} Fashion-MNIST test images as files, read by the shipped nets", "",
             "| net | the arrays | " + " | ".join(WAYS) + " |", "|---|---:|" + "---:|" * len(WAYS)]
    for model, row in after.items():
        cells = []
        for way in WAYS:
            cell = f"{row[way]['accuracy']:.1f}%"
            if before:
                b = before[model][way]
                cell += f" (before: {b['accuracy']:.1f}%, {b['refused']:.1f}% refused)"
            cells.append(cell)
        lines.append(f"| {model} | {row['arrays']:.1f}% | " + " | ".join(cells) + " |")
    if rev:
        lines += ["", f"Before: the source at {rev}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.clothes_photos", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--baseline", default=None, help="a git revision to measure beside (a before column)")
    args = p.parse_args(argv)
    after = measure(args.n)
    before = baseline(args.baseline, args.n) if args.baseline else None
    for model, row in after.items():
        print(f"  {model}: arrays {row['arrays']:.1f}%  " + "  ".join(
            f"{way}: {row[way]['accuracy']:.1f}%" for way in WAYS), flush=True)
    write("clothes_photos", {"n": args.n, "after": after, "before": before, "baseline": args.baseline},
          markdown(after, before, args.n, args.baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
