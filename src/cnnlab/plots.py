"""Plots of a run. Every function here only draws data it is given and saves a PNG atomically.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot: no GUI backend, no global state),
like :mod:`cnnlab.analysis.plots`, and both save through :func:`save_figure`. matplotlib is imported
inside :func:`_figure` only: it costs ~0.3 s to import, and importing :mod:`cnnlab.report` or
:mod:`cnnlab.evaluation` (which every command that evaluates does) should not pay for it. The
mistakes mosaic needs no matplotlib at all: it is composed with Pillow.

Every figure can carry a ``context`` (``{"model": ..., "dataset": ..., "run": ...}``, any of them,
plus any other key) shown as one line under its title, so that a figure found on its own can be
placed.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnlab.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110
#: At most this many epochs, plot_comparison draws error bars instead of a band (a band over one or
#: two points is a hairline or nothing).
FEW_EPOCHS = 5
#: The keys of a context shown first, in this order; any other key follows as "key value".
CONTEXT_ORDER = ("model", "dataset", "run")


def save_figure(fig: Figure, path: str | Path, **savefig_kwargs) -> Path:
    """Render ``fig`` once as PNG and write it atomically (never a half-written image)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, **savefig_kwargs)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _figure(**kwargs) -> Figure:
    # lazy: matplotlib takes ~0.3 s to import; only the commands that draw should pay for it
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def context_text(context: dict | None) -> str:
    """``{"model": "inception", "dataset": "mnist", "run": "r1"}`` -> ``"model inception · dataset mnist · run r1"``.

    Empty values are left out; an empty or missing context gives ``""``."""
    if not context:
        return ""
    keys = [k for k in CONTEXT_ORDER if k in context] + [k for k in context if k not in CONTEXT_ORDER]
    return " · ".join(f"{k} {context[k]}" for k in keys if context[k] not in (None, ""))


def _title(fig: Figure, title: str, context: dict | None) -> None:
    """The figure's title, and the context on a second, smaller line."""
    line = context_text(context)
    fig.suptitle(title + (f"\n{line}" if line else ""), fontsize=10)


def plot_curves(history: list[dict], path, *, context: dict | None = None) -> Path:
    """Train/eval loss and eval accuracy per epoch. Every line has markers: one epoch is one point."""
    epochs = [r["epoch"] for r in history]
    eval_key = "val" if any(r.get("val_acc") is not None for r in history) else "test"
    fig = _figure(figsize=(10, 4.4))
    ax1, ax2 = fig.subplots(1, 2)
    # the train loss is what was minimised (with label smoothing and on augmented images when the recipe has
    # them: it can stay far above the plain cross-entropy of the evaluation)
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss (the objective, running)")
    ax1.plot(epochs, [r[f"{eval_key}_loss"] for r in history], "s-", label=f"{eval_key} loss (cross-entropy)")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.set_yscale("log")
    ax1.legend(loc="best")
    ax1.grid(alpha=0.3)
    ax2.plot(epochs, [r[f"{eval_key}_acc"] for r in history], "o-", color="tab:green", label=f"{eval_key} accuracy")
    ax2.plot(epochs, [r["train_acc"] for r in history], "^--", color="tab:gray", markersize=5,
             label="train accuracy (running)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    best = max(r[f"{eval_key}_acc"] for r in history)
    ax2.axhline(best, color="tab:green", alpha=0.3, lw=1)
    ax2.set_title(f"best {eval_key} accuracy {best:.2f}%", fontsize=10)
    ax2.legend(loc="best")
    ax2.grid(alpha=0.3)
    for ax in (ax1, ax2):
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    _title(fig, "training curves", context)
    return save_figure(fig, path)


def plot_confusion(confusion: list[list[int]], classes: list[str], path, *, context: dict | None = None) -> Path:
    """Counts as text; colours are row-normalised (the share of each true class)."""
    n = len(classes)
    rows = [sum(r) or 1 for r in confusion]
    norm = [[c / rows[i] for c in r] for i, r in enumerate(confusion)]
    size = max(5.0, 0.55 * n + 2)
    fig = _figure(figsize=(size + 0.6, size))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if confusion[i][j]:
                ax.text(j, i, str(confusion[i][j]), ha="center", va="center", fontsize=7 if n > 10 else 8,
                        color="white" if norm[i][j] > 0.5 else "black")
    long_names = max(map(len, classes)) > 2
    ax.set_xticks(range(n), classes, rotation=45 if long_names else 0, ha="right" if long_names else "center",
                  rotation_mode="anchor")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _title(fig, "confusion matrix (colour: share of true class)", context)
    return save_figure(fig, path)


def plot_comparison(series: dict[str, dict], path, metric: str = "test accuracy (%)", title: str = "", *,
                    context: dict | None = None) -> Path:
    """``series[model] = {"epochs": [...], "mean": [...], "std": [...], "n": seeds}``: the mean over seeds
    with ±1 std as a band, or as error bars when there are at most :data:`FEW_EPOCHS` epochs (then the
    models are also nudged apart along x, so that their bars do not hide each other). With more epochs a
    second panel shows the second half of training (of the shortest one) on its own scale: where the models
    differ at the end, which the first panel's scale, set by the first epochs, flattens."""
    few = max((len(s["epochs"]) for s in series.values()), default=0) <= FEW_EPOCHS
    fig = _figure(figsize=(7, 4.8) if few else (12, 4.8))
    axes = fig.subplots(1, 1 if few else 2, squeeze=False)[0]
    _draw_series(axes[0], series, few)
    epochs = sorted({e for s in series.values() for e in s["epochs"]})
    if few and epochs:  # one tick per epoch, the nudged bars inside the frame
        axes[0].set_xticks(epochs)
        axes[0].set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
    if not few:  # from the middle of the shortest training on, so that every model's end is in the panel
        first = min(math.ceil(max(s["epochs"]) / 2) for s in series.values() if s["epochs"])
        last = max(e for s in series.values() for e in s["epochs"])
        _draw_series(axes[1], series, few, first_epoch=first)
        axes[1].set_title(f"epochs {first:g}-{last:g}, zoomed", fontsize=10)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend()
    spread = "error bars" if few else "band"
    _title(fig, f"{title + ': ' if title else ''}mean over seeds, {spread} = ±1 std", context)
    return save_figure(fig, path)


def _draw_series(ax, series: dict[str, dict], few: bool, first_epoch: float = 0.0) -> None:
    """Each model's mean (and ±1 std) over the epochs from ``first_epoch`` on, in the same colours on
    every panel."""
    for i, (name, s) in enumerate(series.items()):
        keep = [j for j, e in enumerate(s["epochs"]) if e >= first_epoch]
        epochs, mean, std = ([s[k][j] for j in keep] for k in ("epochs", "mean", "std"))
        label, color = f"{name} (n={s['n']})", f"C{i}"
        if few:
            dx = 0.06 * (i - (len(series) - 1) / 2)
            ax.errorbar([e + dx for e in epochs], mean, yerr=std, fmt="o-", capsize=4, label=label, color=color)
        else:
            ax.plot(epochs, mean, "o-", markersize=4, label=label, color=color)
            ax.fill_between(epochs, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                            color=color, alpha=0.2)


# ----------------------------------------------------------------------------- mistakes mosaic (Pillow)

TILE = 112  # px: a 28x28 digit enlarged 4x, nearest-neighbour
GAP = 14  # px between tiles
FONT_SIZE, TITLE_SIZE = 12, 14
INK, MUTED, WRONG, FRAME = (20, 20, 20), (90, 90, 90), (190, 30, 30), (200, 200, 200)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's scalable built-in font (needs FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()  # the small bitmap font


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text``, cut with an ellipsis so that it is at most ``width`` px wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int, sep: str = " ") -> list[str]:
    """The ``sep``-separated parts of ``text`` in as few lines as fit ``width`` px (a part longer than a
    line is cut with an ellipsis)."""
    lines: list[str] = []
    for part in text.split(sep) if text else []:
        if lines and draw.textlength(lines[-1] + sep + part, font=font) <= width:
            lines[-1] += sep + part
        else:
            lines.append(part)
    return [_fit(draw, line, font, width) for line in lines]


def _tile(img) -> np.ndarray:
    """A (H, W) image as uint8 ink-dark-on-white, enlarged to about :data:`TILE` px (nearest-neighbour)."""
    a = np.asarray(img.numpy() if hasattr(img, "numpy") else img)
    if a.dtype != np.uint8:  # floats: scaled by their own range, as imshow does
        a = a.astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        a = np.round(255 * (a - lo) / ((hi - lo) or 1.0)).astype(np.uint8)
    k = max(1, TILE // max(a.shape))
    return np.kron(255 - a, np.ones((k, k), dtype=np.uint8))  # (H*k, W*k), white paper, dark ink


def mistakes_mosaic(images, mistakes: list[dict], classes: list[str], cols: int = 6, title: str = "",
                    context: dict | None = None) -> Image.Image:
    """One RGB picture: the misclassified images in a grid, each labelled true / predicted / confidence,
    under a title and the context line. Every pixel is drawn once; no matplotlib."""
    tiles = [_tile(img) for img, _ in zip(images, mistakes)]
    side = max((max(t.shape) for t in tiles), default=TILE)
    cols = max(1, min(cols, len(tiles) or 1))
    rows = -(-len(tiles) // cols) if tiles else 1
    font, big = _font(FONT_SIZE), _font(TITLE_SIZE)
    line_h = FONT_SIZE + 4
    cell_w, cell_h = side + GAP, side + 2 * line_h + GAP
    width = max(cols * cell_w + GAP, 420)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    head = [(t, big, INK) for t in _wrap(probe, title, big, width - 2 * GAP)]
    head += [(t, font, MUTED) for t in _wrap(probe, context_text(context), font, width - 2 * GAP, sep=" · ")]
    top = GAP + sum(TITLE_SIZE + 6 if f is big else line_h for _, f, _ in head) + GAP // 2
    canvas = Image.new("RGB", (width, top + rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    y = GAP
    for text, f, colour in head:
        draw.text((width // 2, y), text, font=f, fill=colour, anchor="ma")
        y += TITLE_SIZE + 6 if f is big else line_h
    x0 = (width - cols * cell_w + GAP) // 2
    for i, (tile, m) in enumerate(zip(tiles, mistakes)):
        x, y = x0 + (i % cols) * cell_w, top + (i // cols) * cell_h
        cx = x + side // 2
        draw.text((cx, y), _fit(draw, f"true {classes[m['true']]}", font, cell_w), font=font, fill=INK, anchor="ma")
        pred = f"pred {classes[m['pred']]} ({100 * m['confidence']:.0f}%)"
        draw.text((cx, y + line_h), _fit(draw, pred, font, cell_w), font=font, fill=WRONG, anchor="ma")
        ty = y + 2 * line_h
        canvas.paste(Image.fromarray(tile, mode="L"), (x + (side - tile.shape[1]) // 2, ty + (side - tile.shape[0]) // 2))
        draw.rectangle((x - 1, ty - 1, x + side, ty + side), outline=FRAME)
    if not tiles:
        draw.text((width // 2, top + cell_h // 2), "no mistakes", font=big, fill=MUTED, anchor="mm")
    return canvas


def plot_mistakes(images, mistakes: list[dict], classes: list[str], path, cols: int = 6, *,
                  context: dict | None = None) -> Path:
    """A grid of misclassified images with true and predicted labels and confidence, as one PNG.

    ``images``: (H, W) arrays or tensors (uint8 as stored: 0 is the background), one per mistake."""
    title = f"most confident mistakes ({len(mistakes)} shown)" if mistakes else "most confident mistakes"
    buf = io.BytesIO()
    mistakes_mosaic(images, mistakes, classes, cols, title, context).save(buf, format="PNG", optimize=False)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
