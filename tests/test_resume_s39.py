"""Resume with fewer epochs than a run stopped inside: ``--resume RUN --epochs 2`` of a run stopped in its third
epoch marked it "finished" at 2 epochs, its weights those of 2 epochs and 2 batches, and a later plain resume
trained on."""

from __future__ import annotations

import json
import re

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


def test_a_target_reached_at_the_step_limit_is_the_runs_reason_to_stop(tiny_idx, tmp_path):
    """A target met at the very step of --max-steps: the run was listed as stopped by the step limit, with a resume
    that trained nothing, and never said it met its target."""
    from cnnlab.runs import describe_run
    from tests.test_best_s39 import TARGET, cfg_for

    probe = train(cfg_for(tiny_idx, **TARGET), write=False, quiet=True, log=lambda m: None)
    lines: list[str] = []
    run = tmp_path / "m"
    res = train(cfg_for(tiny_idx, **TARGET, max_steps=probe.target["step"]), out=run, quiet=True, log=lines.append)
    assert res.stopped == "target" and any(line.startswith("reached ") for line in lines), lines
    assert describe_run(run)["status"] == "finished"


def test_a_run_that_meets_its_target_before_its_first_epoch_ends_draws_its_curves(tiny_idx, tmp_path):
    from tests.test_best_s39 import cfg_for

    run = tmp_path / "early"
    res = train(cfg_for(tiny_idx, epochs=3, lr=0.01, target_accuracy=5.0, evals_per_epoch=4), out=run, quiet=True,
                log=lambda m: None)
    assert res.target is not None and res.target["epoch"] < 1 and res.history == []
    assert (run / "curves.png").is_file()


def test_shortening_a_scheduled_run_on_resume_is_named_as_such(tiny_idx, tmp_path):
    run = tmp_path / "o"
    train(tiny_config(tiny_idx, epochs=3, schedule="onecycle", max_steps=2), out=run, quiet=True, log=lambda m: None)
    with pytest.raises(CnnlabError, match="onecycle learning-rate schedule was planned for 3 epochs and cannot be "
                                          "shortened"):
        train(tiny_config(tiny_idx), resume=run, changes={"epochs": 2}, quiet=True, log=lambda m: None)


def test_the_api_takes_a_run_or_a_path_as_teacher(finished, tiny_idx, tmp_path):
    import cnnlab

    run = cnnlab.load_run(finished)
    for teacher in (run, finished):
        res = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", epochs=1, max_steps=1, teacher=teacher,
                           out=tmp_path / f"s{type(teacher).__name__}", quiet=True)
        assert res.summary is not None


def test_a_run_stopped_on_its_target_refuses_other_epochs_and_keeps_its_status_on_resume(tiny_idx, tmp_path):
    """Found by probing (wflW): ``--resume RUN --epochs 9`` of a run that stopped on its --target-accuracy trained
    nothing but wrote ``"epochs": 9`` into config.json (its checkpoints kept 30; ``runs`` showed 3/9, ``--config RUN``
    re-ran 9 epochs), and any resume of it replaced status.json's "reached --target-accuracy 80" with ""."""
    from cnnlab.checkpoint import load_checkpoint
    from cnnlab.runs import describe_run
    from tests.test_best_s39 import TARGET, cfg_for

    run = tmp_path / "tg"
    first = train(cfg_for(tiny_idx, **TARGET), out=run, quiet=True, log=lambda m: None)
    assert first.stopped == "target"
    status = lambda: json.loads((run / "status.json").read_text())  # noqa: E731
    assert (status()["status"], status()["detail"]) == ("finished", "reached --target-accuracy 80")
    before = (run / "config.json").read_text(), (run / "last.pt").read_bytes()
    at = f"{first.target['accuracy']:.2f}% >= 80% at epoch {first.target['epoch']:.2f}"
    for epochs in (9, 40, 1):  # fewer, more, fewer than it has begun: the target is why it trains no further
        with pytest.raises(CnnlabError, match=rf"^--epochs {epochs}: {re.escape(str(run))} stopped when it reached its target "
                                              rf"\({at}\) and trains no further; drop --epochs {epochs} \(a resume "
                                              rf"re-evaluates it\), or start a new run with --epochs {epochs}$"):
            train(cfg_for(tiny_idx), resume=run, changes={"epochs": epochs}, quiet=True, log=lambda m: None)
        assert ((run / "config.json").read_text(), (run / "last.pt").read_bytes()) == before
    again = train(cfg_for(tiny_idx), resume=run, changes={"epochs": 30}, quiet=True, log=lambda m: None)  # its own
    assert again.stopped == "nothing to train" and again.target == first.target
    assert (status()["status"], status()["detail"]) == ("finished", "reached --target-accuracy 80")
    assert json.loads((run / "config.json").read_text())["config"]["epochs"] == 30
    assert load_checkpoint(run / "last.pt")["config"]["epochs"] == 30
    assert describe_run(run)["detail"] == "reached --target-accuracy 80"


def test_a_refused_resume_says_no_ema_warning_of_the_epochs_it_refuses(tiny_idx, tmp_path):
    """Found by probing (wflW): ``--resume RUN --epochs 1`` of a 3-epoch --ema 0.9 run first warned "--ema 0.9
    averages over about 10 steps and this run has 32: ... or more epochs", then refused the 1 epoch."""
    run, said = tmp_path / "ew", []
    train(tiny_config(tiny_idx, epochs=6, ema=0.9, max_steps=20), out=run, quiet=True, log=said.append)
    assert not [line for line in said if line.startswith("warning: --ema")]  # 48 steps: the average forgets
    said.clear()
    with pytest.raises(CnnlabError, match=r"^--epochs 2: .* has already trained 2 epochs and 4 batches of epoch 3; "
                                          r"give at least 3$"):
        train(tiny_config(tiny_idx), resume=run, changes={"epochs": 2}, quiet=True, log=said.append)
    assert said == []
