"""Run folders: ``runs/<model>-<dataset>-<timestamp>/`` with config, metrics and checkpoints."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path

from cnnlab.fileio import atomic_write_text

METRIC_FIELDS = [
    "epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr", "seconds",
    "images_per_s",
]

#: The checkpoints a run folder holds, as ``<name>.pt``: ``last`` (the end of training, or of the last
#: save) and ``best`` (the highest evaluated accuracy: on the test set, or on the validation split
#: when the run used one). Commands that read a run take ``last`` unless told otherwise.
CHECKPOINTS = ("last", "best")
DEFAULT_CHECKPOINT = "last"


def new_run_dir(root: str | Path, model: str, dataset: str) -> Path:
    """A fresh directory under ``root``; a numeric suffix avoids clobbering a run of the same second."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.split(":", 1)[0])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{model}-{safe}-{stamp}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def run_dir_of(path: str | Path) -> Path:
    """The run folder of a path: a run folder itself, or the folder of a checkpoint file inside one."""
    p = Path(path)
    return p if p.is_dir() else p.parent


def write_metrics(path: str | Path, rows: list[dict]) -> None:
    """Rewrite ``metrics.csv`` whole from the history (atomic, so a resumed run never duplicates rows)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in METRIC_FIELDS})
    atomic_write_text(path, buf.getvalue())


def read_metrics(path: str | Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def _parse(value: str):
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return float(value)
