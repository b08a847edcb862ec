"""Numbers: how well do the shipped nets read a number, several digits written in a row, with ``--number``?

Handwritten numbers are MNIST *test* digits (drawn from ``--seed``) set side by side: 2 to 6 digits, each cropped
to its ink columns, a gap of a given width between them (in MNIST pixels: 0 is touching boxes, where strokes may
touch), each digit moved up or down by up to 2 px and scaled by 0.85-1.15, the row enlarged 8 times (a 28 px digit
becomes 224 px) onto a white page, black ink. Under "scan" the page is as drawn; under "photo" the paper is grey
(0.75), lit unevenly (a linear fall-off to 60% across the page), with sensor noise (sd 0.04) and saved as JPEG
(quality 50); on "ruled paper" three lines as dark as the ink, 4 px wide and falling 1.5 degrees across the page,
cross it, the middle one through the digits; on "squared paper" lines 3 px wide taking 60 % of the light every 40 px.
Typed numbers set 2 to 6 random digits in every TrueType font of the machine (``--fonts``) at 120
px on a white page. ``cnnlab.predictor(model=M).read_number`` reads each.

Signs: the same kind of handwritten numbers (2-5 digits, 8 px gaps) with none, a pen point or a pen comma drawn in
one gap (a dot 3-4 px across on the neighbours' baseline; a comma's tail falls 4-6 px below it); typed ``d.d``,
``-d.d``, ``d,d`` and ``d,ddd`` in every font.

Per condition and net: the numbers read right (every digit and sign, no digit missing or extra), the numbers of
the right length, and the digits right among those of the right length (both counting digits alone). Also, on
single digits (MNIST test digits alone on a 224 px page): how often ``--number`` reads more than one digit, and how
often the one-digit path's note ("N digits side by side") fires. Printed, and written to ``benchmarks/results/number_digits.{json,md}``.

    python -m benchmarks.number_digits [--n 300] [--models resnet inception] [--fonts GLOB]
"""

from __future__ import annotations

import argparse
import glob
import io
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from benchmarks.common import write

#: Enlargement of the MNIST row onto the page: a 28 px digit becomes 224 px.
ENLARGE = 8
#: name: (gap between digits in MNIST px, photo-like page, lined paper: False, "ruled" or "squared")
HANDWRITTEN = {
    "handwritten, gap 8 px, scan": (8, False, False),
    "handwritten, gap 4 px, scan": (4, False, False),
    "handwritten, gap 2 px, scan": (2, False, False),
    "handwritten, touching boxes (gap 0), scan": (0, False, False),
    "handwritten, gap 4 px, photo": (4, True, False),
    "handwritten, gap 4 px, ruled paper (lines as dark as the ink, 1.5 deg askew)": (4, False, "ruled"),
    "handwritten, gap 4 px, squared paper (lines 60% dark, every 40 px)": (4, False, "squared"),
}
DEFAULT_FONTS = "/usr/share/fonts/truetype/*/*.ttf"


def handwritten_row(digits: list[np.ndarray], gap: int, rng: np.random.Generator) -> np.ndarray:
    """MNIST fields (white on black, uint8) side by side, cropped to their ink columns, ``gap`` px apart, each
    scaled by 0.85-1.15 and moved up or down by up to 2 px; float 0..1 ink, 40 px high, with margins."""
    parts = []
    for d in digits:
        cols = np.flatnonzero(d.max(0) > 0)
        crop = d[:, cols[0]:cols[-1] + 1].astype(np.float32) / 255
        s = rng.uniform(0.85, 1.15)
        crop = np.asarray(Image.fromarray(crop, mode="F").resize((max(1, round(crop.shape[1] * s)), round(28 * s)),
                                                                   Image.Resampling.BILINEAR))
        column = np.zeros((40, crop.shape[1]), np.float32)
        top = (40 - crop.shape[0]) // 2 + int(rng.integers(-2, 3))
        column[top:top + crop.shape[0]] = crop
        parts += [column, np.zeros((40, gap), np.float32)]
    margin = np.zeros((40, 10), np.float32)
    return np.clip(np.concatenate([margin] + parts[:-1] + [margin], axis=1), 0, 1)


def sign_row(digits: list[np.ndarray], sign: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """:func:`handwritten_row` with 8 px gaps and a pen ``sign`` drawn in one of them, chosen at random: a point (a
    dot 3-4 px across on the two neighbours' mean baseline) or a comma (a dot with a tail falling 4-6 px below that
    baseline, slanted left); ``sign`` "" draws none. Returns the row and the index of the digit the sign comes before."""
    row = handwritten_row(digits, 8, rng)
    if not sign:
        return row, 0
    ink = row > 0.25
    cols = np.flatnonzero(ink.any(axis=0))
    starts = np.r_[cols[0], cols[1:][np.diff(cols) > 1]]  # each digit's first column (a gap is 8 px of no ink)
    ends = np.r_[cols[:-1][np.diff(cols) > 1], cols[-1]]
    if len(starts) != len(digits):  # a digit whose ink splits into columns apart: no sign, rather than a wrong place
        return row, -1
    at = int(rng.integers(1, len(digits)))
    base = np.mean([np.flatnonzero(ink[:, a:b + 1].any(axis=1))[-1] for a, b in
                    ((starts[at - 1], ends[at - 1]), (starts[at], ends[at]))])
    k = 8  # drawn 8x finer, then shrunk: an anti-aliased pen
    layer = Image.new("L", (row.shape[1] * k, row.shape[0] * k), 0)
    draw = ImageDraw.Draw(layer)
    x, r = k * (ends[at - 1] + 1 + 4 + rng.uniform(-1, 1)), k * rng.uniform(1.5, 2.0)
    y = k * (base + 0.5) - r
    draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    if sign == ",":
        fall = k * rng.uniform(4, 6)
        draw.line([(x + 0.5 * r, y), (x - 0.4 * fall, y + r + fall)], fill=255, width=round(1.4 * r))
    small = np.asarray(layer.resize(row.shape[::-1], Image.Resampling.BOX), np.float32) / 255
    return np.maximum(row, small), at


def page(ink: np.ndarray, photo: bool, rng: np.random.Generator, lined: bool | str = False) -> Image.Image:
    """The ink row enlarged onto a page: a clean scan, or a photo (grey paper, uneven light, noise, JPEG); on
    ruled paper, three lines 4 px wide as dark as the ink, falling 1.5 degrees, the middle one through the digits;
    on squared paper, lines 3 px wide taking 60 % of the light every 40 px, at a random offset."""
    h, w = ink.shape
    big = np.asarray(Image.fromarray(ink, mode="F").resize((w * ENLARGE, h * ENLARGE), Image.Resampling.BICUBIC))
    big = np.clip(big, 0, 1)
    if lined:
        lines = Image.new("L", (big.shape[1], big.shape[0]), 0)
        draw = ImageDraw.Draw(lines)
        if lined == "ruled":
            fall = round(big.shape[1] * np.tan(np.radians(1.5)))
            for y in (0.12, 0.55, 0.92):
                top = round(y * big.shape[0]) - fall // 2
                draw.line([(0, top), (big.shape[1], top + fall)], fill=255, width=4)
        else:
            offset = int(rng.integers(0, 40))
            for x in range(offset, big.shape[1], 40):
                draw.line([(x, 0), (x, big.shape[0])], fill=153, width=3)
            for y in range(offset, big.shape[0], 40):
                draw.line([(0, y), (big.shape[1], y)], fill=153, width=3)
        big = np.maximum(big, np.asarray(lines, np.float32) / 255)
    if not photo:
        return Image.fromarray(np.round(255 * (1 - big)).astype(np.uint8))
    light = np.linspace(1.0, 0.6, big.shape[1])[None, :]
    gray = 0.75 * light * (1 - 0.9 * big) + rng.normal(0, 0.04, big.shape)
    buf = io.BytesIO()
    Image.fromarray(np.round(255 * np.clip(gray, 0, 1)).astype(np.uint8)).save(buf, format="JPEG", quality=50)
    return Image.open(io.BytesIO(buf.getvalue()))


def typed_page(text: str, font: str) -> Image.Image:
    face = ImageFont.truetype(font, 120)
    im = Image.new("L", (140 + 90 * len(text), 220), 255)
    draw = ImageDraw.Draw(im)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    draw.text(((im.width - (right - left)) / 2 - left, (im.height - (bottom - top)) / 2 - top), text, fill=0, font=face)
    return im


def score(predictor, images: list[Image.Image], truths: list[str]) -> dict:
    """Numbers right (digits and signs), lengths right and digits right among the right lengths (digits alone, %),
    and ms per image."""
    right = length = digits = digits_right = 0
    t0 = time.perf_counter()
    for img, truth in zip(images, truths):
        number = predictor.read_number(img)
        right += number.label == truth  # every digit and sign
        read, want = "".join(d.label for d in number.digits), "".join(ch for ch in truth if ch.isdigit())
        if len(read) == len(want):  # the digits alone: a sign read (or missed) does not make a length
            length += 1
            digits += len(want)
            digits_right += sum(a == b for a, b in zip(read, want))
    n = len(truths)
    return {"number": 100 * right / n, "length": 100 * length / n,
            "digits": 100 * digits_right / max(digits, 1), "ms": 1000 * (time.perf_counter() - t0) / n}


def handwritten_sets(data, n: int, seed: int) -> dict:
    """Per handwritten condition: (pages, truths), the same digits in every condition."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(len(data.test_labels), size=int(rng.integers(2, 7)), replace=False) for _ in range(n)]
    images, labels = data.test_images[:, 0].numpy(), data.test_labels.numpy()
    sets = {}
    for ci, (name, (gap, photo, lined)) in enumerate(HANDWRITTEN.items()):
        pages = []
        for i, idx in enumerate(picks):
            r = np.random.default_rng([seed, ci, i])
            pages.append(page(handwritten_row([images[j] for j in idx], gap, r), photo, r, lined))
        sets[name] = (pages, ["".join(str(int(labels[j])) for j in idx) for idx in picks])
    return sets


def sign_sets(data, n: int, seed: int) -> dict:
    """Handwritten numbers (2-5 digits, 8 px gaps, scanned) with no sign, a pen point or a pen comma between two of
    their digits: (pages, truths) per set, the same digits in each."""
    rng = np.random.default_rng([seed, 5])
    picks = [rng.choice(len(data.test_labels), size=int(rng.integers(2, 6)), replace=False) for _ in range(n)]
    images, labels = data.test_images[:, 0].numpy(), data.test_labels.numpy()
    sets = {}
    for name, sign in (("handwritten, no sign (gap 8 px)", ""), ("handwritten, a pen point in one gap", "."),
                       ("handwritten, a pen comma in one gap", ",")):
        pages, truths = [], []
        for i, idx in enumerate(picks):
            r = np.random.default_rng([seed, 5, ord(sign or " "), i])
            ink, at = sign_row([images[j] for j in idx], sign, r)
            if at < 0:
                continue
            digits = [str(int(labels[j])) for j in idx]
            pages.append(page(ink, False, r))
            truths.append("".join(digits[:at]) + sign + "".join(digits[at:]) if sign else "".join(digits))
        sets[name] = (pages, truths)
    return sets


def typed_sign_sets(fonts: list[str], seed: int) -> dict:
    """Typed numbers with a point, a minus, a decimal comma and thousands' commas, in every font."""
    rng = np.random.default_rng([seed, 8])
    texts = ["{}.{}", "-{}.{}", "{},{}", "{},{}{}{}"]
    def number(form):
        return form.format(*(str(int(d)) for d in rng.integers(0, 10, form.count("{}"))))
    typed = [(number(form), f) for f in fonts for form in texts]
    return {f"typed with signs (d.d, -d.d, d,d, d,ddd), {len(fonts)} fonts": ([typed_page(t, f) for t, f in typed],
                                                                            [t for t, _ in typed])}


def single_digits(predictor, data, n: int, seed: int) -> dict:
    """On single MNIST test digits alone on a page: how often --number reads more than one digit, and how often
    the one-digit path sees several side by side (its note)."""
    idx = np.random.default_rng([seed, 99]).choice(len(data.test_labels), size=n, replace=False)
    split = noted = 0
    for j in idx:
        img = Image.fromarray(255 - data.test_images[j, 0].numpy()).resize((224, 224), Image.Resampling.BICUBIC)
        split += len(predictor.read_number(img).digits) != 1
        noted += predictor(img).marks > 1
    return {"read as several digits": 100 * split / n, "note fired": 100 * noted / n}


def markdown(rows: dict, singles: dict, n: int, fonts: int) -> str:
    models = list(singles)
    lines = [f"## Numbers read with `--number`: {n} handwritten numbers of 2-6 MNIST test digits per condition, "
             f"typed numbers in {fonts} fonts", "",
             "| condition | " + " | ".join(f"{m}: numbers right | lengths right | digits right" for m in models)
             + " | ms an image |",
             "|---|" + "---:|---:|---:|" * len(models) + "---:|"]
    for name, row in rows.items():
        cells = " | ".join(f"{row[m]['number']:.1f}% | {row[m]['length']:.1f}% | {row[m]['digits']:.1f}%" for m in models)
        lines.append(f"| {name} | {cells} | {row[models[0]]['ms']:.0f} |")
    lines += ["", "Single MNIST test digits alone on a 224 px page:", "",
              "| net | `--number` reads more than one digit | the one-digit path's note fires |", "|---|---:|---:|"]
    lines += [f"| {m} | {s['read as several digits']:.1f}% | {s['note fired']:.1f}% |" for m, s in singles.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.number_digits", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="numbers per condition, single digits (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", nargs="+", default=["resnet", "inception"])
    p.add_argument("--fonts", default=DEFAULT_FONTS, help="TrueType fonts for the typed numbers (a glob)")
    args = p.parse_args(argv)

    import cnnlab
    from cnnlab.data import load_dataset

    data = load_dataset("mnist")
    sets = handwritten_sets(data, args.n, args.seed)
    fonts = sorted(glob.glob(args.fonts))
    rng = np.random.default_rng([args.seed, 7])
    typed = [("".join(str(d) for d in rng.integers(0, 10, int(rng.integers(2, 7)))), f) for f in fonts for _ in range(5)]
    if typed:
        sets[f"typed, {len(fonts)} fonts x 5 numbers"] = ([typed_page(t, f) for t, f in typed], [t for t, _ in typed])
    sets.update(sign_sets(data, args.n, args.seed))
    if fonts:
        sets.update(typed_sign_sets(fonts, args.seed))
    predictors = {m: cnnlab.predictor(model=m) for m in args.models}
    rows = {}
    for name, (pages, truths) in sets.items():
        rows[name] = {m: score(pr, pages, truths) for m, pr in predictors.items()}
        print(f"  {name:45s} " + "  ".join(f"{m}: {r['number']:5.1f}% ({r['length']:5.1f}% long, {r['digits']:5.1f}%"
                                           f" digits)" for m, r in rows[name].items()), flush=True)
    singles = {m: single_digits(pr, data, args.n, args.seed) for m, pr in predictors.items()}
    print(f"  single digits: {singles}")
    write("number_digits", {"n": args.n, "seed": args.seed, "fonts": len(fonts), "rows": rows, "single": singles},
          markdown(rows, singles, args.n, len(fonts)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
