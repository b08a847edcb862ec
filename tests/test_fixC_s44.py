"""fixC (s44): a run folder's metrics.csv that lost whole rows, and a train split whose labels changed, in the
probe of compare (D1, D2). docs/reliability.md lists them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import HeldElsewhere, tiny_config
from cnnlab.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.cli import main
from cnnlab.compare import compare
from cnnlab.data.dataset import Dataset
from cnnlab.engine import train
from cnnlab.errors import CnnlabError
from cnnlab.runs import describe_run

QUIET = dict(quiet=True, log=lambda m: None)


def _two_epochs(tiny_idx, run):
    train(tiny_config(tiny_idx, epochs=2, threads=1), out=run, **QUIET)
    return (run / "metrics.csv").read_bytes()


def _rows_lost(run, keep: int = 1) -> None:
    """metrics.csv with its header and first ``keep`` rows only (a backup restored, a copy taken while it trained)."""
    lines = (run / "metrics.csv").read_bytes().split(b"\n")
    (run / "metrics.csv").write_bytes(b"\n".join(lines[:1 + keep]) + b"\n")


def test_a_resume_that_trains_nothing_writes_back_the_rows_metrics_csv_lost(tiny_idx, tmp_path, capsys):
    """`cnnlab train --resume RUN` of a finished run whose metrics.csv lost its last row said "nothing to train,
    re-evaluating" and left the file short: `cnnlab runs` and compare read 1 of its 2 epochs for good."""
    run = tmp_path / "r"
    whole = _two_epochs(tiny_idx, run)
    _rows_lost(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if "metrics.csv" in line]
    assert said == [f"warning: {run}/metrics.csv holds 1 row for 2 epochs: written again from last.pt's history"], out
    assert (run / "metrics.csv").read_bytes() == whole  # byte for byte as the training wrote it
    assert main(["train", "--resume", str(run), "--threads", "1"]) == 0  # whole now: nothing said
    assert "metrics.csv" not in capsys.readouterr().out


def test_runs_lists_a_finished_run_that_lost_metrics_rows_as_damaged_and_its_fix_works(tiny_idx, tmp_path, capsys):
    """`cnnlab runs` listed such a run `1/2 ... finished`, its best the first epoch's (its help: best is what best.pt
    holds). The listing reads no checkpoint (no torch): it names the file and the resume that writes it again."""
    run = tmp_path / "runs" / "r"
    _two_epochs(tiny_idx, run)
    _rows_lost(run)
    row = describe_run(run)
    assert row["status"] == "damaged" and row["epochs_done"] == 1, row
    assert row["detail"] == (f"metrics.csv: 1 row for the run's 2 epochs, which it finished (rows lost since it wrote "
                             f"them); cnnlab train --resume {run} writes it again from last.pt's history"), row
    assert main(["train", "--resume", str(run), "--threads", "1", "--quiet"]) == 0  # as it says
    row = describe_run(run)
    assert (row["status"], row["epochs_done"]) == ("finished", 2), row
    (run / "metrics.csv").unlink()  # gone (as the fix of a damaged one says: delete it): not called damaged
    assert describe_run(run)["status"] == "finished"


def test_a_run_that_stopped_at_its_target_is_not_taken_for_one_that_lost_rows(tiny_idx, tmp_path):
    run = tmp_path / "t"
    train(tiny_config(tiny_idx, epochs=3, threads=1, target_accuracy=5.0), out=run, **QUIET)
    row = describe_run(run)
    assert row["status"] == "finished" and row["epochs_done"] < 3, row


def _cmp_base(tiny_idx):
    return tiny_config(tiny_idx, epochs=2, threads=1)


def _table_row(out) -> str:
    return next(line for line in (out / "comparison.md").read_text().splitlines() if line.startswith("| basic_cnn |"))


def test_compare_over_a_run_whose_metrics_csv_lost_whole_rows(tiny_idx, tmp_path):
    """compare "resumed" such a run on every compare, never repairing it, and its table read the rows left: best acc
    below the final acc, the train time of one epoch, a NaN in the curve. Now the resume writes the file again from
    last.pt's history (one line says so), the table is the one before, and the next compare reuses the run."""
    out, base = tmp_path / "cmp", _cmp_base(tiny_idx)
    compare(["basic_cnn"], 1, base, out, log=lambda m: None)
    run = next(out.glob("basic_cnn-seed0-*"))
    whole, table = (run / "metrics.csv").read_bytes(), _table_row(out)
    _rows_lost(run)
    logs = []
    compare(["basic_cnn"], 1, base, out, log=logs.append)
    said = [m for m in logs if "metrics.csv" in m]
    assert said == [f"basic_cnn seed 0: warning: {run}/metrics.csv holds 1 row for 2 epochs: written again from "
                    "last.pt's history"], logs
    assert (run / "metrics.csv").read_bytes() == whole
    assert _table_row(out).split(" | ")[:6] == table.split(" | ")[:6]  # model .. best acc and train s
    logs.clear()
    compare(["basic_cnn"], 1, base, out, log=logs.append)
    assert len(logs) == 1 and ": reused, final " in logs[0], logs


def test_a_run_another_process_holds_is_never_rewritten(tiny_idx, tmp_path, capsys):
    """The rows are written again by the resume, which holds the run's lock: a run another process holds (training
    it, writing its report) is refused as ever, its metrics.csv untouched."""
    out, base = tmp_path / "cmp", _cmp_base(tiny_idx)
    compare(["basic_cnn"], 1, base, out, log=lambda m: None)
    run = next(out.glob("basic_cnn-seed0-*"))
    _rows_lost(run)
    short = (run / "metrics.csv").read_bytes()
    with HeldElsewhere(run):
        capsys.readouterr()
        assert main(["train", "--resume", str(run), "--threads", "1", "--quiet"]) == 2
        assert "training now" in capsys.readouterr().err
        with pytest.raises(CnnlabError, match="training now"):
            compare(["basic_cnn"], 1, base, out, log=lambda m: None)
    assert (run / "metrics.csv").read_bytes() == short


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
