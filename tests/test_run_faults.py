"""Faults of training runs and their folders found by testers: a full disk or a kill between an epoch's two saves
(best.pt lost), a disk that fills before the first checkpoint, a folder moved while its run trains, --tensorboard
without its package, Ctrl-C and dead peers under torchrun, splits smaller than the group, --max-steps on an
interrupted run, messages for runs that have not saved yet, a re-run whose teacher changed, and a run's data_dir
beside another dataset. docs/reliability.md lists them."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cnnlab.checkpoint
from cnnlab.checkpoint import load_checkpoint, save_checkpoint, sidecar
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.distributed import Dist, PeerLost
from cnnlab.engine import train
from cnnlab.errors import CheckpointError, Interrupted, RunError, WriteError
from cnnlab.fileio import sha256_file
from cnnlab.runs import RunLock, describe_run, read_metrics

from conftest import HeldElsewhere, write_idx_dataset

HERE = Path(__file__).parent
QUIET = dict(quiet=True, log=lambda m: None)
ARGS = ["--model", "basic_cnn", "--batch-size", "32", "--lr", "0.05", "--device", "cpu", "--threads", "1", "--quiet"]


def cfg_for(tiny_idx, **kw) -> TrainConfig:
    base = dict(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=2, batch_size=32, device="cpu", lr=0.05)
    return TrainConfig(**{**base, **kw})


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def _full_disk_for(monkeypatch, name: str) -> None:
    """Writes of the file ``name`` fail as on a full disk (its sidecar, written first, still goes through)."""
    real = cnnlab.checkpoint.atomic_write_bytes

    def write(path, data):
        if Path(path).name == name:
            raise WriteError(f"cannot write {path}: No space left on device; free some disk space and run it again",
                             errno.ENOSPC)
        real(path, data)

    monkeypatch.setattr(cnnlab.checkpoint, "atomic_write_bytes", write)


# ----------------------------------------------------------------------------- 1: best.pt lost


@pytest.mark.parametrize("epochs", [1, 2])
def test_a_best_pt_lost_to_a_full_disk_is_written_by_the_resume(tiny_idx, tmp_path, monkeypatch, epochs):
    """The disk filled while best.pt was written (its sidecar listed a file that never came): last.pt had recorded
    the best accuracy, so the resume (of a finished run: nothing to train) never wrote best.pt again."""
    run = tmp_path / "run"
    _full_disk_for(monkeypatch, "best.pt")
    with pytest.raises(WriteError):
        train(cfg_for(tiny_idx, epochs=epochs, threads=1), out=run, **QUIET)
    monkeypatch.undo()
    assert not (run / "best.pt").exists() and sidecar(run / "best.pt").exists()
    train(TrainConfig(threads=1), resume=run, **QUIET)
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert best["train_state"]["best"] == last["train_state"]["best"] is not None
    assert best["train_state"]["history"][-1]["test_acc"] == last["train_state"]["best"]
    assert status(run)["status"] == "finished" and status(run)["detail"] == ""


def test_a_kill_between_an_epochs_two_saves_leaves_a_best_pt_the_resume_writes(tiny_idx, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(HERE / "fault_worker.py"), "best.pt:before-rename:1", "--", "train", "--dataset",
           f"idx:{tiny_idx}", *ARGS, "--epochs", "1", "--out", str(run)]
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == -signal.SIGKILL
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert all(torch.equal(best["state_dict"][k], v) for k, v in last["state_dict"].items())


def test_a_best_epoch_whose_weights_are_gone_is_said_and_best_pt_comes_from_the_next(tiny_idx, tmp_path, capsys):
    """last.pt is past the best epoch (here: inside the next one): its weights cannot be had again."""
    run = tmp_path / "run"
    train(cfg_for(tiny_idx, max_steps=12), out=run, **QUIET)  # 8 steps an epoch: epoch 1 saved, stopped in epoch 2
    (run / "best.pt").unlink()  # its sidecar stays, naming a file that is not there
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "has no best.pt: its best epoch (1, " in out and "best.pt will hold the best of the epochs from here on" in out
    best = load_checkpoint(run / "best.pt")  # the sidecar was replaced with the new file's
    assert best["train_state"]["epoch"] == 2 and status(run)["status"] == "finished"


# ----------------------------------------------------------------------------- 2: no checkpoint yet


def test_a_run_whose_disk_filled_before_its_first_checkpoint_starts_over_with_the_same_command(
        tiny_idx, tmp_path, monkeypatch, capsys):
    run = tmp_path / "z"
    command = ["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--epochs", "2", "--out", str(run)]
    _full_disk_for(monkeypatch, "last.pt")
    assert main(command) == 2
    assert "run it again" in capsys.readouterr().err
    monkeypatch.undo()
    assert {"config.json", "metrics.csv", "last.pt.sha256", "status.json"} <= {p.name for p in run.iterdir()}
    assert main(["train", "--resume", str(run), "--quiet"]) == 2  # nothing to resume: it says what works
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"start it again: cnnlab train --config {run} --out {run}" in err
    assert main(command) == 0  # the error said "run it again": it works
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")] == [1, 2]
    assert status(run)["status"] == "finished" and load_checkpoint(run / "last.pt")["train_state"]["epoch"] == 2
    # a run with a checkpoint is still refused, and so is a folder another process trains in
    capsys.readouterr()
    assert main(command) == 2 and "already holds a run" in capsys.readouterr().err
    for name in ("last.pt", "last.pt.sha256", "best.pt", "best.pt.sha256", "summary.json"):
        (run / name).unlink()
    with HeldElsewhere(run):
        assert main(command) == 2 and "in use by another cnnlab process" in capsys.readouterr().err
    assert main(["train", "--config", str(run), "--out", str(run), "--quiet"]) == 0  # the command the resume named


# ----------------------------------------------------------------------------- 3: a folder moved while training


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_a_run_whose_folder_is_moved_or_deleted_stops_at_its_next_write(tiny_idx, tmp_path, how):
    run, moved = tmp_path / "r" / "ren", tmp_path / "r" / "ren2"

    def log(line: str) -> None:  # the epoch's line comes before its metrics.csv and checkpoints
        if line.startswith("epoch   2/3"):
            shutil.move(run, moved) if how == "moved" else shutil.rmtree(run)

    with pytest.raises(RunError) as caught:
        train(cfg_for(tiny_idx, epochs=3), out=run, quiet=True, log=log)
    msg = str(caught.value)
    assert "\n" not in msg and not run.exists()  # nothing re-created the old path
    if how == "deleted":
        assert "the run's folder was moved or deleted while its run trained" in msg
        return
    assert f"was moved to {moved} while its run trained" in msg and f"cnnlab train --resume {moved}" in msg
    assert [r["epoch"] for r in read_metrics(moved / "metrics.csv")] == [1]  # nothing of epoch 2 written
    # nothing written after the move: status.json is the "running" the run wrote as it began (atkL, s42), which
    # `cnnlab runs` reads as a process gone without a word
    assert json.loads((moved / "status.json").read_text())["status"] == "running"
    assert describe_run(moved)["status"] == "stopped"
    assert train(TrainConfig(), resume=moved, **QUIET).stopped == "finished"


# ----------------------------------------------------------------------------- 4: --tensorboard


def test_tensorboard_without_its_package_is_refused_before_any_folder_is_touched(tiny_idx, tmp_path, monkeypatch,
                                                                                  capsys):
    half = tmp_path / "half"
    train(cfg_for(tiny_idx, max_steps=3), out=half, **QUIET)
    before = {p.name: p.read_bytes() for p in half.iterdir() if p.is_file() and p.name != ".lock"}
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    run = tmp_path / "run"
    assert main(["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--epochs", "1", "--tensorboard",
                 "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tensorboard needs the tensorboard package" in err and not run.exists()
    assert main(["train", "--resume", str(half), "--tensorboard", "--quiet"]) == 2
    assert "--tensorboard needs the tensorboard package" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in half.iterdir() if p.is_file() and p.name != ".lock"} == before


# ----------------------------------------------------------------------------- 5: status texts


def test_an_interrupt_before_the_first_checkpoint_says_to_start_again_not_to_resume(tiny_idx, tmp_path):
    run = tmp_path / "run"

    def log(line: str) -> None:  # Ctrl-C as the run starts (under torchrun: anywhere, before this fix)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(tiny_idx), out=run, quiet=True, log=log)
    got = status(run)
    assert got["status"] == "failed" and "no checkpoint was saved" in got["detail"] and "start it again" in got["detail"]
    assert describe_run(run)["status"] == "failed"


def test_a_lost_peer_says_whether_torchrun_restarts_the_group(tmp_path):
    from cnnlab.engine import FailureRecord, _peer_lost_explained
    from cnnlab.runs import RunPlan

    gloo = RuntimeError("[/x/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:9607. More.")
    with pytest.raises(PeerLost) as none, Dist(world_size=2, initialised=True).errors_explained():
        raise gloo
    assert "torchrun does not restart the group (--max-restarts 0)" in str(none.value) and not none.value.restarting
    assert "resumes from its last checkpoint" not in str(none.value)
    with pytest.raises(PeerLost) as some, Dist(world_size=2, initialised=True, restart_count=1,
                                               max_restarts=3).errors_explained():
        raise gloo
    assert "torchrun restarts the group (--max-restarts 3: 2 restarts left)" in str(some.value)
    # the run's folder says what works then: its resume command, or that nothing was saved
    run = tmp_path / "run"
    run.mkdir()
    recorder = FailureRecord(RunPlan(run, None), armed=True, max_steps=7)
    for saved, tail in ((False, "no checkpoint was saved, so there is nothing to resume: start it again (the same command)"),
                        (True, f"continue with: cnnlab train --resume {run} --max-steps 7")):
        if saved:
            (run / "last.pt").write_bytes(b"")
        with pytest.raises(PeerLost) as caught:
            with recorder_context(recorder), _peer_lost_explained(recorder):
                raise PeerLost(str(none.value))
        assert str(caught.value).endswith(tail) and status(run)["detail"].endswith(tail)


class recorder_context:
    def __init__(self, recorder):
        self.recorder = recorder

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.recorder(*exc)


# ----------------------------------------------------------------------------- 7: --max-steps


def test_an_interrupted_run_with_a_step_limit_keeps_it_in_its_resume_command_and_config(tiny_idx, tmp_path):
    run = tmp_path / "ms5"

    def log(line: str) -> None:
        if line.startswith("epoch   1/"):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as caught:
        train(cfg_for(tiny_idx, epochs=4, max_steps=20), out=run, quiet=True, silent=True, log=log)
    assert f"continue with: cnnlab train --resume {run} --max-steps 20" in str(caught.value)
    assert status(run)["detail"] == f"interrupted: continue with: cnnlab train --resume {run} --max-steps 20"
    res = train(TrainConfig(max_steps=20), resume=run, changes={"max_steps": 20}, **QUIET)
    assert res.stopped == "step limit" and res.history[-1]["step"] == 16
    # no limit given: this process trains on, to the run's end, past its limit of 20 steps: what ran is recorded, no
    # limit, so that --config RUN re-runs the whole run (tests/test_train_lifecycle.py)
    train(TrainConfig(), resume=run, **QUIET)
    assert json.loads((run / "config.json").read_text())["config"]["max_steps"] == 0
    assert load_checkpoint(run / "last.pt")["config"]["max_steps"] == 0
    assert TrainConfig.from_file(run / "config.json").max_steps == 0  # what --config RUN re-runs


# ----------------------------------------------------------------------------- 8: messages before a checkpoint


def test_a_run_that_has_saved_nothing_yet_is_named_for_what_it_is(tiny_idx, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    live = tmp_path / "runs" / "live"
    live.mkdir(parents=True)
    (live / "config.json").write_text(json.dumps({"config": cfg_for(tiny_idx).to_dict()}))
    with RunLock(live):
        for command in (["evaluate", "latest"], ["export", str(live)], ["predict", str(live), "x.png"]):
            assert main(command) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "it is still training and has saved no checkpoint yet" in err, err
    half = tmp_path / "half"
    train(cfg_for(tiny_idx, max_steps=3), out=half, **QUIET)  # last.pt inside the first epoch
    assert main(["export", str(half), "--checkpoint", "best"]) == 2
    assert "no epoch has ended yet, so there is no best.pt: use --checkpoint last" in capsys.readouterr().err
    (half / "last.pt").unlink()  # it did save one (its summary.json remains): deleted, not never saved (srvS, s43)
    with pytest.raises(CheckpointError, match=r"its checkpoints \(last.pt, best.pt\) were deleted or moved"):
        cnnlab.checkpoint.resolve_checkpoint(half)


# ----------------------------------------------------------------------------- 9: a re-run's teacher


def test_a_rerun_of_a_distilled_run_refuses_a_teacher_that_changed_since(tiny_idx, tmp_path, capsys):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    train(cfg_for(tiny_idx, epochs=1, seed=5), out=teacher, **QUIET)
    train(cfg_for(tiny_idx, epochs=1, teacher=str(teacher)), out=student, **QUIET)
    assert main(["train", "--config", str(student), "--out", str(tmp_path / "same"), "--quiet"]) == 0
    train(TrainConfig(), resume=teacher, changes={"epochs": 2}, **QUIET)  # the teacher trains on
    for record in ("config.json", "teacher.pt"):  # a run written before config.json held the hash: its copy's
        if record == "teacher.pt":
            data = json.loads((student / "config.json").read_text())
            assert data.pop("teacher")["sha256"] == sha256_file(student / "teacher.pt")
            (student / "config.json").write_text(json.dumps(data))
        capsys.readouterr()
        assert main(["train", "--config", str(student), "--out", str(tmp_path / f"re-{record}"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is not the file the run learned from" in err
        assert f"--teacher {student / 'teacher.pt'}" in err and f"--teacher {teacher / 'last.pt'}" in err
    assert main(["train", "--config", str(student), "--teacher", str(student / "teacher.pt"),
                 "--out", str(tmp_path / "copy"), "--quiet"]) == 0


# ----------------------------------------------------------------------------- 10: a run's data_dir


def _recorded(run: Path, **config) -> None:
    """Rewrite the run's last.pt (and config.json) as a run that recorded these settings."""
    ckpt = load_checkpoint(run / "last.pt")
    ckpt["config"].update(config)
    save_checkpoint(run / "last.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    data = json.loads((run / "config.json").read_text())
    data["config"].update(config)
    (run / "config.json").write_text(json.dumps(data))


def test_a_runs_data_dir_goes_with_its_own_dataset_only(tiny_idx, tmp_path):
    from cnnlab.evaluation import open_subject
    from cnnlab.export import sample_inputs

    run = tmp_path / "run"
    train(cfg_for(tiny_idx, epochs=1), out=run, **QUIET)
    other = write_idx_dataset(tmp_path / "other", seed=3)
    _recorded(run, dataset="mnist", data_dir=str(tmp_path / "mnist-files"))  # trained with --data-dir
    assert open_subject(run, dataset=f"idx:{other}").data.name.startswith("idx:")
    state = load_checkpoint(run / "last.pt")
    assert sample_inputs(state, 4, dataset=f"idx:{other}").shape == (4, 1, 28, 28)


def test_an_old_run_that_recorded_a_data_dir_beside_its_idx_dataset_resumes(tiny_idx, tmp_path):
    run = tmp_path / "run"
    train(cfg_for(tiny_idx, max_steps=3), out=run, **QUIET)
    _recorded(run, data_dir=str(tmp_path / "somewhere"))
    assert train(TrainConfig(), resume=run, **QUIET).stopped == "finished"
    assert TrainConfig.from_file(run / "config.json").data_dir is None


# ----------------------------------------------------------------------------- torchrun (5, 6)


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]


def test_ctrl_c_under_torchrun_saves_the_position_and_the_resume_ends_like_an_uninterrupted_run(tiny_idx, tmp_path):
    """Each rank printed only 'cnnlab: interrupted', nothing was saved, and the run was listed as resumable."""
    from test_distributed import finish, torchrun

    args = ["-m", "cnnlab", "train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--epochs", "40"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    finish(torchrun(2, [*args, "--out", str(ref)]))
    proc = torchrun(2, [*args, "--out", str(run)])
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (run / "metrics.csv").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # Ctrl-C reaches the agent, which passes it on to its workers
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "position saved in" in out, out[-3000:]
    assert f"continue with: cnnlab train --resume {run}" in out and "rank 0 saves the position" in out
    assert status(run)["status"] == "stopped", status(run)
    step = load_checkpoint(run / "last.pt")["train_state"]["step"]
    assert 0 < step < 320 and (step % 10 == 0 or step % 8 == 0)  # the ranks stopped together at a check
    finish(torchrun(2, ["-m", "cnnlab", "train", "--resume", str(run), "--threads", "1", "--quiet"]))
    assert _strip(read_metrics(run / "metrics.csv")) == _strip(read_metrics(ref / "metrics.csv"))
    a, b = load_checkpoint(ref / "last.pt")["state_dict"], load_checkpoint(run / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_splits_smaller_than_the_group_leave_a_rank_without_images_and_the_run_goes_on(tmp_path):
    """One test image (and one validation image) for two processes: one rank's shard is empty, and it failed with
    'the test split is empty' while rank 0 recorded 'lost contact'."""
    from test_distributed import finish, torchrun

    data = write_idx_dataset(tmp_path / "small", n_train=64, n_test=1)
    run = tmp_path / "run"
    out = finish(torchrun(2, ["-m", "cnnlab", "train", "--dataset", f"idx:{data}", *ARGS, "--epochs", "1",
                              "--val-split", "0.016", "--out", str(run)]))
    assert "test_acc" in out and status(run)["status"] == "finished", out[-3000:]
    (row,) = read_metrics(run / "metrics.csv")
    assert row["val_acc"] in (0.0, 100.0)
    assert json.loads((run / "summary.json").read_text())["accuracy"] in (0.0, 100.0)
