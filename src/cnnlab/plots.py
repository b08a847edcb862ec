"""Plots of a run. Every function here only draws data it is given and saves a PNG atomically.

The figures every run writes (curves, confusion matrix, mistakes mosaic) are drawn with Pillow
(:mod:`cnnlab.drawing`): a training or an evaluation never imports matplotlib, which costs 1-2 s to import
and about a second a figure to lay out and draw on a slow CPU. ``cnnlab compare``'s figure is built with
``matplotlib.figure.Figure`` (no pyplot: no GUI backend, no global state), like :mod:`cnnlab.analysis.plots`,
and both save through :func:`save_figure`; matplotlib is imported inside :func:`_figure` only.

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
from PIL import Image, ImageDraw

from cnnlab.drawing import (COLOURS, FONT_SIZE, GAP, INK, LINE_H, MUTED, TITLE_SIZE, Panel, Series, chart,
                            class_labels, context_text, draw_header, header, header_height, rotated_text, save_png,
                            visible)
from cnnlab.drawing import one_line as _one_line
from cnnlab.drawing import MARKERS_MOST, shorten
from cnnlab.drawing import font as _font
from cnnlab.errors import printable
from cnnlab.fileio import FIGURE_MARK, atomic_write_bytes
from cnnlab.text import display_width

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110
#: At most this many epochs, plot_comparison draws error bars instead of a band (a band over one or
#: two points is a hairline or nothing).
FEW_EPOCHS = 5


def save_figure(fig: Figure, path: str | Path, **savefig_kwargs) -> Path:
    """Render ``fig`` once as PNG and write it atomically (never a half-written image), marked as cnnlab's figure
    (:data:`cnnlab.fileio.FIGURE_MARK`, in place of matplotlib's own ``Software`` text)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=dict([FIGURE_MARK]), **savefig_kwargs)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _figure(**kwargs) -> Figure:
    # lazy: matplotlib takes 1-2 s to import on a slow CPU; only the commands that draw with it should pay for it
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def _title(fig: Figure, title: str, context: dict | None) -> None:
    """The figure's title, and the context on a second, smaller line; each escaped as cnnlab's messages are (a
    folder's name with a byte that is no UTF-8, ``\\udcff``, was matplotlib's FT2Font traceback; a newline
    broke the line), a character the font lacks as its code point (:func:`mpl_text`)."""
    line = mpl_text(printable(context_text(context)))
    fig.suptitle(mpl_text(printable(title)) + (f"\n{line}" if line else ""), fontsize=10)


def mpl_font_file() -> str | None:
    """The file matplotlib draws text in: its configured sans-serif font, DejaVu Sans unless a matplotlibrc says
    otherwise (None when it cannot say)."""
    from matplotlib import font_manager

    try:
        return font_manager.findfont(font_manager.FontProperties(), fallback_to_default=True)
    except Exception:  # a broken font cache or rc: drawable is then ASCII
        return None


def mpl_text(text: str, most: int | None = None) -> str:
    """``text`` as a matplotlib figure shows it: a character its font lacks (a CJK one, an emoji) as its code
    point, ``U+4E2D`` (matplotlib warned "Glyph 20013 missing from font(s) DejaVu Sans" on stderr and drew a box,
    the same for every such name), and, given ``most``, cut in its middle to at most that many columns."""
    return shorten(text, lambda t: most is None or display_width(t) <= most, middle=True, font_path=mpl_font_file())


def plot_curves(history: list[dict], path, *, context: dict | None = None, target: dict | None = None) -> Path:
    """Train/eval loss (log scale) and eval accuracy per epoch, drawn with Pillow (:func:`cnnlab.drawing.chart`).
    A line has a marker on each point (an epoch) up to :data:`cnnlab.drawing.MARKERS_MOST` epochs, none and a thinner
    line above (1,000 epochs' markers were a band that hid the lines); a missing or non-finite value is a gap in its
    line. ``target``
    (summary.json's: a run stopped by --target-accuracy) reached inside an epoch is one more point of the eval
    accuracy, at its fractional epoch: that check evaluated the final weights on the same split, and is the best
    when it beats the epochs (best.pt holds it then; the title counted only the epochs and named the weaker one)."""
    epochs = [r["epoch"] for r in history]
    split = target.get("split") if isinstance(target, dict) else None  # a run with no epoch: the target's split
    eval_key = "val" if any(r.get("val_acc") is not None for r in history) or split == "val" else "test"
    column = lambda key: [r.get(key) for r in history]  # noqa: E731
    acc_x, acc_y = list(epochs), column(f"{eval_key}_acc")
    if (point := target_point(target, epochs)) is not None:
        acc_x.append(point[0])
        acc_y.append(point[1])
    ticks = epochs if len(epochs) <= 20 else None
    # the train loss is what was minimised (with label smoothing and on augmented images when the recipe has
    # them: it can stay far above the plain cross-entropy of the evaluation)
    losses = Panel([Series(epochs, column("train_loss"), "train loss (the objective, running)", COLOURS["blue"]),
                    Series(epochs, column(f"{eval_key}_loss"), f"{eval_key} loss (cross-entropy)", COLOURS["orange"],
                           marker="s")], xlabel="epoch", ylabel="loss", log_y=True, xticks=ticks,
                    title="" if epochs else "no epoch ended: the run met its target inside the first")
    best = max((a for a in acc_y if a is not None and math.isfinite(a)), default=None)
    title = f"best {eval_key} accuracy {best:.2f}%" if best is not None else f"no {eval_key} accuracy"
    if point is not None and best == point[1]:
        title += f" (epoch {point[0]:.2f}, target reached)"
    accuracy = Panel([Series(acc_x, acc_y, f"{eval_key} accuracy", COLOURS["green"]),
                      Series(epochs, column("train_acc"), "train accuracy (running)", COLOURS["gray"], marker="^",
                             dashed=True, marker_size=3.5)], xlabel="epoch", ylabel="accuracy (%)", title=title,
                     xticks=acc_x if len(acc_x) <= 20 else None, hline=None if best is None else (best, BEST_LINE))
    return save_png(chart([losses, accuracy], "training curves", context), path)


def target_point(target: dict | None, epochs: list) -> tuple[float, float] | None:
    """(fractional epoch, accuracy) of a --target-accuracy check inside an epoch, past the epochs drawn; None when
    there is none (reached at an epoch's end, which is that epoch's point, or no such record)."""
    if not isinstance(target, dict):
        return None
    epoch, accuracy = target.get("epoch"), target.get("accuracy")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (epoch, accuracy)):
        return None
    if epoch % 1 == 0 or any(isinstance(e, (int, float)) and e >= epoch for e in epochs):
        return None
    return float(epoch), float(accuracy)


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
    handles, labels = axes[0].get_legend_handles_labels()  # below the panels: inside, "best" still hid the top
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4) or 1)  # right (the best) point
    spread = "error bars" if few else "band"
    _title(fig, f"{title + ': ' if title else ''}mean over seeds, {spread} = ±1 std", context)
    return save_figure(fig, path)


def _draw_series(ax, series: dict[str, dict], few: bool, first_epoch: float = 0.0) -> None:
    """Each model's mean (and ±1 std) over the epochs from ``first_epoch`` on, in the same colours on
    every panel."""
    for i, (name, s) in enumerate(series.items()):
        n = min(len(s["epochs"]), len(s["mean"]), len(s["std"]))  # lists of unequal length: the points they share
        keep = [j for j, e in enumerate(s["epochs"][:n]) if e >= first_epoch]
        epochs, mean, std = ([s[k][j] for j in keep] for k in ("epochs", "mean", "std"))
        label, color = f"{name} (n={s['n']})", f"C{i}"
        if few:
            dx = 0.06 * (i - (len(series) - 1) / 2)
            ax.errorbar([e + dx for e in epochs], mean, yerr=std, fmt="o-", capsize=4, label=label, color=color)
        else:
            style = "o-" if len(epochs) <= MARKERS_MOST else "-"  # 1,000 epochs' markers: a band hiding the lines
            ax.plot(epochs, mean, style, markersize=4, label=label, color=color)
            ax.fill_between(epochs, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                            color=color, alpha=0.2)


# ----------------------------------------------------------------------------- Pillow figures: mistakes, confusion

TILE = 112  # px: a 28x28 digit enlarged 4x, nearest-neighbour
MORE_ROOM = 64  # px: the most a cell of mistakes.png widens past its tile for its labels
WRONG, FRAME = (190, 30, 30), (200, 200, 200)
BEST_LINE = (170, 216, 170)  # the best accuracy's level: tab:green, faint


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
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # cells wider than the tiles, by up to MORE_ROOM px, where a label needs it (long names, names in code points)
    label = max((probe.textlength(_one_line(f"pred {visible(classes[c])} (100%)"), font=font)
                 for m in mistakes[:len(tiles)] for c in (m["true"], m["pred"])), default=0)
    cell_w, cell_h = max(side, min(int(label) + 4, side + MORE_ROOM)) + GAP, side + 2 * LINE_H + GAP
    names = mistake_labels(probe, classes, font, cell_w - GAP) if tiles else []
    width = max(cols * cell_w + GAP, 420)
    head = header(title, context, width)
    top = header_height(head)
    canvas = Image.new("RGB", (width, top + rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    draw_header(draw, head, width)
    x0 = (width - cols * cell_w + GAP) // 2
    for i, (tile, m) in enumerate(zip(tiles, mistakes)):
        x, y = x0 + (i % cols) * cell_w + (cell_w - GAP - side) // 2, top + (i // cols) * cell_h
        cx = x + side // 2
        draw.text((cx, y), f"true {names[m['true']]}", font=font, fill=INK, anchor="ma")
        pred = f"pred {names[m['pred']]} ({100 * m['confidence']:.0f}%)"
        draw.text((cx, y + LINE_H), pred, font=font, fill=WRONG, anchor="ma")
        ty = y + 2 * LINE_H
        canvas.paste(Image.fromarray(tile, mode="L"), (x + (side - tile.shape[1]) // 2, ty + (side - tile.shape[0]) // 2))
        draw.rectangle((x - 1, ty - 1, x + side, ty + side), outline=FRAME)
    if not tiles:
        draw.text((width // 2, top + cell_h // 2), "no mistakes", font=big, fill=MUTED, anchor="mm")
    return canvas


def mistake_labels(draw: ImageDraw.ImageDraw, classes: list[str], font, width: float) -> list[str]:
    """Each class's name as mistakes.png labels it: ``pred NAME (100%)`` in ``width`` px, the width of a cell less
    the gap between cells (a long name's labels filled the whole cell and ran into the next one's), every name told
    apart from the others (:func:`cnnlab.drawing.class_labels`: a long name cut in its middle, or where it differs
    from another; ' ' drawn as ␣). ``true NAME`` is shorter: the same name fits."""
    return class_labels(classes, lambda t: draw.textlength(f"pred {t} (100%)", font=font) <= width)


def plot_mistakes(images, mistakes: list[dict], classes: list[str], path, cols: int = 6, *,
                  context: dict | None = None) -> Path:
    """A grid of misclassified images with true and predicted labels and confidence, as one PNG.

    ``images``: (H, W) arrays or tensors (uint8 as stored: 0 is the background), one per mistake."""
    title = f"most confident mistakes ({len(mistakes)} shown)" if mistakes else "most confident mistakes"
    return save_png(mistakes_mosaic(images, mistakes, classes, cols, title, context), path)


#: Above this many classes the confusion matrix leaves the class names out and shrinks its cells.
MANY_CLASSES = 80
#: px: the most a class name takes beside the confusion matrix's rows and under its columns (a longer one is
#: shortened, :func:`cnnlab.drawing.class_labels`); about the width of a cell of mistakes.png.
NAME_WIDTH = 140
#: ColorBrewer's "Blues" (matplotlib's colormap of that name), light to dark, interpolated linearly.
BLUES = np.array([(247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
                  (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107)], dtype=np.float64)


def blues(share: float) -> tuple[int, int, int]:
    """The colour of ``share`` (0..1) on :data:`BLUES`."""
    return tuple(blues_array(np.float64(share)).tolist())


def _confusion_geometry(classes: list[str], probe: ImageDraw.ImageDraw) -> dict:
    """Cell size and margins (px) for an n-class matrix whose labels are ``classes``."""
    n, font = len(classes), _font(FONT_SIZE)
    # 18 px: a slanted 12-px name per column without overlap; past MANY_CLASSES the matrix keeps to about
    # 1,400 px (cells of a pixel or more) and the names are left out, so that a 1,000-class folder still draws
    cell = max(18, min(56, 560 // max(n, 1))) if n <= MANY_CLASSES else max(1, 1400 // n)
    named = cell >= 18
    # a long name shortened (a 200-character one drawn whole squeezed the matrix into a corner), every one told apart
    names = class_labels(classes, lambda t: probe.textlength(t, font=font) <= NAME_WIDTH) if named else []
    widest = max((probe.textlength(c, font=font) for c in names), default=0)
    slanted = max(map(display_width, names), default=0) > 2  # names, not digits: at 45 degrees, ending at their tick
    below = int((widest + FONT_SIZE) * 0.75) if slanted else FONT_SIZE
    left = GAP + LINE_H + 6 + int(widest) + 8
    width = max(left + n * cell + 110, 420)
    return {"n": n, "cell": cell, "slanted": slanted and named, "named": named, "names": names, "left": left,
            "width": width, "bottom": 8 + below + 8 + LINE_H + GAP}


def blues_array(shares: np.ndarray) -> np.ndarray:
    """:func:`blues` for every element of ``shares``: uint8 RGB, one more axis of 3."""
    x = np.clip(shares, 0.0, 1.0) * (len(BLUES) - 1)
    i = np.minimum(x.astype(int), len(BLUES) - 2)
    return np.round(BLUES[i] + (x - i)[..., None] * (BLUES[i + 1] - BLUES[i])).astype(np.uint8)


def _draw_cells(canvas: Image.Image, confusion: list[list[int]], g: dict, top: int) -> None:
    """The row-normalised colours (one pixel a cell, enlarged), and each non-zero count where it fits."""
    cell, left, n = g["cell"], g["left"], g["n"]
    counts = np.asarray(confusion, dtype=np.float64).reshape(n, n)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    colours = Image.fromarray(blues_array(shares), mode="RGB")
    canvas.paste(colours.resize((n * cell, n * cell), Image.Resampling.NEAREST), (left, top))
    draw, font = ImageDraw.Draw(canvas), _font(max(7, min(FONT_SIZE, cell // 3)))
    for i, j in zip(*np.nonzero(counts)) if cell >= 14 else ():
        text = str(int(counts[i, j]))
        if draw.textlength(text, font=font) <= cell - 2:
            ink = "white" if shares[i, j] > 0.5 else INK
            draw.text((left + j * cell + cell / 2, top + i * cell + cell / 2), text, font=font, fill=ink, anchor="mm")
    draw.rectangle((left - 1, top - 1, left + n * cell, top + n * cell), outline=MUTED)


def _draw_class_labels(canvas: Image.Image, classes: list[str], g: dict, top: int) -> None:
    """Class names beside the rows ("true", left) and under the columns ("predicted", below)."""
    draw, font, cell, left, n = ImageDraw.Draw(canvas), _font(FONT_SIZE), g["cell"], g["left"], g["n"]
    base = top + n * cell + 6
    for k, name in enumerate(g["names"]):
        draw.text((left - 6, top + k * cell + cell / 2), name, font=font, fill=INK, anchor="rm")
        x = left + k * cell + cell / 2
        if not g["slanted"]:
            draw.text((x, base), name, font=font, fill=INK, anchor="ma")
            continue
        label = rotated_text(name, font, INK, 45)
        canvas.paste(label, (int(x) - label.width + 4, base), label)  # its end at the column's tick
    below = base + g["bottom"] - GAP - LINE_H - 8
    draw.text((left + n * cell / 2, below), "predicted", font=font, fill=INK, anchor="ma")
    word = rotated_text("true", font, INK, 90)
    canvas.paste(word, (GAP, int(top + n * cell / 2 - word.height / 2)), word)


def _draw_colour_bar(canvas: Image.Image, g: dict, top: int) -> None:
    """The scale of the colours: the share of the true class, 0 at the bottom, 1 at the top."""
    x, height, font = g["left"] + g["n"] * g["cell"] + 16, g["n"] * g["cell"], _font(FONT_SIZE - 1)
    bar = np.repeat(blues_array(np.linspace(1.0, 0.0, height))[:, None, :], 14, axis=1)  # (height, 14, 3)
    canvas.paste(Image.fromarray(bar, mode="RGB"), (x, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((x - 1, top - 1, x + 14, top + height), outline=MUTED)
    for tick in range(6):
        y = top + round((1 - tick / 5) * (height - 1))
        draw.line((x + 14, y, x + 17, y), fill=MUTED)
        draw.text((x + 20, y), f"{tick / 5:.1f}", font=font, fill=INK, anchor="lm")


def confusion_image(confusion: list[list[int]], classes: list[str], title: str = "",
                    context: dict | None = None) -> Image.Image:
    """One RGB picture of a confusion matrix: rows are the true classes, columns the predicted ones; counts
    as text, colours row-normalised (the share of each true class), with their scale. No matplotlib."""
    g = _confusion_geometry(classes, ImageDraw.Draw(Image.new("RGB", (1, 1))))
    head = header(title, context, g["width"])
    top = header_height(head) + GAP // 2
    canvas = Image.new("RGB", (g["width"], top + g["n"] * g["cell"] + g["bottom"]), "white")
    draw = ImageDraw.Draw(canvas)
    draw_header(draw, head, g["width"])
    _draw_cells(canvas, confusion, g, top)
    _draw_class_labels(canvas, classes, g, top)
    _draw_colour_bar(canvas, g, top)
    return canvas


def plot_confusion(confusion: list[list[int]], classes: list[str], path, *, context: dict | None = None) -> Path:
    """Counts as text; colours are row-normalised (the share of each true class). Drawn with Pillow."""
    return save_png(confusion_image(confusion, classes, "confusion matrix (colour: share of true class)",
                                     context), path)
