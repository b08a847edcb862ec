"""Signals that come after a run's last step (its final evaluation, summary and figures), in ``train`` and in
``compare``, and a second SIGTERM/SIGHUP that stops a run at once: never swallowed, never a bare "failed"."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

import cnnlab.compare
from cnnlab.cli import main
from cnnlab.compare import compare
from cnnlab.config import TrainConfig
from cnnlab.engine import train
from cnnlab.errors import Interrupted

QUIET = dict(quiet=True)


def cfg_for(tiny_idx, **kw) -> TrainConfig:
    base = dict(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=1, batch_size=32, device="cpu", lr=0.05,
                threads=1)
    return TrainConfig(**{**base, **kw})


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def signal_at(prefix: str, *signums: int):
    """A log that sends this process the signals at the first line that starts with ``prefix``."""
    sent = []

    def log(line: str) -> None:
        if str(line).startswith(prefix) and not sent:
            sent.append(line)
            for signum in signums:
                os.kill(os.getpid(), signum)

    return log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_final_evaluation_is_not_swallowed(tiny_idx, tmp_path, capsys, signum):
    """The run has trained its last step: it writes its result (status finished, summary.json), says so honestly,
    then stops with 128+signal (it finished with exit 0 before, the signal lost)."""
    run = tmp_path / "run"
    with pytest.raises(Interrupted) as caught:
        train(cfg_for(tiny_idx), out=run, log=signal_at("final test accuracy", signum), **QUIET)
    assert caught.value.exit_code == 128 + signum
    assert "its training has ended and its result is written" in str(caught.value)
    assert "--resume" not in str(caught.value)
    err = capsys.readouterr().err
    assert "the run's training has ended; writing its result, then stopping" in err
    assert "stopping after this step and saving the position" not in err
    assert status(run)["status"] == "finished" and (run / "summary.json").is_file()


def test_a_signal_during_the_final_evaluation_of_the_cli_exits_130(tiny_idx, tmp_path, capsys, monkeypatch):
    import cnnlab.engine

    real = cnnlab.engine.finish

    def finish(t, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # after the last step, before the test set's evaluation
        return real(t, *args, **kwargs)

    monkeypatch.setattr(cnnlab.engine, "finish", finish)
    run = tmp_path / "run"
    code = main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--epochs", "1", "--batch-size",
                 "32", "--device", "cpu", "--threads", "1", "--quiet", "--out", str(run)])
    assert code == 130
    assert status(run)["status"] == "finished"
    assert "cnnlab: SIGINT" in capsys.readouterr().err


def test_a_signal_while_a_compare_finishes_a_run_stops_the_compare(tiny_idx, tmp_path, monkeypatch):
    """The run that took it writes its result; the others are not started; the line says the same compare goes on
    (it trained every remaining run before)."""
    real, calls = cnnlab.compare.train, []

    def first_interrupted(cfg, **kwargs):
        calls.append(cfg.seed)
        if len(calls) == 1:
            kwargs["log"] = signal_at("final test accuracy", signal.SIGTERM)
        return real(cfg, **kwargs)

    monkeypatch.setattr(cnnlab.compare, "train", first_interrupted)
    out = tmp_path / "cmp"
    logs = []
    with pytest.raises(Interrupted) as caught:
        compare(["basic_cnn"], 3, cfg_for(tiny_idx), out, log=logs.append, quiet=True)
    assert caught.value.exit_code == 143 and calls == [0]
    assert "run the same compare again" in str(caught.value)
    assert [p.name.split("-")[1] for p in out.iterdir() if p.is_dir()] == ["seed0"]
    assert any("seed 0: trained, final" in m for m in logs)
    assert not (out / "comparison.md").exists()
    # the same compare reuses that run and trains the rest
    monkeypatch.setattr(cnnlab.compare, "train", real)
    logs.clear()
    compare(["basic_cnn"], 3, cfg_for(tiny_idx), out, log=logs.append, quiet=True)
    assert any("seed 0: reused" in m for m in logs) and (out / "comparison.md").is_file()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_second_signal_stops_at_once_and_the_run_stays_resumable(tiny_idx, tmp_path, signum):
    """A second SIGTERM/SIGHUP marked the run 'failed (143)'/'failed (129)' without a word; now as a double SIGINT:
    stopped, the resume command in the error and in status.json, exit 128+signal."""
    if signum == signal.SIGHUP and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        pytest.skip("SIGHUP is ignored here (nohup)")
    run = tmp_path / "run"
    cfg = cfg_for(tiny_idx, epochs=2, save_every=2)
    with pytest.raises(Interrupted) as caught:
        train(cfg, out=run, log=signal_at("epoch   1/2", signum, signum), **QUIET)
    assert caught.value.exit_code == 128 + signum
    assert f"cnnlab train --resume {run}" in str(caught.value) and "\n" not in str(caught.value)
    st = status(run)
    assert st["status"] == "stopped" and f"cnnlab train --resume {run}" in st["detail"]
    assert train(TrainConfig(threads=1), resume=run, quiet=True, log=lambda m: None).stopped == "finished"


def test_a_second_signal_before_any_checkpoint_says_to_start_again(tiny_idx, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Interrupted) as caught:
        train(cfg_for(tiny_idx, epochs=2), out=run, log=signal_at("epoch   1/2", signal.SIGTERM, signal.SIGTERM),
              **QUIET)
    assert caught.value.exit_code == 143 and "start it again" in str(caught.value)
    assert status(run)["status"] == "failed" and "start it again" in status(run)["detail"]


def test_a_signal_while_a_finished_run_is_resumed_says_it_writes_the_result(tiny_idx, tmp_path, capsys):
    """A resume with nothing to train: a signal during its final evaluation is not lost, nor described as a stop."""
    run = tmp_path / "run"
    train(cfg_for(tiny_idx), out=run, log=lambda m: None, **QUIET)
    capsys.readouterr()
    with pytest.raises(Interrupted) as caught:
        train(TrainConfig(threads=1), resume=run, log=signal_at("final test accuracy", signal.SIGINT), **QUIET)
    assert caught.value.exit_code == 130
    assert "the run's training has ended; writing its result" in capsys.readouterr().err
    assert status(run)["status"] == "finished"
