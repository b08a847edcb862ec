"""Typed digits: how well do the shipped nets read digits set in the fonts of this machine?

Every TrueType font found (``--fonts``, a glob) sets each digit 0-9 on a page, under each condition below
(a page of 224 px unless said; the digit centred unless said), and ``cnnlab.predictor`` (the shipped weights,
cnnlab's own preprocessing) reads it. Printed, and written to ``benchmarks/results/typed_digits.{json,md}``:
the accuracy per net and condition, and the digits that were read wrong.

    python -m benchmarks.typed_digits [--fonts '/usr/share/fonts/truetype/*/*.ttf'] [--models resnet inception]

Handwriting it is not: MNIST's digits are handwritten, these are typeset (a serif "1" with its foot, an open
"4", a "7" with a bar in some faces), so the figure says whether a user who types a digit gets it read.
"""

from __future__ import annotations

import argparse
import glob
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

import cnnlab
from benchmarks.common import write

DEFAULT_FONTS = "/usr/share/fonts/truetype/*/*.ttf"
#: ``--fonts builtin``: Pillow's own font (no system fonts needed).
BUILTIN = "builtin"
#: name: (font size in px, page side in px, ink, paper, rotation in degrees, offset of the digit from the centre)
CONDITIONS = {
    "black on white, large": (160, 224, 0, 255, 0, (0, 0)),
    "small on the page (24 px of 224)": (24, 224, 0, 255, 0, (0, 0)),
    "small on a 600 px page (60 px)": (60, 600, 0, 255, 0, (0, 0)),
    "a 28x28 page (20 px)": (20, 28, 0, 255, 0, (0, 0)),
    "white on black": (160, 224, 255, 0, 0, (0, 0)),
    "low contrast (grey 120 on 160)": (160, 224, 120, 160, 0, (0, 0)),
    "off-centre (+60, +40 px)": (100, 224, 0, 255, 0, (60, 40)),
    "rotated 15 degrees": (160, 224, 0, 255, 15, (0, 0)),
}


def page(font: str, digit: int, size: int, side: int, ink: int, paper: int, rotate: float,
         offset: tuple[int, int]) -> Image.Image:
    """One digit set in ``font``, its ink box centred on a ``side`` x ``side`` page (then moved by ``offset``)."""
    im = Image.new("L", (side, side), paper)
    draw = ImageDraw.Draw(im)
    face = ImageFont.load_default(size) if font == BUILTIN else ImageFont.truetype(font, size)
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=face)
    draw.text(((side - (right - left)) / 2 - left + offset[0], (side - (bottom - top)) / 2 - top + offset[1]),
              str(digit), fill=ink, font=face)
    return im.rotate(rotate, resample=Image.Resampling.BICUBIC, fillcolor=paper) if rotate else im


def measure(model: str, fonts: list[str]) -> dict:
    """Accuracy per condition for the shipped ``model``, and each miss as (font, condition, digit, read as)."""
    predictor = cnnlab.predictor(model=model)
    rows, misses = {}, []
    for name, spec in CONDITIONS.items():
        right = 0
        for font in fonts:
            for digit in range(10):
                label = predictor(page(font, digit, *spec)).label
                right += label == str(digit)
                if label != str(digit):
                    misses.append({"font": Path(font).name, "condition": name, "digit": digit, "read_as": label})
        rows[name] = 100.0 * right / (10 * len(fonts))
    return {"accuracy": rows, "misses": misses}


def markdown(results: dict, fonts: list[str]) -> str:
    models = list(results)
    lines = [f"## Typed digits: {len(fonts)} fonts x 10 digits per condition, the shipped nets", "",
             "| condition | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    for name in CONDITIONS:
        lines.append(f"| {name} | " + " | ".join(f"{results[m]['accuracy'][name]:.1f}%" for m in models) + " |")
    for m in models:
        common = Counter((x["digit"], x["read_as"]) for x in results[m]["misses"]).most_common(5)
        lines.append(f"\n{m}: {len(results[m]['misses'])} misses"
                     + (" (digit read as: " + ", ".join(f"{d} as {r} x{n}" for (d, r), n in common) + ")"
                        if common else ""))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.typed_digits", description=__doc__.splitlines()[0])
    p.add_argument("--fonts", default=DEFAULT_FONTS,
                   help=f"glob of .ttf files, or {BUILTIN!r} for Pillow's own font (default: %(default)s)")
    p.add_argument("--models", nargs="+", default=["resnet", "inception"])
    args = p.parse_args(argv)
    fonts = [BUILTIN] if args.fonts == BUILTIN else sorted(glob.glob(args.fonts))
    if not fonts:
        p.error(f"no font matches {args.fonts!r}; give --fonts GLOB, or --fonts {BUILTIN} for Pillow's own font")
    results = {m: measure(m, fonts) for m in args.models}
    write("typed_digits", {"fonts": [Path(f).name for f in fonts], "results": results}, markdown(results, fonts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
