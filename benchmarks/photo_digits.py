"""Photo-like digits with known labels: how well does ``cnnlab predict`` read a photographed digit?

MNIST *test* digits are rendered as dark ink on paper at a realistic size (a 200-600 px page, the
digit 25-45 % of the page high, thick strokes with soft edges), then photographed: every condition
below changes one thing (the light, the paper, the sensor, the geometry) and ``photo`` changes them
all at once. The 28x28 field of each image is made by cnnlab's preprocessing and read by a trained
net; the accuracy per condition is printed as a markdown table.

The image formation is ``pixel = light(x, y) * reflectance(x, y) + noise``, per RGB channel, then
8-bit, then optionally JPEG: the paper has a reflectance (white, grey, tinted), the ink a lower one,
grid lines of squared paper a slightly lower one; the light is 1 (uniform) or a field (a linear
gradient, a radial falloff, a soft shadow, vignetting, a darker corner).

Everything is drawn from ``--seed``: the same digits (the same MNIST test indices) go into every
condition, so the conditions are paired. Nothing is written unless asked (``--save DIR`` writes
example pages and their 28x28 fields as PNG, ``--json FILE`` the numbers).

    PYTHONPATH=src python benchmarks/photo_digits.py --run /work/photo-run --baseline d1721fb

Each condition's pages are also made without their digit (the same paper, light and sensor): the "blank pages
read" columns are the share of those that the preprocessing takes for a digit (a net then reads one there) instead
of refusing them as blank; lower is better.

``--baseline REV`` also measures the preprocessing at git revision REV (its ``src/cnnlab/preprocessing.py``, or
``predict.py`` before that was split off, loaded as a module of its own), with the same net: before/after columns.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- one page


@dataclass(frozen=True)
class Page:
    """How one page is made; the defaults are the clean render (white paper, even light, centred)."""

    paper: tuple = (0.92, 0.92, 0.92)  # RGB reflectance of the paper
    ink: tuple = (0.10, 0.10, 0.12)  # RGB reflectance of the ink (a dark pen or marker)
    light: str = "even"  # even | linear | radial | shadow | vignette | corner | mixed
    depth: tuple | None = None  # how much light the shading takes away (range), None: each kind's own
    soft: tuple = (0.03, 0.12)  # width of a shadow's edge, fraction of the page
    noise: float = 0.0  # std of the sensor noise (0..1 scale), per channel
    jpeg: int = 0  # JPEG quality, 0 = PNG (lossless)
    rotate: float = 0.0  # largest rotation, degrees (drawn uniformly in +-rotate)
    offcentre: bool = False  # the digit anywhere on the page instead of the centre
    grid: float = 0.0  # squared paper: lines every ~5 % of the page taking this fraction of the light
    light_ink: bool = False  # light ink on dark paper (chalk on a board, a drawing canvas)
    side: tuple = (200, 600)  # page width and height, px (each drawn in this range)
    digit: tuple = (0.25, 0.45)  # digit height, fraction of the page's shorter side
    stroke: float = 0.3  # where the MNIST digit's grey edge is cut: higher, thinner strokes


PHOTO = Page(paper=(0.75, 0.72, 0.65), light="mixed", noise=0.04, jpeg=50, rotate=10, offcentre=True, grid=0.2)
CANVAS = dict(side=(280, 280), digit=(0.7, 0.72))  # the drawing page of cnnlab serve: a 280 px square

#: name: (group, Page or "field"): "clean" inputs must not get worse, "photo" conditions are the
#: user report's, "stress" ones go beyond it (where the limits are).
CONDITIONS: dict[str, tuple[str, Page | str]] = {
    "MNIST 28x28 field as a file": ("clean", "field"),
    "drawing canvas, black on white": ("clean", Page(paper=(1, 1, 1), ink=(0, 0, 0), **CANVAS)),
    "white on black, thin strokes": ("clean", Page(paper=(0, 0, 0), ink=(1, 1, 1), light_ink=True, stroke=0.6, **CANVAS)),
    "bold strokes filling the canvas": ("clean", Page(paper=(0, 0, 0), ink=(1, 1, 1), light_ink=True, stroke=0.08,
                                                      side=(280, 280), digit=(0.8, 0.85))),
    "clean": ("clean", Page()),
    "clean, noise + JPEG": ("clean", Page(noise=0.02, jpeg=75)),
    "off-centre + rotation": ("clean", Page(rotate=15, offcentre=True)),
    "light ink on dark paper": ("clean", Page(paper=(0.08, 0.08, 0.1), ink=(0.9, 0.9, 0.9), light_ink=True)),
    "grey paper": ("photo", Page(paper=(0.55, 0.55, 0.55), ink=(0.06, 0.06, 0.07))),
    "tinted paper, blue ink": ("photo", Page(paper=(0.95, 0.85, 0.5), ink=(0.12, 0.18, 0.55))),
    "linear shading": ("photo", Page(light="linear")),
    "radial shading": ("photo", Page(light="radial")),
    "soft shadow": ("photo", Page(light="shadow")),
    "vignetting": ("photo", Page(light="vignette")),
    "darker corner": ("photo", Page(light="corner")),
    "grey paper + shadow": ("photo", Page(paper=(0.6, 0.6, 0.6), ink=(0.06, 0.06, 0.07), light="shadow")),
    "sensor noise": ("photo", Page(noise=0.05)),
    "JPEG q=30": ("photo", Page(jpeg=30)),
    "grid paper": ("photo", Page(grid=0.2)),
    "photo (all at once)": ("photo", PHOTO),
    "pencil on shaded paper": ("stress", Page(ink=(0.45, 0.45, 0.47), stroke=0.55, light="linear", noise=0.02)),
    "deep hard-edged shadow": ("stress", Page(light="shadow", depth=(0.7, 0.8), soft=(0.002, 0.01))),
    "dark grid lines": ("stress", Page(grid=0.45)),
    "small digit, photo": ("stress", replace(PHOTO, digit=(0.1, 0.15))),
    "chalk on a shaded board": ("stress", Page(paper=(0.12, 0.16, 0.14), ink=(0.85, 0.85, 0.85), light_ink=True,
                                               light="linear", noise=0.02)),
}


def digit_alpha(digit28: np.ndarray, rng: np.random.Generator, height: int, rotate: float, stroke: float) -> np.ndarray:
    """The ink coverage (0..1) of an MNIST digit redrawn ``height`` px high as a thick pen stroke."""
    side = max(28, round(height * 28 / 20))  # MNIST's 20 px box inside its 28 px field
    big = Image.fromarray(digit28.astype(np.float32) / 255.0, mode="F").resize((side, side), Image.Resampling.BICUBIC)
    a = np.asarray(big)
    a = np.clip((a - stroke) / 0.3, 0.0, 1.0)  # the blurry upsampled edges become a pen's edge
    img = Image.fromarray(np.round(a * 255).astype(np.uint8))
    angle = float(rng.uniform(-rotate, rotate)) if rotate else 0.0
    if angle:
        img = img.rotate(angle, Image.Resampling.BICUBIC, expand=True)
    img = img.filter(ImageFilter.GaussianBlur(max(0.6, height / 150)))  # slight optical blur
    return np.asarray(img, dtype=np.float32) / 255.0


def light_field(kind: str, h: int, w: int, rng: np.random.Generator, depth: tuple | None = None,
                soft: tuple = (0.03, 0.12)) -> np.ndarray:
    """``(h, w)`` illumination in 0..1 (1 = fully lit); ``depth``: the range of the light taken away."""

    def take(lo: float, hi: float) -> float:
        return float(rng.uniform(*(depth or (lo, hi))))

    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = xs / w - 0.5, ys / h - 0.5  # centred unit coordinates
    if kind == "mixed":
        kinds = ["linear", "radial", "shadow", "vignette", "corner"]
        field = np.ones((h, w), np.float32)
        for k in rng.choice(kinds, size=2, replace=False):
            field *= light_field(str(k), h, w, rng, depth, soft)
        return field
    if kind == "even":
        return np.ones((h, w), np.float32)
    if kind == "linear":
        t = rng.uniform(0, 2 * math.pi)
        p = u * math.cos(t) + v * math.sin(t)
        p = (p - p.min()) / (p.max() - p.min())
        return 1.0 - take(0.45, 0.65) * p
    if kind == "radial":
        cx, cy = rng.uniform(-0.4, 0.4, size=2)
        r2 = (u - cx) ** 2 + (v - cy) ** 2
        return 1.0 - take(0.45, 0.65) * np.clip(r2 / r2.max(), 0, 1)
    if kind == "shadow":  # a soft-edged half-plane (a hand or a phone between lamp and page)
        t = rng.uniform(0, 2 * math.pi)
        d = u * math.cos(t) + v * math.sin(t) - rng.uniform(-0.25, 0.25)
        inside = 0.5 + 0.5 * np.tanh(d / rng.uniform(*soft) * 2)  # 0 lit .. 1 in the shadow
        return 1.0 - take(0.45, 0.6) * inside
    if kind == "vignette":
        r2 = (u**2 + v**2) / 0.5  # 1 at the corners
        return (1.0 - take(0.5, 0.65) * r2).astype(np.float32)
    if kind == "corner":
        cx, cy = rng.choice([-0.5, 0.5], size=2)
        d2 = (u - cx) ** 2 + (v - cy) ** 2
        return 1.0 - take(0.5, 0.65) * np.exp(-d2 / rng.uniform(0.08, 0.2))
    raise ValueError(kind)


def grid_lines(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """``(h, w)`` coverage of the lines of squared paper, 1-2 px wide, every ~5 % of the page."""
    step = max(8, round(min(h, w) * rng.uniform(0.04, 0.07)))
    width = 1 if min(h, w) < 400 else 2
    ox, oy = rng.integers(0, step, size=2)
    ys, xs = np.mgrid[0:h, 0:w]
    on = (((xs - ox) % step) < width) | (((ys - oy) % step) < width)
    return on.astype(np.float32)


def render(digit28: np.ndarray, page: Page, rng: np.random.Generator) -> Image.Image:
    """One photographed page holding ``digit28`` (an MNIST test image, uint8 white on black)."""
    h, w = (int(s) for s in rng.integers(page.side[0], page.side[1] + 1, size=2))
    height = round(min(h, w) * rng.uniform(*page.digit))
    alpha = digit_alpha(digit28, rng, height, page.rotate, page.stroke)
    ah, aw = alpha.shape
    if page.offcentre:
        y0, x0 = int(rng.integers(0, max(1, h - ah))), int(rng.integers(0, max(1, w - aw)))
    else:
        y0, x0 = (h - ah) // 2, (w - aw) // 2
    cover = np.zeros((h, w), np.float32)
    ys, xs = slice(max(0, y0), min(h, y0 + ah)), slice(max(0, x0), min(w, x0 + aw))
    cover[ys, xs] = alpha[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]

    paper = np.array(page.paper, np.float32)
    if not page.light_ink:
        paper = paper * np.float32(rng.uniform(0.95, 1.0))
    refl = np.broadcast_to(paper, (h, w, 3)).copy()
    if page.grid:
        tint = np.array(rng.choice([(1.2, 0.9, 0.3), (1.0, 1.0, 1.0)]), np.float32)  # blue or grey lines
        line = 1 - page.grid * tint
        g = grid_lines(h, w, rng)[..., None]
        refl = refl * (1 - g) + refl * line * g
    refl = refl * (1 - cover[..., None]) + np.array(page.ink, np.float32) * cover[..., None]
    light = light_field(page.light, h, w, rng, page.depth, page.soft)
    pixels = refl * light[..., None] * np.float32(rng.uniform(0.95, 1.05))
    if page.noise:
        pixels = pixels + rng.normal(0, page.noise, pixels.shape).astype(np.float32)
    img = Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="RGB")
    if page.jpeg:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=page.jpeg)
        img = Image.open(io.BytesIO(buf.getvalue()))
        img.load()
    return img


def pages(digits: np.ndarray, page: Page | str, seed: int, condition_index: int) -> list[Image.Image]:
    """The pages of one condition; page i of every condition holds the same digit. ``"field"``: the
    MNIST 28x28 images themselves, as 8-bit grayscale pictures (white on black)."""
    if page == "field":
        return [Image.fromarray(d, mode="L") for d in digits]
    return [render(d, page, np.random.default_rng([seed, condition_index, i])) for i, d in enumerate(digits)]


# ----------------------------------------------------------------------------- measuring


def baseline_preprocess(rev: str):
    """``preprocess`` of cnnlab at git revision ``rev``: its ``src/cnnlab/preprocessing.py`` (or, before that module
    was split off, ``src/cnnlab/predict.py``), imported as a module of its own."""
    for name in ("preprocessing", "predict"):
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:src/cnnlab/{name}.py"],
                               capture_output=True, text=True)
        if shown.returncode == 0:
            break
    else:
        raise SystemExit(f"--baseline {rev}: no src/cnnlab/preprocessing.py or predict.py there ({shown.stderr.strip()})")
    path = Path(tempfile.mkdtemp()) / f"{name}_{rev[:12]}.py"
    path.write_text(shown.stdout)
    spec = importlib.util.spec_from_file_location(f"{name}_{rev[:12]}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module.preprocess


def accuracy(predictor, preprocess, images: list[Image.Image], labels: np.ndarray) -> tuple[float, float, list]:
    """(accuracy in %, preprocessing ms per image, the fields); an image whose preprocessing fails counts as wrong."""
    fields, ok = [], []
    t0 = time.perf_counter()
    for img in images:
        try:
            fields.append(preprocess(img))
            ok.append(True)
        except Exception:  # noqa: BLE001 - a refused image is a wrong answer here
            fields.append(np.zeros((28, 28), np.float32))
            ok.append(False)
    ms = 1000 * (time.perf_counter() - t0) / max(1, len(images))
    probs = predictor.probabilities(fields)
    right = (probs.argmax(1) == labels) & np.array(ok)
    return 100.0 * float(right.mean()), ms, fields


def answered(preprocess, images: list[Image.Image]) -> float:
    """The share (%) of ``images`` the preprocessing takes for a digit (the rest it refuses: blank, a blob)."""
    taken = 0
    for img in images:
        try:
            preprocess(img)
            taken += 1
        except Exception:  # noqa: BLE001 - refused
            pass
    return 100.0 * taken / max(1, len(images))


def save_examples(directory: Path, name: str, images, fields_by_version: dict, k: int = 4) -> None:
    """The first ``k`` pages of a condition and each version's 28x28 field, enlarged 8x, side by side."""
    directory.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    tiles = []
    for i in range(min(k, len(images))):
        row = [images[i].convert("L").resize((224, 224))]
        for fields in fields_by_version.values():
            row.append(Image.fromarray(np.round(fields[i] * 255).astype(np.uint8)).resize((224, 224), Image.Resampling.NEAREST))
        tiles.append(row)
    sheet = Image.new("L", (len(tiles[0]) * 232, len(tiles) * 232), 128)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            sheet.paste(tile, (c * 232 + 4, r * 232 + 4))
    sheet.save(directory / f"{slug}.png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    net = ap.add_mutually_exclusive_group(required=True)
    net.add_argument("--run", help="a trained MNIST run (directory or .pt)")
    net.add_argument("--model", help="cnnlab's shipped MNIST weights of this model (resnet, inception)")
    ap.add_argument("--n", type=int, default=300, help="digits per condition (default 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", help="git revision whose preprocessing is measured too (the 'before' column)")
    ap.add_argument("--only", action="append", help="measure only this condition (repeatable)")
    ap.add_argument("--save", type=Path, help="write example sheets (page | fields) as PNG here")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)

    from cnnlab.data import load_dataset
    from cnnlab.predict import Predictor
    from cnnlab.preprocessing import preprocess

    predictor = Predictor.from_run(args.run, device="cpu") if args.run else Predictor.pretrained(args.model, "mnist")
    data = load_dataset("mnist")
    idx = np.random.default_rng(args.seed).choice(len(data.test_labels), size=args.n, replace=False)
    digits = data.test_images[idx, 0].numpy()
    labels = data.test_labels[idx].numpy()
    versions = {"after": preprocess}
    if args.baseline:
        versions = {f"before ({args.baseline})": baseline_preprocess(args.baseline), **versions}

    ref = predictor.probabilities([d.astype(np.float32) / 255 for d in digits]).argmax(1)
    print(f"net {args.run or args.model}: {100 * (ref == labels).mean():.1f}% on these {args.n} MNIST test digits as 28x28 fields")
    rows, times = {}, {v: [] for v in versions}
    for ci, (name, (group, page)) in enumerate(CONDITIONS.items()):
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        images = pages(digits, page, args.seed, ci)
        results = {v: accuracy(predictor, fn, images, labels) for v, fn in versions.items()}
        rows[name] = {"group": group, **{v: acc for v, (acc, _, _) in results.items()}}
        if page != "field":  # the same pages without their digit: how many does the preprocessing take for one?
            blanks = pages(np.zeros_like(digits), page, args.seed, ci)
            rows[name]["blank"] = {v: answered(fn, blanks) for v, fn in versions.items()}
        for v, (_, ms, _) in results.items():
            times[v].append(ms)
        print(f"  {name:32s} " + "  ".join(f"{v}: {acc:5.1f}%" for v, (acc, _, _) in results.items())
              + f"   ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
        if args.save:
            save_examples(args.save, name, images, {v: f for v, (_, _, f) in results.items()})

    print("\n| condition | group | " + " | ".join(versions) + " | " + " | ".join(f"blank pages read, {v}" for v in versions)
          + " |")
    print("|---|---|" + "---:|" * (2 * len(versions)))
    for name, row in rows.items():
        blank = [f"{row['blank'][v]:.1f}%" if "blank" in row else "-" for v in versions]
        print(f"| {name} | {row['group']} | " + " | ".join(f"{row[v]:.1f}%" for v in versions) + " | "
              + " | ".join(blank) + " |")
    print("| preprocessing, ms per image (mean) | | " + " | ".join(f"{np.mean(t):.1f}" for t in times.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "seed": args.seed, "run": str(args.run), "accuracy": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
