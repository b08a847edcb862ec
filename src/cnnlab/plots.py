"""Plots of a run. Every function here only draws data it is given and saves a PNG atomically."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cnnlab.fileio import atomic_write_bytes  # noqa: E402


def save_figure(fig, path, **savefig_kwargs) -> Path:
    """Render ``fig`` as PNG and write it atomically (never a half-written image)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, **savefig_kwargs)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _save(fig, path) -> None:
    save_figure(fig, path, bbox_inches="tight")
    plt.close(fig)


def plot_curves(history: list[dict], path) -> None:
    """Train/eval loss and eval accuracy per epoch."""
    epochs = [r["epoch"] for r in history]
    eval_key = "val" if any(r.get("val_acc") is not None for r in history) else "test"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    ax1.plot(epochs, [r[f"{eval_key}_loss"] for r in history], "s-", label=f"{eval_key} loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.set_yscale("log")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot(epochs, [r[f"{eval_key}_acc"] for r in history], "o-", color="tab:green", label=f"{eval_key} accuracy")
    ax2.plot(epochs, [r["train_acc"] for r in history], "--", color="tab:gray", label="train accuracy (running)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    best = max(r[f"{eval_key}_acc"] for r in history)
    ax2.axhline(best, color="tab:green", alpha=0.3, lw=1)
    ax2.set_title(f"best {eval_key} accuracy {best:.2f}%")
    ax2.legend(loc="lower right")
    ax2.grid(alpha=0.3)
    for ax in (ax1, ax2):
        ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
    _save(fig, path)


def plot_confusion(confusion: list[list[int]], classes: list[str], path) -> None:
    """Counts as text; colours are row-normalised (the share of each true class)."""
    n = len(classes)
    rows = [sum(r) or 1 for r in confusion]
    norm = [[c / rows[i] for c in r] for i, r in enumerate(confusion)]
    size = max(5.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if confusion[i][j]:
                ax.text(j, i, str(confusion[i][j]), ha="center", va="center", fontsize=7 if n > 10 else 8,
                        color="white" if norm[i][j] > 0.5 else "black")
    ax.set_xticks(range(n), classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right" if max(map(len, classes)) > 2 else "center")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (colour: share of true class)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def plot_mistakes(images, mistakes: list[dict], classes: list[str], path, cols: int = 6) -> None:
    """A grid of misclassified images with true and predicted labels and confidence."""
    n = max(len(mistakes), 1)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.7, rows * 1.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, m in zip(axes.flat, images, mistakes):
        ax.imshow(img.numpy() if hasattr(img, "numpy") else img, cmap="gray_r")
        ax.set_title(f"true {classes[m['true']]}\npred {classes[m['pred']]} {100 * m['confidence']:.0f}%", fontsize=8)
    if not mistakes:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("most confident mistakes", fontsize=10)
    _save(fig, path)


def plot_comparison(series: dict[str, dict], path, metric: str = "test accuracy (%)", title: str = "") -> None:
    """``series[model] = {"epochs": [...], "mean": [...], "std": [...]}``: mean with a +-std band."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, s in series.items():
        lo = [m - d for m, d in zip(s["mean"], s["std"])]
        hi = [m + d for m, d in zip(s["mean"], s["std"])]
        line, = ax.plot(s["epochs"], s["mean"], "o-", label=f"{name} (n={s['n']})")
        ax.fill_between(s["epochs"], lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{title + ': ' if title else ''}mean over seeds, band = ±1 std")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
