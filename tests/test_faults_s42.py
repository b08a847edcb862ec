"""Faults found by the testers of session 42 (cncC, docD): a run read between its epoch's two saves (last.pt, then
best.pt) was said to have lost best.pt; a file system out of inodes was said to be out of space; a SIGKILLed
``analyze`` left its temp file in a results folder nothing locks again; ``cnnlab runs`` named a flag that does not
exist. docs/reliability.md lists them."""

from __future__ import annotations


import pytest

import cnnlab
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.engine import train
from cnnlab.errors import CheckpointError

from conftest import HeldElsewhere

QUIET = dict(quiet=True, log=lambda m: None)
ARGS = ["--model", "basic_cnn", "--batch-size", "32", "--lr", "0.05", "--device", "cpu", "--threads", "1", "--quiet"]


def cfg_for(tiny_idx, **kw) -> TrainConfig:
    base = dict(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=1, batch_size=32, device="cpu", lr=0.05)
    return TrainConfig(**{**base, **kw})


# ----------------------------------------------------------------------------- 1: between an epoch's two saves


def test_a_run_between_its_epochs_two_saves_is_training_not_a_run_that_lost_its_best_pt(tiny_idx, tmp_path, capsys):
    """In its first epoch's end, between last.pt and best.pt, a run that trains was told to have lost its best.pt
    to a full disk or a kill, and to resume (which is refused: it trains)."""
    run = tmp_path / "runs" / "r"
    train(cfg_for(tiny_idx), out=run, **QUIET)
    for name in ("best.pt", "best.pt.sha256", "status.json", "summary.json"):  # last.pt and metrics.csv written
        (run / name).unlink()
    with HeldElsewhere(run):
        for command in (["evaluate", str(run), "--checkpoint", "best"], ["export", str(run), "--checkpoint", "best"]):
            assert main(command) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "it is training now and has not written best.pt yet" in err, err
            assert "--checkpoint last" in err and "resume" not in err and "lost" not in err
        with pytest.raises(CheckpointError, match="it is training now and has not written best.pt yet") as caught:
            cnnlab.load_run(run).checkpoint("best")
        assert "resume" not in str(caught.value)
    assert main(["evaluate", str(run), "--checkpoint", "best"]) == 2  # no process holds it: the save was lost
    err = capsys.readouterr().err
    assert "its best epoch's save was lost" in err and f"cnnlab train --resume {run}" in err
