"""What a finished run shows: per-class metrics, a confusion matrix and the worst mistakes.

This module computes; ``cnnlab.plots`` only draws what it computed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cnnlab import plots
from cnnlab.fileio import atomic_write_json


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(classes, classes) counts; row = true class, column = predicted class."""
    flat = labels.to(torch.int64) * num_classes + predictions.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_metrics(confusion: torch.Tensor, classes: list[str]) -> list[dict]:
    """Precision, recall and one-vs-rest accuracy per class, in percent."""
    cm = confusion.double()
    total = cm.sum()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    rows = []
    for i, name in enumerate(classes):
        tn = total - support[i] - predicted[i] + tp[i]
        rows.append({
            "class": name,
            "support": int(support[i]),
            "precision": float(100 * tp[i] / predicted[i]) if predicted[i] > 0 else 0.0,
            "recall": float(100 * tp[i] / support[i]) if support[i] > 0 else 0.0,
            "accuracy": float(100 * (tp[i] + tn) / total) if total > 0 else 0.0,
        })
    return rows


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


def format_table(rows: list[dict]) -> str:
    lines = [f"{'class':<14} {'support':>7} {'precision':>9} {'recall':>7} {'accuracy':>8}"]
    for r in rows:
        lines.append(f"{r['class'][:14]:<14} {r['support']:>7} {r['precision']:>8.2f}% {r['recall']:>6.2f}% {r['accuracy']:>7.2f}%")
    return "\n".join(lines)


def write_report(run_dir: str | Path, *, history: list[dict], labels: torch.Tensor, predictions: torch.Tensor,
                 probabilities: torch.Tensor, images: torch.Tensor, classes: list[str], loss: float,
                 accuracy: float, split: str = "test", extra: dict | None = None,
                 context: dict | None = None) -> dict:
    """Write summary.json, curves.png, confusion.png and mistakes.png into ``run_dir``; return the summary.

    ``context``: what places the figures, e.g. ``{"model": "inception", "dataset": "mnist"}``; every
    figure shows it under its title, with ``"run"`` (the run directory's name) added when missing.
    """
    run_dir = Path(run_dir)
    context = {**(context or {})}
    context.setdefault("run", run_dir.resolve().name)
    cm = confusion_matrix(labels, predictions, len(classes))
    per_class = per_class_metrics(cm, classes)
    mistakes = worst_mistakes(labels, predictions, probabilities)
    summary = {
        "split": split,
        "n": int(len(labels)),
        "loss": loss,
        "accuracy": accuracy,
        "per_class": per_class,
        "confusion": cm.tolist(),
        "mistakes": mistakes,
        **(extra or {}),
    }
    atomic_write_json(run_dir / "summary.json", summary)
    if history:
        plots.plot_curves(history, run_dir / "curves.png", context=context)
    plots.plot_confusion(cm.tolist(), classes, run_dir / "confusion.png", context=context)
    plots.plot_mistakes([images[m["index"], 0] for m in mistakes], mistakes, classes, run_dir / "mistakes.png",
                        context=context)
    return summary
