"""What a finished run shows: per-class metrics, a confusion matrix and the worst mistakes.

This module computes; ``cnnlab.plots`` only draws what it computed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from cnnlab import plots
from cnnlab.fileio import atomic_write_json
from cnnlab.runs import read_run_json


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(classes, classes) counts; row = true class, column = predicted class."""
    flat = labels.to(torch.int64) * num_classes + predictions.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_metrics(confusion: torch.Tensor, classes: list[str]) -> list[dict]:
    """Precision, recall and F1 per class, in percent, and the support (true items of the class).

    F1 is ``2 TP / (2 TP + FP + FN)``, the harmonic mean of precision and recall. A ratio with
    nothing to divide (precision of a class never predicted, recall of a class with no items, F1 of
    both) is ``None``: undefined, not 0.
    """
    cm = confusion.double()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    rows = []
    for i, name in enumerate(classes):
        rows.append({
            "class": name,
            "support": int(support[i]),
            "precision": _percent(tp[i], predicted[i]),
            "recall": _percent(tp[i], support[i]),
            "f1": _percent(2 * tp[i], support[i] + predicted[i]),
        })
    return rows


def _percent(part: torch.Tensor, whole: torch.Tensor) -> float | None:
    return float(100 * part / whole) if whole > 0 else None


def worst_mistakes(labels, predictions, probabilities, limit: int = 36) -> list[dict]:
    """Misclassified items, most confident first: index, true, predicted, confidence."""
    wrong = (predictions != labels).nonzero().flatten()
    conf = probabilities[wrong, predictions[wrong]]
    order = conf.argsort(descending=True)[:limit]
    return [
        {"index": int(wrong[i]), "true": int(labels[wrong[i]]), "pred": int(predictions[wrong[i]]),
         "confidence": float(conf[i])}
        for i in order
    ]


#: Width of the per-class table's name column: at least this, at most that (longer names widen their own row).
CLASS_COLUMN_MIN, CLASS_COLUMN_MAX = 14, 40


def format_table(rows: list[dict]) -> str:
    """The per-class table: precision, recall, F1 (percent; "n/a" where undefined) and support."""
    def pct(v: float | None, width: int) -> str:
        return f"{v:>{width - 1}.2f}%" if v is not None else f"{'n/a':>{width}}"

    # names whole (a cut name can be another class's): the column fits the longest up to CLASS_COLUMN_MAX
    # characters, and a longer name pushes its own row right
    width = max(CLASS_COLUMN_MIN, min(CLASS_COLUMN_MAX, max((len(r["class"]) for r in rows), default=0)))
    lines = [f"{'class':<{width}} {'precision':>9} {'recall':>7} {'F1':>7} {'support':>7}"]
    for r in rows:
        lines.append(f"{r['class']:<{width}} {pct(r['precision'], 9)} {pct(r['recall'], 7)} {pct(r['f1'], 7)} "
                     f"{r['support']:>7}")
    return "\n".join(lines)


def summarize(*, labels: torch.Tensor, predictions: torch.Tensor, probabilities: torch.Tensor, classes: list[str],
              loss: float, accuracy: float, split: str = "test", extra: dict | None = None) -> dict:
    """What summary.json holds: the headline, per-class precision/recall/F1, the confusion matrix, the worst
    mistakes (and ``extra``)."""
    cm = confusion_matrix(labels, predictions, len(classes))
    return {
        "split": split,
        "n": int(len(labels)),
        "loss": loss,
        "accuracy": accuracy,
        "per_class": per_class_metrics(cm, classes),
        "confusion": cm.tolist(),
        "mistakes": worst_mistakes(labels, predictions, probabilities),
        **(extra or {}),
    }


#: What training records in a run's summary.json about the run itself (not about an evaluation): a later
#: evaluation of the run keeps them (``write_report(..., keep=RUN_FACTS)``).
RUN_FACTS = ("target", "train_seconds", "parameters", "ema")


def _previous_summary(run_dir: Path) -> tuple[dict, float] | None:
    """The summary.json in ``run_dir`` and its modification time (None when missing or unreadable)."""
    path = run_dir / "summary.json"
    try:
        written = path.stat().st_mtime
    except OSError:
        return None
    old = read_run_json(path)  # without blocking: a FIFO in its place hung 'cnnlab evaluate'
    return (old, written) if old is not None else None


#: What each figure of the summary is drawn from (besides the class names and the run's context).
FIGURE_INPUTS = {"confusion.png": ("n", "confusion"), "mistakes.png": ("n", "mistakes")}


def current_figures(run_dir: Path, summary: dict, previous: tuple[dict, float] | None) -> set[str]:
    """The figures in ``run_dir`` already drawn from what ``summary`` holds: the ``previous`` summary.json there
    (and its time) has the same inputs and class names, and the figure is no older than it (a figure is written
    after its summary). Evaluating a run again, or right after training, reproduces the evaluation: nothing
    needs drawing."""
    if previous is None:
        return set()
    old, written = previous
    try:
        names = [row["class"] for row in old["per_class"]]
    except (KeyError, TypeError):
        return set()
    if names != [row["class"] for row in summary["per_class"]]:
        return set()
    current = set()
    for name, keys in FIGURE_INPUTS.items():
        try:
            drawn = (run_dir / name).stat().st_mtime >= written
        except OSError:
            continue
        if drawn and all(old.get(k) == summary[k] for k in keys):
            current.add(name)
    return current


class Figures:
    """curves.png, confusion.png and mistakes.png, drawn in a background thread so that the line a user waits
    for is printed while they are drawn; :meth:`wait` returns once they are written (and re-raises an error).
    Those in ``current`` are already drawn from the same inputs: they are kept (``names`` lists the others)."""

    def __init__(self, run_dir: Path, summary: dict, *, history: list[dict], images: torch.Tensor,
                 classes: list[str], context: dict | None = None, current: set[str] = frozenset()):
        context = {**(context or {})}
        context.setdefault("run", Path(run_dir).resolve().name)
        self._error: BaseException | None = None
        wanted = (["curves.png"] if history else []) + ["confusion.png", "mistakes.png"]
        self.names = [n for n in wanted if n not in current]
        self.kept = sorted(current)
        args = (Path(run_dir), summary, history, images, classes, context)
        self._thread = threading.Thread(target=self._draw, args=args, name="cnnlab-figures", daemon=True)
        self._thread.start()

    def _draw(self, run_dir, summary, history, images, classes, context) -> None:
        try:
            if "curves.png" in self.names:
                plots.plot_curves(history, run_dir / "curves.png", context=context)
            if "confusion.png" in self.names:
                plots.plot_confusion(summary["confusion"], classes, run_dir / "confusion.png", context=context)
            if "mistakes.png" in self.names:
                mistakes = summary["mistakes"]
                plots.plot_mistakes([images[m["index"], 0] for m in mistakes], mistakes, classes,
                                    run_dir / "mistakes.png", context=context)
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread, which raises it
            self._error = err

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def write_report(run_dir: str | Path, summary: dict, *, history: list[dict], images: torch.Tensor,
                 classes: list[str], context: dict | None = None, keep: tuple[str, ...] = ()) -> Figures:
    """Write summary.json into ``run_dir`` now (strict JSON: a diverged loss is ``null``) and start drawing
    the figures; ``.wait()`` on the result before relying on them.

    ``context``: what places the figures, e.g. ``{"model": "inception", "dataset": "mnist"}``; every
    figure shows it under its title, with ``"run"`` (the run directory's name) added when missing.
    A figure already drawn from the same inputs (:func:`current_figures`) is kept, not drawn again; so are
    the ``keep`` keys of the summary.json there (e.g. :data:`RUN_FACTS`), where ``summary`` lacks them.
    """
    run_dir = Path(run_dir)
    previous = _previous_summary(run_dir)
    current = current_figures(run_dir, summary, previous)
    if previous is not None and keep:
        summary = {**{k: previous[0][k] for k in keep if k in previous[0]}, **summary}
    atomic_write_json(run_dir / "summary.json", summary)
    for name in sorted(current):
        try:  # still no older than the summary it shows, so that the next evaluation keeps it too
            os.utime(run_dir / name)
        except OSError:
            current.discard(name)
    return Figures(run_dir, summary, history=history, images=images, classes=classes, context=context,
                   current=current)
