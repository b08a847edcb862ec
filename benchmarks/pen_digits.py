"""Pen digits: how well do the shipped nets read a handwritten digit drawn with a fine pen on a large page?

MNIST's strokes are about 1.9 px wide in its 28x28 fields (a tenth of the digit's height). A digit written with
a fine pen, or drawn with a 1-3 px brush on a large canvas, has strokes a hundredth of its height or less. Each
MNIST *test* digit (the same ones in every condition) is skeletonised (Zhang-Suen thinning of its outline,
enlarged to 140 px) and drawn again along its skeleton with a pen of a given width on a page of a given side,
black on white, the digit's 20 px box 70 % of the page high; cnnlab's preprocessing makes the 28x28 field and
the shipped nets read it. ``--baseline REV`` also measures the preprocessing at git revision REV (its
``src/cnnlab/preprocessing.py``, or ``predict.py`` before that was split off; the "before" column), with the same nets
and pages.

    python -m benchmarks.pen_digits [--n 300] [--baseline REV]

A marker as wide as MNIST's strokes is the control for the thin pens: a change for them must leave it as it is.
A broad pen on a small digit (the drawing page's 20-px pen) gives strokes wider than MNIST's: the column "noted
thick" is the share of fields whose prediction carries the note about it (``Prediction.thick``). The last conditions put the marker's digit in a frame (a form's printed box, a circle drawn around it). Printed, and written to ``benchmarks/results/pen_digits.{json,md}``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.common import write
from benchmarks.photo_digits import accuracy, baseline_preprocess

#: The skeleton is found on the digit enlarged to this many px (its 28 px field).
SKELETON_SIDE = 140
#: name: (page side in px, pen width in px, frame); the digit's box is 70 % of the page high. A frame is drawn
#: around the digit (a form's printed box, a circle), 90 % of the page wide: (shape, line width in px) or None;
#: the digit's box is then :data:`FRAMED_FILL` of the page, so that the digit lies inside even a circle.
CONDITIONS = {
    "1 px pen, 1000 px page": (1000, 1, None),
    "2 px pen, 1000 px page": (1000, 2, None),
    "3 px pen, 600 px page": (600, 3, None),
    "1 px pen, 300 px page": (300, 1, None),
    "2 px pen, 280 px canvas": (280, 2, None),
    "marker (MNIST's width), 600 px page": (600, 42, None),
    "marker twice MNIST's width, 600 px page": (600, 84, None),
    "marker three times MNIST's width, 600 px page": (600, 126, None),
    "20 px pen (the drawing page's), digit 28 px high": (40, 20, None),
    "20 px pen, digit 42 px high": (60, 20, None),
    "20 px pen, digit 70 px high": (100, 20, None),
    "marker in a printed box (3 px), 400 px page": (400, 14, ("box", 3)),
    "marker in a bold box (8 px), 400 px page": (400, 14, ("box", 8)),
    "marker in a circle (4 px), 400 px page": (400, 14, ("circle", 4)),
}
FRAMED_FILL = 0.55
#: The 8 neighbours of a pixel in Zhang-Suen's order P2..P9 (north, then clockwise), as (dy, dx).
RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean image to 1-px-wide lines (Zhang and Suen, CACM 1984)."""
    m = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = [np.roll(m, (-dy, -dx), axis=(0, 1)) for dy, dx in RING]  # p[k][y, x] = m[y + dy, x + dx]
            neighbours = sum(p)
            transitions = sum((p[k] == 0) & (p[(k + 1) % 8] == 1) for k in range(8))
            a, b = (p[0] * p[2] * p[4], p[2] * p[4] * p[6]) if step == 0 else (p[0] * p[2] * p[6], p[0] * p[4] * p[6])
            drop = (m == 1) & (neighbours >= 2) & (neighbours <= 6) & (transitions == 1) & (a == 0) & (b == 0)
            if drop.any():
                m[drop] = 0
                changed = True
        if not changed:
            return m[1:-1, 1:-1].astype(bool)


def pen_page(digit28: np.ndarray, side: int, width: int, frame: tuple | None = None) -> Image.Image:
    """The digit drawn along its skeleton with a pen ``width`` px wide, black on a white ``side`` px page, in a
    ``frame`` (("box" or "circle", line width)) when given."""
    big = Image.fromarray(digit28.astype(np.float32) / 255, mode="F").resize((SKELETON_SIDE, SKELETON_SIDE),
                                                                            Image.Resampling.BICUBIC)
    bones = skeleton(np.asarray(big) >= 0.5)
    fill = 0.7 if frame is None else FRAMED_FILL  # a framed digit is smaller, so that it lies inside the frame
    scale = side * fill / (SKELETON_SIDE * 20 / 28)  # the digit's 20 px box of 28 fills that much of the page
    offset = (side - SKELETON_SIDE * scale) / 2
    page = Image.new("L", (side, side), 255)
    draw = ImageDraw.Draw(page)
    ys, xs = np.nonzero(bones)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):  # each pair of touching skeleton pixels, once
        for y, x in zip(ys, xs):
            y2, x2 = y + dy, x + dx
            if 0 <= y2 < SKELETON_SIDE and 0 <= x2 < SKELETON_SIDE and bones[y2, x2]:
                draw.line([(offset + (x + 0.5) * scale, offset + (y + 0.5) * scale),
                           (offset + (x2 + 0.5) * scale, offset + (y2 + 0.5) * scale)], fill=0, width=width)
    if frame is not None:
        shape, line = frame
        margin = round(side * 0.05)
        (draw.rectangle if shape == "box" else draw.ellipse)([margin, margin, side - margin, side - margin],
                                                             outline=0, width=line)
    return page


def measure(models: list[str], versions: dict, digits: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy (%) per condition, net and version of the preprocessing."""
    import cnnlab
    from cnnlab.preprocessing import thick_strokes

    predictors = {m: cnnlab.predictor(model=m) for m in models}
    rows = {}
    for name, (side, width, frame) in CONDITIONS.items():
        t0 = time.perf_counter()
        pages = [pen_page(d, side, width, frame) for d in digits]
        rows[name], fields = {}, {}
        for m, p in predictors.items():
            for v, fn in versions.items():
                rows[name][f"{m} {v}"], _, fields[v] = accuracy(p, fn, pages, labels)
        rows[name]["noted thick"] = 100 * float(np.mean([thick_strokes(f) > 0 for f in fields["now"]]))
        print(f"  {name:38s} " + "  ".join(f"{k}: {a:5.1f}%" for k, a in rows[name].items())
              + f"  ({time.perf_counter() - t0:.0f}s)", flush=True)
    return rows


def markdown(rows: dict, n: int) -> str:
    columns = list(next(iter(rows.values())))
    lines = [f"## Pen digits: {n} MNIST test digits redrawn along their skeletons, the shipped nets", "",
             "| condition | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(f"{row[c]:.1f}%" for c in columns) + " |" for name, row in rows.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pen_digits", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="digits per condition (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", nargs="+", default=["resnet", "inception"])
    p.add_argument("--baseline", help="git revision whose preprocessing is measured too (the 'before' columns)")
    args = p.parse_args(argv)

    from cnnlab.data import load_dataset
    from cnnlab.preprocessing import preprocess

    data = load_dataset("mnist")
    idx = np.random.default_rng(args.seed).choice(len(data.test_labels), size=args.n, replace=False)
    digits, labels = data.test_images[idx, 0].numpy(), data.test_labels[idx].numpy()
    versions = {"now": preprocess}
    if args.baseline:
        versions = {f"at {args.baseline}": baseline_preprocess(args.baseline), **versions}
    rows = measure(args.models, versions, digits, labels)
    write("pen_digits", {"n": args.n, "seed": args.seed, "baseline": args.baseline, "accuracy": rows},
          markdown(rows, args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
