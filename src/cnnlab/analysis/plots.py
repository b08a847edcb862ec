"""Figures for ``cnnlab analyze``. They only draw the numbers that ``branches`` and ``gradients`` computed.

Built with ``matplotlib.figure.Figure`` (no pyplot, so no GUI backend and no global state), like
:mod:`cnnlab.plots`, and saved as PNG by the same :func:`cnnlab.plots.save_figure`. matplotlib is
imported at the top here: only ``cnnlab analyze``, which draws, imports this module (lazily).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from cnnlab.drawing import class_labels, context_text
from cnnlab.errors import printable
from cnnlab.plots import mpl_font_file, mpl_text, save_figure
from cnnlab.text import display_width

KIND_COLOURS = {"plain": "tab:red", "residual": "tab:blue"}
LABEL_OFFSET = {"plain": -10, "residual": 10}  # points: plain's value labels below its line, residual's above
MODE_COLOURS = {"zero": "tab:red", "mean": "tab:orange"}


def plot_branches(result: dict, path: str | Path) -> Path:
    """One row per Inception module: accuracy under ablation, next-layer weight share, per-class energy."""
    modules = result["modules"]
    base = result["baseline"]["accuracy"]
    classes = class_axis(result["classes"])
    fig = Figure(figsize=(classes["width"], 4 * len(modules)), layout="constrained")
    axes = fig.subplots(len(modules), 3, squeeze=False, width_ratios=[1, 1, classes["ratio"]])
    # the weights' origin on a line of its own, as evaluate's figures say it (run r · checkpoint best.pt): a run's
    # best.pt, or another run's net analysed into a folder, was told from nothing in the title
    origin = mpl_text(printable(context_text(result.get("origin"))))
    fig.suptitle(mpl_text(f"{result['model']} on {printable(result['dataset'])}: which branches does the trained net "
                          f"rely on? (baseline test accuracy {base:.2f}% on {result['test_images']:,} test images)")
                 + (f"\n{origin}" if origin else ""))
    for row, mod in zip(axes, modules):
        names = [r["branch"] for r in mod["branches"]]
        xs = range(len(names))

        ax = row[0]
        width = 0.38
        for i, (mode, label) in enumerate((("zero", "branch zeroed"), ("mean", "branch = its train mean"))):
            drops = [base - r[mode]["accuracy"] for r in mod["branches"]]
            bars = ax.bar([x + (i - 0.5) * width for x in xs], drops, width, label=label, color=MODE_COLOURS[mode])
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.axhline(0, color="black", linewidth=0.8)
        _headroom(ax)
        ax.set_xticks(list(xs), names)
        ax.set_ylabel("test accuracy lost (percentage points)")
        ax.set_title(f"{mod['name']}: accuracy lost with one branch removed", fontsize=10)
        ax.legend(fontsize=7, loc="upper center", ncol=2)

        ax = row[1]
        shares = [r["next_layer_share"] for r in mod["branches"]]
        if all(s is not None for s in shares):
            bars = ax.bar([x - 0.2 for x in xs], [100 * s for s in shares], 0.4, color="tab:green",
                          label=f"share of {mod['next_layer']}'s |W|²")
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
            ax.bar([x + 0.2 for x in xs], [100 * r["uniform_share"] for r in mod["branches"]], 0.4, color="lightgray",
                   label="if every channel weighed the same")
            ax.set_ylim(0, 1.35 * max(100 * max(shares), 100 * max(r["uniform_share"] for r in mod["branches"])))
            ax.legend(fontsize=7, loc="upper center", ncol=2)
        else:
            ax.text(0.5, 0.5, "no single next layer reads this module", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_xticks(list(xs), names)
        ax.set_ylabel("% of squared weight norm")
        ax.set_title(f"{mod['name']} -> {mod['next_layer'] or 'n/a'}: next layer's weight on each branch", fontsize=10)

        _energy_panel(fig, row[2], mod, names, classes)
    return save_figure(fig, path)


def _headroom(ax) -> None:
    """The accuracy panel's y range: a band above the highest bar (or above 0) for the value labels and the legend,
    30% of the bars' span (all drops >= 0: 1.3 times the top, as ever); below a negative bar, room for its label.
    All drops <= 0 (no branch loses accuracy) ended the axis at 0.65: the labels of the 0.00 bars ran across the
    frame into the title, and the legend covered the bars' tops."""
    lo, hi = ax.get_ylim()
    top, bottom = max(hi, 0.5), min(lo, 0)
    span = top - bottom
    ax.set_ylim(bottom - (0.05 * span if bottom < 0 else 0), top + 0.3 * span)


#: Classes whose per-class heatmap keeps its first width; above, its panel widens with them, up to twice.
CLASSES_PER_PANEL = 24
#: Columns of a terminal (characters) a class name takes under the heatmap at most; a longer one is cut in its middle.
CLASS_NAME_COLUMNS = 16
#: Points: the narrowest heatmap cell that is annotated with its value, and the room a 7-pt tick label needs.
ANNOTATED_CELL, LABEL_ROOM = 22.0, 9.5


def class_axis(classes: list[str]) -> dict:
    """How the per-class heatmaps show ``classes``: the figure's width (inches) and the heatmap panel's width ratio
    (wider for many classes), the names (a character the font lacks as its code point, a long name cut in its
    middle, every one told apart from the others: :func:`cnnlab.drawing.class_labels`), which of them are labelled
    (every k-th where even vertical they would overlap), their rotation (vertical where a name is wider than its
    column: the level labels of 17 names overlapped) and whether each cell gets its value written in it (only where
    it fits: 47 classes' values smeared into each other)."""
    n = max(len(classes), 1)
    ratio = min(2.0, max(1.0, n / CLASSES_PER_PANEL))
    width = 16 * (2 + ratio) / 3
    cell = width * 72 * ratio / (2 + ratio) * 0.7 / n  # points: the heatmap is about 70% of its panel
    names = class_labels(classes, lambda t: display_width(t) <= CLASS_NAME_COLUMNS, font_path=mpl_font_file())
    step = max(1, math.ceil(LABEL_ROOM / cell))
    level = max(map(display_width, names), default=0) * 0.6 * 7 + 2 <= cell * step  # a 7-pt character: ~4.2 pt
    return {"width": width, "ratio": ratio, "names": names, "ticks": list(range(0, len(names), step)),
            "rotation": 0 if level else 90, "annotated": cell >= ANNOTATED_CELL}


def _energy_panel(fig: Figure, ax, mod: dict, branches: list[str], classes: dict) -> None:
    """One module's branch output energy per class as a heatmap (:func:`class_axis` says how the classes show)."""
    # (branches, classes); a class without test images (None) is a grey cell marked '-', not a 0
    energy = np.ma.masked_invalid(np.array([[math.nan if v is None else v for v in r["energy_per_class"]]
                                            for r in mod["branches"]], dtype=float))
    im = ax.imshow(energy, aspect="auto", cmap=colormaps["viridis"].with_extremes(bad="0.85"))
    ax.set_yticks(range(len(branches)), branches)
    # parse_math off: a class named '$x$' is a name, not a formula (nor '$\\foo$' an error)
    ax.set_xticks(classes["ticks"], [classes["names"][k] for k in classes["ticks"]], fontsize=7,
                  rotation=classes["rotation"], parse_math=False)
    ax.set_xlabel("class" if len(classes["ticks"]) == len(classes["names"]) else
                  f"class (one in {classes['ticks'][1] - classes['ticks'][0]} named)")
    top = energy.max() if energy.count() else 0.0
    for (i, j), v in np.ndenumerate(energy.filled(math.nan)) if classes["annotated"] else ():
        shown, light = ("-", True) if math.isnan(v) else (f"{v:.2g}", v > 0.6 * top)
        ax.text(j, i, shown, ha="center", va="center", fontsize=6, color="black" if light else "white")
    fig.colorbar(im, ax=ax, label="mean squared output")
    ax.set_title(f"{mod['name']}: branch output energy per class (test set)", fontsize=10)


def plot_gradients(result: dict, path: str | Path) -> Path:
    """Gradient norm at initialisation against layer position, plain and residual side by side, log scale."""
    fig = Figure(figsize=(13, 4.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    cmap = _depth_colours(result["depths"])
    for ax, kind in zip(axes, ("plain", "residual")):
        for s in (s for s in result["stacks"] if s["kind"] == kind):
            xs = list(range(1, len(s["layers"]) + 1))
            lo, hi, mean = (_positive(s[k]) for k in ("grad_norm_min", "grad_norm_max", "grad_norm_mean"))
            colour = cmap[s["depth"]]
            ax.plot(xs, mean, color=colour, marker=".", markersize=3, label=f"depth {s['depth']}")
            ax.fill_between(xs, lo, hi, color=colour, alpha=0.2, linewidth=0)
        ax.set_yscale("log")
        ax.set_xlabel("weight layer, counted from the input (1 = stem conv, last = linear head)")
        zeros = sorted({s["depth"] for s in result["stacks"] if s["kind"] == kind and 0 in s["grad_norm_mean"]})
        shown = ", ".join(map(str, zeros[:4])) + (f" and {len(zeros) - 4} more" if len(zeros) > 4 else "")
        ax.set_title(f"{kind} stacks" + (f"\n(gaps: gradients exactly 0 in float32, depth {shown})" if zeros else ""),
                     fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        many = len(result["depths"]) > MOST_LABELLED
        ax.legend(fontsize=6 if many else 8, ncol=2 if many else 1)
    axes[0].set_ylabel("‖dLoss/dW‖ at initialisation")
    fig.suptitle(f"Gradient norms at initialisation on {printable(result['dataset'])} (width {result['width']}, norm "
                 f"{result['norm']}; line: mean of {len(result['seeds'])} seeds, band: min-max)")
    return save_figure(fig, path)


def plot_depth(result: dict, path: str | Path) -> Path:
    """Test accuracy after the budget, and first-layer gradient norm at init, against depth."""
    b = result["budget"]
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax_acc, ax_grad = fig.subplots(1, 2)
    lost_points: list[tuple[int, float]] = []  # the budgets that diverged, of both kinds
    for kind in ("plain", "residual"):
        stacks = sorted((s for s in result["stacks"] if s["kind"] == kind), key=lambda s: s["depth"])
        depths = [s["depth"] for s in stacks]
        labelled = len(depths) <= MOST_LABELLED  # more, and the values' labels overlap each other
        if b["epochs"] > 0:
            accs = [s["training"]["test_accuracy"] for s in stacks]
            diverged = [bool(s["training"].get("diverged")) for s in stacks]
            ax_acc.plot(depths, accs, marker="o", color=KIND_COLOURS[kind], label=kind)
            for d, a, lost in zip(depths, accs, diverged) if labelled else ():
                ax_acc.annotate(f"{a:.1f}" + ("!" if lost else ""), (d, a), textcoords="offset points",
                                xytext=(0, LABEL_OFFSET[kind]), ha="center", va="center", fontsize=7)
            lost_points += [(d, a) for d, a, lost in zip(depths, accs, diverged) if lost]
        firsts = [s["first_layer_grad_norm"] for s in stacks]
        ax_grad.plot(depths, _positive(firsts), marker="o", color=KIND_COLOURS[kind], label=kind)
        zero_label = f"{kind}: exactly 0 (float32 underflow)"
        for d, g in zip(depths, firsts):
            if g > 0 and labelled:
                ax_grad.annotate(f"{g:.2g}", (d, g), textcoords="offset points", xytext=(0, LABEL_OFFSET[kind]),
                                 ha="center", va="center", fontsize=7)
            elif g <= 0:  # log axis: draw an exact zero as a marker on the bottom edge
                ax_grad.plot([d], [0], marker="v", color=KIND_COLOURS[kind], clip_on=False, linestyle="none",
                             transform=ax_grad.get_xaxis_transform(), label=zero_label)
                zero_label = None
    for ax in (ax_acc, ax_grad):
        ax.set_xscale("log", base=2)
        ticks = _thinned(result["depths"])
        ax.set_xticks(ticks, [str(d) for d in ticks])
        ax.minorticks_off()
        ax.set_xlabel("depth (3x3 conv layers)")
        ax.grid(True, alpha=0.3)
    if b["epochs"] > 0:
        _mark_diverged(ax_acc, lost_points)
        classes = result.get("num_classes")  # (a gradients.json of an older cnnlab does not say: no line)
        if classes:
            ax_acc.axhline(100 / classes, color="gray", linestyle=":", linewidth=1, label=f"chance ({classes} classes)")
        ax_acc.set_ylim(0, 100)
        ax_acc.legend()
        ax_acc.set_ylabel("test accuracy (%)")
        ax_acc.set_title(f"after {b['epochs']} epoch(s) over {b['train_images']:,} train images "
                         f"(SGD lr {b['lr']}, momentum {b['momentum']})", fontsize=9)
    else:  # nothing trained: no accuracy axis, one word for it
        ax_acc.text(0.5, 0.5, "not trained (--epochs 0):\ngradients only", ha="center", va="center",
                    transform=ax_acc.transAxes)
        ax_acc.set_yticks([])
        ax_acc.set_title("test accuracy: none", fontsize=9)
    ax_grad.set_yscale("log")
    ax_grad.set_ylabel("first-layer ‖dLoss/dW‖ at init")
    ax_grad.set_title(f"gradient reaching the stem conv (mean of {len(result['seeds'])} seeds)", fontsize=9)
    ax_grad.legend()
    fig.suptitle(f"Plain vs residual stacks on {printable(result['dataset'])} (width {result['width']}, norm "
                 f"{result['norm']})")
    return save_figure(fig, path)


#: Depths whose values are written beside their points; above, the labels overlap (40 depths: "2628303234").
MOST_LABELLED = 8
#: The legend's words for a budget whose loss became NaN or infinite (the table's "!").
DIVERGED_LABEL = "diverged: loss NaN/inf (the table's !)"


def _mark_diverged(ax, points: list[tuple[int, float]]) -> None:
    """A black cross over each diverged budget's point (its accuracy is what a net of NaNs scores, not a measure
    of the stack), with one legend entry for them all."""
    if points:
        ax.plot([d for d, _ in points], [a for _, a in points], linestyle="none", marker="x", markersize=10,
                markeredgewidth=2, color="black", zorder=5, label=DIVERGED_LABEL)


def _thinned(depths: list[int], most: int = 10) -> list[int]:
    """The depths as tick marks, at most about ``most``, spaced evenly on the log axis (the first and the last kept),
    so that their labels do not overlap where the axis crowds them (26, 28, 30 ... 40)."""
    depths = sorted(depths)
    if len(depths) <= most:
        return depths
    gap = (math.log2(depths[-1]) - math.log2(depths[0])) / (most - 1)
    kept = [depths[0]]
    for d in depths[1:]:
        if math.log2(d) - math.log2(kept[-1]) >= gap:
            kept.append(d)
    if kept[-1] != depths[-1]:  # the deepest always shown: in place of the last kept when too close to it
        kept[-1 if len(kept) > 1 and math.log2(depths[-1]) - math.log2(kept[-1]) < gap / 2 else len(kept):] = [depths[-1]]
    return kept


def _positive(values: list[float]) -> list[float]:
    """Zeros become NaN, so a log axis leaves a gap instead of failing or inventing a value."""
    return [v if v > 0 else float("nan") for v in values]


def _depth_colours(depths: list[int]) -> dict[int, tuple]:
    cmap = colormaps["viridis"]
    n = max(len(depths) - 1, 1)
    return {d: cmap(0.9 * i / n) for i, d in enumerate(sorted(depths))}
