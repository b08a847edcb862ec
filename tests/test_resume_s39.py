"""Resume with fewer epochs than a run stopped inside: ``--resume RUN --epochs 2`` of a run stopped in its third
epoch marked it "finished" at 2 epochs, its weights those of 2 epochs and 2 batches, and a later plain resume
trained on."""

from __future__ import annotations

import pytest

from cnnlab.engine import train
from cnnlab.errors import CnnlabError
from tests.conftest import tiny_config


def test_resume_refuses_fewer_epochs_than_the_run_has_begun(tiny_idx, tmp_path):
    run = tmp_path / "s1"
    cfg = tiny_config(tiny_idx, epochs=3)
    steps = train(cfg, write=False, quiet=True, log=lambda m: None).history[0]["step"]  # steps an epoch
    train(tiny_config(tiny_idx, epochs=3, max_steps=2 * steps + 2), out=run, quiet=True, log=lambda m: None)
    before = (run / "last.pt").read_bytes(), (run / "config.json").read_text()
    with pytest.raises(CnnlabError, match=r"--epochs 2: .* has already trained 2 epochs and 2 batches of epoch 3; "
                                          r"give at least 3"):
        train(tiny_config(tiny_idx), resume=run, changes={"epochs": 2}, quiet=True, log=lambda m: None)
    assert ((run / "last.pt").read_bytes(), (run / "config.json").read_text()) == before
    res = train(tiny_config(tiny_idx), resume=run, changes={"max_steps": 0}, quiet=True, log=lambda m: None)
    assert len(res.history) == 3  # the same run, resumed with as many epochs as it has begun, goes on


def test_a_target_reached_after_a_resume_says_its_seconds_are_the_resumed_process(tiny_idx, tmp_path):
    """summary.json's target held ``seconds_since_start`` 0.98 beside ``train_seconds`` 1.20: the first is this
    process's (a resume's), the second the run's; the record and the line say so."""
    from tests.test_best_s39 import TARGET, cfg_for

    run, lines = tmp_path / "tg", []
    train(cfg_for(tiny_idx, **TARGET, max_steps=1), out=run, quiet=True, log=lambda m: None)
    res = train(cfg_for(tiny_idx), resume=run, changes={"max_steps": 0}, quiet=True, log=lines.append)
    assert res.target is not None and res.target["since_resumed"] is True
    assert any(line.startswith("reached ") and line.endswith("s since the resume") for line in lines), lines
    lines.clear()
    fresh = train(cfg_for(tiny_idx, **TARGET), write=False, quiet=True, log=lines.append)
    assert fresh.target is not None and "since_resumed" not in fresh.target
    assert any(line.startswith("reached ") and line.endswith("s since start") for line in lines), lines
