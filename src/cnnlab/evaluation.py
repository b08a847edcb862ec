"""Evaluation: a large-batch ``inference_mode`` pass, a run's checkpoint evaluated, and the report
(summary.json and figures) of an evaluation.

Inference code (predict, export, analysis, serve) imports this and :mod:`cnnlab.checkpoint`, never the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.checkpoint import load_checkpoint, load_state_dict_file, model_from_checkpoint, resolve_checkpoint
from cnnlab.data import BatchLoader, Dataset, load_dataset
from cnnlab.devices import resolve_device
from cnnlab.errors import CnnlabError
from cnnlab.models import build_model
from cnnlab.report import format_table, write_report

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class EvalResult:
    loss: float
    accuracy: float  # percent
    n: int
    correct: int = 0
    #: (N,) predicted classes and (N, classes) probabilities, on the CPU, when asked for.
    predictions: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None


def evaluate(model: nn.Module, loader: BatchLoader, limit: int = 0, keep_outputs: bool = False) -> EvalResult:
    """Mean cross-entropy and accuracy over ``loader`` (its first ``limit`` items if > 0)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=loader.device)
    correct = torch.zeros((), dtype=torch.int64, device=loader.device)
    n = 0
    preds, probs = [], []
    with torch.inference_mode():
        for x, y in loader.batches(0):
            if limit and n >= limit:
                break
            if limit:
                x, y = x[: limit - n], y[: limit - n]
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            pred = logits.argmax(1)
            correct += (pred == y).sum()
            n += len(y)
            if keep_outputs:
                preds.append(pred.cpu())
                probs.append(logits.softmax(1).cpu())
    model.train(was_training)
    if n == 0:
        raise CnnlabError("evaluation saw no images; the test split is empty")
    return EvalResult(
        loss=float(loss_sum) / n,
        accuracy=100.0 * int(correct) / n,
        n=n,
        correct=int(correct),
        predictions=torch.cat(preds) if keep_outputs else None,
        probabilities=torch.cat(probs) if keep_outputs else None,
    )


def report_run(run_dir: Path, model: nn.Module, data: Dataset, device: torch.device, *, history: list[dict],
               batch_size: int = 1000, extra: dict | None = None, log: Log = _print,
               result: EvalResult | None = None, context: dict | None = None) -> dict:
    """Write summary.json and the plots from ``result`` when it is the model's evaluation of the whole
    test set with its outputs kept; otherwise evaluate the test set here first. ``context`` (model,
    dataset...) is shown on every figure."""
    res = result
    if res is None or res.predictions is None or res.n != len(data.test_labels):
        test_loader = BatchLoader(data.test_images, data.test_labels, batch_size, mean=data.mean, std=data.std,
                                  shuffle=False, device=device)
        res = evaluate(model, test_loader, keep_outputs=True)
    summary = write_report(run_dir, history=history, labels=data.test_labels, predictions=res.predictions,
                           probabilities=res.probabilities, images=data.test_images, classes=list(data.classes),
                           loss=res.loss, accuracy=res.accuracy, extra=extra, context=context)
    log(format_table(summary["per_class"]))
    log(f"wrote summary.json, confusion.png, mistakes.png{', curves.png' if history else ''} in {run_dir}")
    return summary


def evaluate_run(
    path: str | Path | None = None,
    *,
    which: str = "last",
    weights: str | Path | None = None,
    model_name: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    batch_size: int = 1000,
    keep_outputs: bool = False,
) -> tuple[EvalResult, nn.Module, Dataset]:
    """Evaluate a run's checkpoint, or a bare ``state_dict`` file (``weights``) for ``model_name``."""
    dev = resolve_device(device)
    if weights is not None:
        if model_name is None:
            raise CnnlabError("--weights needs --model NAME to know which net the state_dict belongs to")
        data = load_dataset(dataset or "mnist", data_dir=data_dir)
        model, _ = build_model(model_name, data.info())
        sd = load_state_dict_file(weights)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as err:
            raise CnnlabError(f"{weights}: weights do not fit model {model_name!r}: {str(err).splitlines()[0]}; "
                              "pick the --model they were trained as") from None
    else:
        if path is None:
            raise CnnlabError("give a run directory or checkpoint, or --weights FILE --model NAME")
        state = load_checkpoint(resolve_checkpoint(path, which), expect_model=model_name)
        cfg = state["config"]
        data = load_dataset(dataset or cfg["dataset"], data_dir=data_dir or cfg.get("data_dir"))
        model = model_from_checkpoint(state)
    model.to(dev)
    loader = BatchLoader(data.test_images, data.test_labels, batch_size, mean=data.mean, std=data.std,
                         shuffle=False, device=dev)
    return evaluate(model, loader, keep_outputs=keep_outputs), model, data
