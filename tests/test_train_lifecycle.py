"""A training run's lifecycle as a tester found it: a run stopped by --max-steps and resumed to its end, whose
config.json still held the limit (its --config re-run stopped where the first part had); a full disk past the first
checkpoint, whose error said "run it again" when only a resume works; and eval_limit's cut evaluations shown beside
the whole test set's figure as its equal. docs/reliability.md lists them."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest

import cnnlab.checkpoint
from cnnlab.checkpoint import load_checkpoint, tensor_digest
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.engine import train
from cnnlab.errors import Interrupted, WriteError
from cnnlab.fileio import write_error

QUIET = dict(quiet=True, log=lambda m: None)
#: tiny_idx: 256 train images, batches of 32: 8 steps an epoch; 64 test images.
ARGS = ["--model", "basic_cnn", "--batch-size", "32", "--lr", "0.05", "--device", "cpu", "--threads", "1", "--quiet"]


def cfg_for(tiny_idx, **kw) -> TrainConfig:
    base = dict(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=2, batch_size=32, device="cpu", lr=0.05, threads=1)
    return TrainConfig(**{**base, **kw})


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def recorded_limit(run: Path) -> tuple[int, int]:
    """The max_steps of config.json and of last.pt."""
    return (json.loads((run / "config.json").read_text())["config"]["max_steps"],
            load_checkpoint(run / "last.pt")["config"]["max_steps"])


def weights_digest(run: Path) -> str:
    return tensor_digest(load_checkpoint(run / "last.pt")["state_dict"])


# ----------------------------------------------------------------------------- 1: --config of a resumed run


@pytest.mark.parametrize("how", ["cli", "compare"])
def test_a_config_rerun_of_a_run_stopped_by_max_steps_then_resumed_to_its_end_reproduces_it(tiny_idx, tmp_path, how):
    """`train --max-steps 20`, `train --resume` (to the end, no limit), `train --config RUN`: config.json still held
    `"max_steps": 20`, and the re-run stopped at step 20 (41.80% against the run's 69.00%). compare resumes a run
    the same way (no --max-steps given)."""
    run, rerun = tmp_path / "e2", tmp_path / "e2c"
    assert main(["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--epochs", "2", "--max-steps", "11",
                 "--out", str(run)]) == 0
    assert status(run)["status"] == "stopped" and recorded_limit(run) == (11, 11)
    if how == "cli":
        assert main(["train", "--resume", str(run), "--threads", "1", "--quiet"]) == 0
    else:  # compare's resume: the engine's, with no settings given (but the threads, which it takes from its flag)
        assert train(TrainConfig(threads=1), resume=run, **QUIET).stopped == "finished"
    assert status(run)["status"] == "finished"
    assert recorded_limit(run) == (0, 0)  # what ran: no limit stopped the run
    assert TrainConfig.from_file(run / "config.json").max_steps == 0
    assert main(["train", "--config", str(run), "--out", str(rerun), "--quiet"]) == 0
    assert status(rerun)["status"] == "finished"
    assert load_checkpoint(rerun / "last.pt")["train_state"]["step"] == 16
    assert weights_digest(rerun) == weights_digest(run)
    # a finished run resumed again (nothing to train) keeps its record, whatever limit this process has
    assert main(["train", "--resume", str(run), "--max-steps", "3", "--quiet"]) == 0
    assert recorded_limit(run) == (0, 0)


def _interrupt_at(prefix: str):
    """A log that sends this process SIGINT at the line that starts with ``prefix`` (the run stops a step later)."""
    def log(line: str) -> None:
        if line.startswith(prefix):
            os.kill(os.getpid(), signal.SIGINT)

    return log


def test_a_resume_keeps_the_runs_step_limit_until_it_trains_past_it(tiny_idx, tmp_path):
    """What the earlier fix protects stays (an interrupted run's limit in its resume command, and in config.json
    while a resume has not trained past it; a resume given --max-steps records it); a resume at or past its limit,
    which trains nothing, records no other (it recorded --max-steps 3 of a run at step 17)."""
    run = tmp_path / "run"
    with pytest.raises(Interrupted, match=f"continue with: cnnlab train --resume {run} --max-steps 20$"):
        train(cfg_for(tiny_idx, epochs=4, max_steps=20), out=run, quiet=True, silent=True,
              log=_interrupt_at("epoch   1/"))
    with pytest.raises(Interrupted):  # no limit given, interrupted before the run's: the run keeps its own
        train(TrainConfig(threads=1), resume=run, quiet=True, silent=True, log=_interrupt_at("epoch   2/"))
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 17 and recorded_limit(run) == (20, 20)
    assert train(TrainConfig(max_steps=3), resume=run, changes={"max_steps": 3}, **QUIET).stopped == "step limit"
    assert recorded_limit(run) == (20, 20)  # at step 17: a limit of 3 is not what ran
    assert train(TrainConfig(max_steps=26), resume=run, changes={"max_steps": 26}, **QUIET).stopped == "step limit"
    assert recorded_limit(run) == (26, 26)
    assert train(TrainConfig(), resume=run, **QUIET).stopped == "finished"
    assert recorded_limit(run) == (0, 0)


# ----------------------------------------------------------------------------- 2: a full disk past a checkpoint


def _full_disk_for(monkeypatch, name: str) -> None:
    """Writes of the file ``name`` fail as fileio says a full disk does."""
    real = cnnlab.checkpoint.atomic_write_bytes

    def write(path, data):
        if Path(path).name == name:
            raise write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        real(path, data)

    monkeypatch.setattr(cnnlab.checkpoint, "atomic_write_bytes", write)


def test_a_full_disk_after_the_first_checkpoint_names_the_resume_that_continues_the_run(tiny_idx, tmp_path,
                                                                                      monkeypatch, capsys):
    """The disk filled as best.pt was written after epoch 1 (last.pt written): the error and status.json said
    "free some disk space and run it again", and running it again was refused (the folder holds a run)."""
    run = tmp_path / "r"
    command = ["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--epochs", "2", "--out", str(run)]
    _full_disk_for(monkeypatch, "best.pt")
    assert main(command) == 2
    err = capsys.readouterr().err
    how = f"free some disk space, then continue with: cnnlab train --resume {run}"
    assert err.count("\n") == 1 and err.rstrip().endswith(how) and "run it again" not in err, err
    assert f"cannot write {run / 'best.pt'}: {os.strerror(errno.ENOSPC)}" in err
    assert status(run)["status"] == "failed" and status(run)["detail"].endswith(how)
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--threads", "1", "--quiet"]) == 0  # the way it names works
    straight = train(cfg_for(tiny_idx), out=tmp_path / "straight", **QUIET)
    assert load_checkpoint(run / "last.pt")["train_state"]["history"][-1]["test_acc"] == straight.final.accuracy
    assert weights_digest(run) == weights_digest(tmp_path / "straight")
    assert status(run)["status"] == "finished"


def test_a_full_disk_names_the_resume_with_its_step_limit_and_without_a_checkpoint_the_same_command(
        tiny_idx, tmp_path, monkeypatch):
    """As an interrupt does: the command carries the run's --max-steps; with no checkpoint yet "run it again" is
    still what works (the same command starts the run over)."""
    run = tmp_path / "r"
    _full_disk_for(monkeypatch, "best.pt")
    with pytest.raises(WriteError) as caught:
        train(cfg_for(tiny_idx, epochs=3, max_steps=20), out=run, **QUIET)
    assert str(caught.value).endswith(f"then continue with: cnnlab train --resume {run} --max-steps 20")
    assert caught.value.errno == errno.ENOSPC
    fresh = tmp_path / "fresh"
    _full_disk_for(monkeypatch, "last.pt")
    with pytest.raises(WriteError, match="free some disk space and run it again"):
        train(cfg_for(tiny_idx), out=fresh, **QUIET)
    assert "run it again" in status(fresh)["detail"]
    monkeypatch.undo()
    assert train(cfg_for(tiny_idx), out=fresh, **QUIET).stopped == "finished"  # the same command


# ----------------------------------------------------------------------------- 3: eval_limit's figures


def test_a_figure_of_a_cut_evaluation_says_so_where_it_is_shown(tiny_idx, tmp_path):
    """eval_limit=50: `final test accuracy 69.00% (best epoch 76.00%)`, the 76% of 50 images beside the whole test
    set's 69% as its equal."""
    lines: list[str] = []
    res = train(cfg_for(tiny_idx, eval_limit=20), out=tmp_path / "el", quiet=True, log=lines.append)
    note = " on the first 20 test images"
    final = next(line for line in lines if line.startswith("final test accuracy"))
    best = f"(best epoch {res.best_accuracy:.2f}%{note})"
    assert final.startswith(f"final test accuracy {res.final.accuracy:.2f}% {best}")
    assert res.final.n == 64 and res.best_accuracy == max(r["test_acc"] for r in res.history)
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and all(f"test_acc {r['test_acc']:.2f}%{note}  " in line
                                    for line, r in zip(epochs, res.history))
    lines.clear()
    train(cfg_for(tiny_idx, eval_limit=20, max_steps=11), write=False, report=False, quiet=True, log=lines.append)
    assert any(line.startswith("stopped at step 11") and line.endswith(note) for line in lines), lines
    assert any(line.startswith("final test accuracy") and f"%{note} (best epoch" in line for line in lines), lines
    lines.clear()  # a limit that takes the whole split cuts nothing, and says nothing
    train(cfg_for(tiny_idx, epochs=1, eval_limit=64), write=False, quiet=True, log=lines.append)
    assert not any("on the first" in line for line in lines)
    lines.clear()
    train(cfg_for(tiny_idx, epochs=1, eval_limit=10, val_split=0.25), write=False, quiet=True, log=lines.append)
    assert any(line.startswith("final test accuracy") and "(best epoch" in line
               and line.endswith(" on the first 10 validation images)") for line in lines), lines
    # cnnlab runs: the run's best of 20 images is marked, and the mark said under the table
    from cnnlab.api import list_runs
    from cnnlab.cli.runs import format_runs

    (row,) = list_runs(tmp_path)
    assert row["eval_limit"] == 20 and row["best_acc"] == res.best_accuracy
    table = format_runs([row])
    assert f"{res.best_accuracy:.2f}% test+" in table and "+ best of evaluations cut to the first images" in table
