"""Races on a run folder between two processes (probe many, s47: D1-D3), fixed by helper lockF: each test of a defect
fails on the code before (the two of what still holds, a lock refused by a full disk and a new folder, pass on both).
The other process's state is made to appear at the exact point of the race (a hook on the step before it), not by
timing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import cnnlab.engine as engine
from cnnlab.cli import main
from cnnlab.engine import START_AGAIN, train
from cnnlab.errors import RunBusy, RunError, WriteError
from cnnlab.runs import ANALYSIS_LOCK

from conftest import HeldElsewhere, one_line, tiny_config

QUIET = dict(quiet=True, log=lambda m: None)


def _flags(tiny_idx: Path, out: Path) -> list[str]:
    return ["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--batch-size", "32", "--max-steps", "2",
            "--threads", "1", "--quiet", "--device", "cpu", "--out", str(out)]


def _then(monkeypatch, name: str, after) -> None:
    """``engine.<name>`` runs as it does, then ``after(its result)``: what another process did at that moment."""
    real = getattr(engine, name)

    def hooked(*args, **kwargs):
        result = real(*args, **kwargs)
        after(result)
        return result

    monkeypatch.setattr(engine, name, hooked)


def test_a_train_refused_by_the_lock_leaves_the_folder_another_process_made(tiny_idx, tmp_path, monkeypatch, capsys):
    """D1. A train that found --out o not there (plan_run: "made by this command"), then was refused o's lock
    because another train had made o and held it since, removed o (its .lock and "running" status.json) on the
    way out: the other run trained on and died at its save ("the run's folder was moved or deleted")."""
    out, held = tmp_path / "o", []

    def other_takes_it(plan) -> None:  # the other train makes o, locks it and says it is running
        held.append(HeldElsewhere(out).__enter__())
        (out / "status.json").write_text(json.dumps({"status": "running"}))

    _then(monkeypatch, "plan_run", other_takes_it)
    try:
        assert main(_flags(tiny_idx, out)) != 0
        assert "is in use by another cnnlab process" in one_line(capsys)
        assert sorted(os.listdir(out)) == [".lock", "status.json"]  # the other run's folder, as it left it
    finally:
        for other in held:
            other.release()


def test_a_train_that_cannot_write_its_lock_still_removes_the_folder_it_made(tiny_idx, tmp_path, monkeypatch):
    """D1's fix keeps what was right: a lock refused for another reason than another holder (a full disk as the pid
    is written) leaves no folder of the run's own behind."""
    import errno

    out = tmp_path / "new" / "o"

    def no_room(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", no_room)
    with pytest.raises(WriteError, match="No space left"):
        train(tiny_config(tiny_idx, max_steps=1), out=out, **QUIET)
    assert not (tmp_path / "new").exists()


def test_an_analysis_refused_by_the_lock_leaves_the_folder_another_process_made(tmp_path, monkeypatch):
    """D1, analyze. ``_Folders.lock`` recorded --out as made by it before it took the lock: refused because another
    analysis made the folder and holds it, it removed that folder (holding the lock file alone) from under it."""
    from cnnlab.cli import analyze

    out, held, real = tmp_path / "a", [], analyze._lock

    def other_first(folder: Path):
        held.append(HeldElsewhere(folder, ANALYSIS_LOCK).__enter__())
        return real(folder)

    monkeypatch.setattr(analyze, "_lock", other_first)
    try:
        with pytest.raises(RunBusy, match="another analysis is writing into it"):
            with analyze._Folders() as folders:
                folders.lock(out, "gradients", "mnist")
        assert os.listdir(out) == [ANALYSIS_LOCK]
    finally:
        for other in held:
            other.release()


def test_a_run_finished_in_the_folder_before_the_lock_was_taken_is_not_trained_over(tiny_idx, tmp_path, finished,
                                                                                      monkeypatch, capsys):
    """D2. ``plan_run`` found --out o free; another train then trained and finished its run there before this one
    took o's lock: this one trained a new run over it (both said "run saved in o", the first run's files gone).
    Now the check is made again under the lock, before anything is written."""
    out = tmp_path / "o"
    _then(monkeypatch, "plan_run", lambda plan: shutil.copytree(finished, out))
    kept = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file() and p.name != ".lock"}
    assert main(_flags(tiny_idx, out)) != 0
    assert one_line(capsys) == (f"cnnlab: error: --out {out} already holds a run; continue it with 'cnnlab train "
                                f"--resume {out}', or pick a fresh --out")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"} == kept


def test_a_new_run_into_a_new_folder_still_trains(tiny_idx, tmp_path):
    """D2's check under the lock lets a new --out through (it holds the run's own lock then)."""
    result = train(tiny_config(tiny_idx, max_steps=2), out=tmp_path / "o", **QUIET)
    assert result.run_dir == tmp_path / "o" and (tmp_path / "o" / "last.pt").is_file()


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_a_run_folder_gone_before_its_first_write_stops_the_run_there(tiny_idx, tmp_path, monkeypatch, how):
    """D3. The folder moved (or deleted) after the run took it, before config.json: config.json went into a folder
    made anew at the old path, the run trained on, and its line said "continue there with: cnnlab train --resume
    MOVED", which was refused (nothing saved). Now nothing is written, the run stops at that write, and the line
    says to start it again."""
    out, moved = tmp_path / "o2", tmp_path / "o2-moved"

    def gone(trainer) -> None:  # (a slow data load: the folder moved meanwhile)
        shutil.move(out, moved) if how == "moved" else shutil.rmtree(out)

    _then(monkeypatch, "build_trainer", gone)
    with pytest.raises(RunError) as err:
        train(tiny_config(tiny_idx, max_steps=2), out=out, **QUIET)
    msg = str(err.value)
    assert not out.exists() and "\n" not in msg
    if how == "deleted":
        assert msg == (f"{out}: the run's folder was moved or deleted while its run trained; this process stops and "
                       "writes nothing more (if it was moved and holds a last.pt, continue there with: cnnlab train "
                       "--resume NEW_PLACE; else start the run again)")
        return
    assert msg == (f"{out}: the run's folder was moved to {moved} while its run trained; this process stops and "
                   f"writes nothing more; {START_AGAIN}")
    assert sorted(os.listdir(moved)) == [".lock", "status.json"]  # nothing written after the move


def test_a_distilled_run_whose_folder_moved_before_its_teacher_was_copied_writes_nothing(tiny_idx, tmp_path,
                                                                                        finished, monkeypatch):
    """D3, a distilled run: its first write is the copy of its teacher (teacher.pt), which made the old path anew."""
    out, moved = tmp_path / "o3", tmp_path / "o3-moved"
    _then(monkeypatch, "load_dataset", lambda data: shutil.move(out, moved))
    with pytest.raises(RunError, match=f"was moved to {moved} while its run trained"):
        train(tiny_config(tiny_idx, max_steps=2, teacher=str(finished)), out=out, **QUIET)
    assert not out.exists() and "teacher.pt" not in os.listdir(moved)
