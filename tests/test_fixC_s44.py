"""fixC (s44): a run folder's metrics.csv that lost whole rows, and a train split whose labels changed, in the
probe of compare (D1, D2). docs/reliability.md lists them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import tiny_config
from cnnlab.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.cli import main
from cnnlab.compare import compare
from cnnlab.data.dataset import Dataset
from cnnlab.engine import train
from cnnlab.errors import CnnlabError

QUIET = dict(quiet=True, log=lambda m: None)


# ----------------------------------------------------------------------------------------------------- D2


def _change_train_labels(tiny_idx, count: int = 1) -> None:
    """Train labels changed in place, the images untouched (a label file corrected; sizes, mean, std the same)."""
    path = tiny_idx / "train-labels-idx1-ubyte"
    raw = path.read_bytes()
    labels = np.frombuffer(raw[8:], np.uint8).copy()
    labels[:count] = (labels[:count] + 1) % 10
    path.write_bytes(raw[:8] + labels.tobytes())


def test_changed_train_labels_are_not_the_data_a_run_trained_on(tiny_idx, tmp_path, capsys):
    """One train label changed, images untouched: compare reused the runs trained on the old labels, `--resume`
    trained its second part on the new ones, `evaluate` wrote its report: the train split was known by its size,
    mean and std only."""
    run, out = tmp_path / "r", tmp_path / "cmp"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--epochs", "2", "--max-steps", "4",
                 "--device", "cpu", "--threads", "1", "--out", str(run), "--quiet"]) == 0
    compare(["basic_cnn"], 1, tiny_config(tiny_idx, threads=1), out, log=lambda m: None)
    _change_train_labels(tiny_idx)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--threads", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--resume {run}: idx:{tiny_idx} is not the data the run trained on (the train " \
        "images or labels differ); put the data back as it was" in err, err
    with pytest.raises(CnnlabError, match=r"trained on another version of idx:.* than it holds now \(the train images "
                                          r"or labels differ\); compare again with another --out"):
        compare(["basic_cnn"], 1, tiny_config(tiny_idx, threads=1), out, log=lambda m: None)


def test_runs_recorded_without_the_train_crc_resume_and_are_reused_as_before(tiny_idx, tmp_path, capsys):
    """A run of an older cnnlab records no train_crc32: it is not compared on it (no refusal for a missing field)."""
    run, out = tmp_path / "r", tmp_path / "cmp"
    train(tiny_config(tiny_idx, epochs=2, max_steps=4, threads=1), out=run, **QUIET)
    compare(["basic_cnn"], 1, tiny_config(tiny_idx, threads=1), out, log=lambda m: None)
    for folder in (run, next(out.glob("basic_cnn-seed0-*"))):
        config = json.loads((folder / "config.json").read_text())
        assert "train_crc32" in config["data"]
        del config["data"]["train_crc32"]
        (folder / "config.json").write_text(json.dumps(config))
        for name in ("last.pt", "best.pt")[:2 if (folder / "best.pt").exists() else 1]:
            ckpt = load_checkpoint(folder / name)
            del ckpt["data"]["train_crc32"]
            save_checkpoint(folder / name, {k: v for k, v in ckpt.items() if k not in ("format", "version",
                                                                                      "tensor_digest")})
    _change_train_labels(tiny_idx)
    logs = []
    compare(["basic_cnn"], 1, tiny_config(tiny_idx, threads=1), out, log=logs.append)
    assert len(logs) == 1 and ": reused, final " in logs[0], logs
    assert main(["train", "--resume", str(run), "--threads", "1", "--quiet"]) == 0


def test_a_changed_split_is_named_as_images_or_labels_and_once():
    """A changed test label was said as "the test images differ"; a split's CRC is not named again beside a change
    that says already that its images differ."""
    img = torch.zeros(4, 1, 16, 16, dtype=torch.uint8)
    data = Dataset("idx:d", img, torch.tensor([0, 1, 0, 1]), img[:2], torch.tensor([0, 1]), ("0", "1"), 0.5, 0.25, "x")
    rec = data.info()
    assert data.describe_changes({**rec, "test_crc32": 1}) == "the test images or labels differ"
    assert data.describe_changes({**rec, "train_crc32": 1}) == "the train images or labels differ"
    assert data.describe_changes({**rec, "train_crc32": 1, "test_crc32": 1}) == \
        "the test images or labels and the train images or labels differ"
    assert data.describe_changes({**rec, "train_crc32": 1, "mean": 0.1, "test_size": 3, "test_crc32": 1}) == \
        "the number of test images and the train images' mean differ"
    other = Dataset("idx:d", img, torch.tensor([1, 0, 0, 1]), img[:2], torch.tensor([0, 1]), ("0", "1"), 0.5, 0.25, "x")
    assert other.changed_since(rec) == ["train_crc32"]  # labels swapped: same size, mean and std
