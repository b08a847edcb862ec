"""The defects a tester (probe fixruns, s47) found in the run side's newest fixes: hand-started ranks resuming other
positions of one run, which aborted in gloo's C++ (D1), a resume that trained nothing naming "--max-steps 0" as the
stop of an interrupted run (D2), a finished run whose last.pt was deleted, named as never saved and left damaged by
the advice (D3), another run's report beside a resumed checkpoint written over (D4), and a .lock that is a link
listed as resumable (D5). All on tiny runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.runs import describe_run
from conftest import one_line, trained_once, two_ranks, write_idx_dataset


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A tiny run stopped by its --max-steps 12 in its second epoch of 8 steps (last.pt at step 12, best.pt at the
    end of epoch 1, step 8), in ``tmp/runsF-s/r1``, its data in ``tmp/runsF-s/tiny``."""
    return trained_once(tmp_path_factory, "runsF-s", epochs=3, max_steps=12)


def _train(*args: str) -> int:
    return main(["train", "--threads", "1", "--quiet", *args])


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.is_symlink()}


def _copy(run: Path, to: Path) -> Path:
    return Path(shutil.copytree(run, to, symlinks=True))


# ----------------------------------------------------------------------------- D5: a .lock that is a link


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_a_lock_that_is_a_link_is_listed_damaged_with_its_fix_not_resumable(stopped_run, tmp_path, monkeypatch,
                                                                           capsys, link):
    """D5. A .lock that is a symbolic link or a hard link: `cnnlab runs` listed the run "stopped (--max-steps 12:
    resume to go on)" while every resume was refused (RunLock._open refuses both). Now runs.lock_in_the_way names
    both, as it names a folder there: the run is listed damaged, with the fix (rm R/.lock), the resume's refusal
    the same words."""
    monkeypatch.chdir(tmp_path)
    run = _copy(stopped_run, tmp_path / "R")
    (tmp_path / "elsewhere.lock").touch()
    (run / ".lock").unlink()
    if link == "symbolic":
        os.symlink("../elsewhere.lock", run / ".lock")
        line = "R/.lock is a symbolic link, which cnnlab does not follow (it would write where it points); remove it (rm R/.lock)"
    else:
        os.link(tmp_path / "elsewhere.lock", run / ".lock")
        line = "R/.lock has other names (a hard link), not the lock file cnnlab writes; remove it (rm R/.lock)"
    row = describe_run(Path("R"))
    assert (row["status"], row["detail"]) == ("damaged", line), row
    assert _train("--resume", "R") == 2
    assert one_line(capsys) == f"cnnlab: error: {line} if the folder is yours, else copy the run and use the copy"
    (run / ".lock").unlink()
    assert describe_run(Path("R"))["status"] == "stopped"


# ----------------------------------------------------------------------------- D2: an interrupted run, nothing trained


def _status(run: Path) -> tuple[str, str]:
    record = json.loads((run / "status.json").read_text())
    return record["status"], record["detail"]


def test_a_resume_that_trains_nothing_keeps_an_interrupted_runs_stop_record(tmp_path, monkeypatch, capsys):
    """D2. A run interrupted (Ctrl-C) at step 12, resumed with a --max-steps under its step: "already at step 12
    (--max-steps 5); nothing to train", then status.json "stopped (--max-steps 0: resume to go on)": a limit of 0
    (none) named as the cause, the record "interrupted: continue with ..." lost. Now engine._record_outcome leaves
    status.json as it was when the resume trained nothing and no limit of the run's own stopped it where it is."""
    from cnnlab import observers

    monkeypatch.chdir(tmp_path)
    data = write_idx_dataset(tmp_path / "D")
    after_step = observers.SignalStop.after_step

    def interrupted_at_step_12(self, t):
        if t.state.step == 12 and self.signum is None:
            os.kill(os.getpid(), signal.SIGINT)
        after_step(self, t)

    with monkeypatch.context() as m:
        m.setattr(observers.SignalStop, "after_step", interrupted_at_step_12)
        assert _train("--model", "basic_cnn", "--dataset", f"idx:{data}", "--epochs", "3", "--batch-size", "32",
                      "--out", "r") == 130
    record = ("stopped", "interrupted: continue with: cnnlab train --resume r")
    assert _status(tmp_path / "r") == record
    capsys.readouterr()
    assert _train("--resume", "r", "--max-steps", "5") == 0
    assert "r is already at step 12 (--max-steps 5); nothing to train" in capsys.readouterr().out
    assert _status(tmp_path / "r") == record
    assert main(["runs", "--root", ".", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["status"], r["detail"]) for r in rows] == [record], rows
    # the run's own limit stopped it where it is: its record stays the limit's, as before (mine.)
    assert _train("--resume", "r", "--max-steps", "14") == 0 and _status(tmp_path / "r") == (
        "stopped", "--max-steps 14: resume to go on")
    assert _train("--resume", "r", "--max-steps", "5") == 0 and _status(tmp_path / "r") == (
        "stopped", "--max-steps 14: resume to go on")



# ----------------------------------------------------------------------------- D3: a finished run's last.pt deleted


def test_a_finished_runs_deleted_last_pt_is_named_so_and_written_again_by_the_resume_its_advice_names(
        tmp_path, monkeypatch, capsys):
    """D3. A finished run whose last.pt was deleted, its best.pt saved at its end: `--resume lm` said "the run saved
    no last.pt before it stopped" (it had: cnnlab runs says "deleted or moved"), and its advice `--resume lm/best.pt`
    re-evaluated the run without writing last.pt again: the run stayed damaged. Now engine._resumed_checkpoint names
    it deleted or moved (runs.last_gone), and engine._recover_last writes best.pt as last.pt again where nothing is at
    last.pt's place, as it does for a damaged one."""
    monkeypatch.chdir(tmp_path)
    data = write_idx_dataset(tmp_path / "D")
    assert _train("--model", "basic_cnn", "--dataset", f"idx:{data}", "--epochs", "2", "--batch-size", "32",
                  "--lr", "0.01", "--out", "lm") == 0
    run = tmp_path / "lm"
    saved = (run / "last.pt").read_bytes()
    assert saved == (run / "best.pt").read_bytes()  # its last epoch was its best: one position, saved twice
    (run / "last.pt").unlink()
    (run / "last.pt.sha256").unlink()
    capsys.readouterr()
    assert _train("--resume", "lm") == 2
    assert one_line(capsys) == (
        "cnnlab: error: --resume lm: no last.pt, so there is no position to continue from; the run finished and its "
        "final weights (last.pt) were deleted or moved since: put it back, or continue from its best epoch: cnnlab "
        "train --resume lm/best.pt")
    assert _train("--resume", "lm/best.pt") == 0
    out = capsys.readouterr().out
    assert ("note: lm/last.pt was not there (deleted or moved); its best.pt was saved at the same position, the run's "
            "end (step 16), and is written as last.pt again: the run is whole") in out, out
    assert (run / "last.pt").read_bytes() == saved
    assert (run / "last.pt.sha256").read_text().split()[0] == (run / "best.pt.sha256").read_text().split()[0]
    assert main(["runs", "--root", ".", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["status"], r["detail"]) for r in rows] == [("finished", "")], rows
    assert main(["evaluate", "lm", "--no-report"]) == 0


def test_a_stopped_runs_deleted_last_pt_is_named_so_and_its_earlier_best_pt_trains_on(stopped_run, tmp_path,
                                                                                      monkeypatch, capsys):
    """D3's other side: a run stopped by its --max-steps (last.pt at step 12, best.pt at 8) saved its last.pt too
    (before best.pt, at every position), and the refusal says it was deleted; best.pt, not the run's end, is never
    written as last.pt: the resume from it trains on, saving last.pt as it goes."""
    monkeypatch.chdir(tmp_path)
    run = _copy(stopped_run, tmp_path / "R")
    (run / "last.pt").unlink()
    capsys.readouterr()
    assert _train("--resume", "R") == 2
    assert one_line(capsys) == (
        "cnnlab: error: --resume R: no last.pt, so there is no position to continue from; the run saved a last.pt "
        "(it saves one before its best.pt, at every position) and it was deleted or moved since: put it back, or "
        "continue from its best epoch: cnnlab train --resume R/best.pt")
    assert _train("--resume", "R/best.pt", "--max-steps", "10") == 0
    out = capsys.readouterr().out
    assert "resuming R at epoch 2, batch 0 (step 8)" in out and "written as last.pt again" not in out, out
    assert (run / "last.pt").is_file()


# ----------------------------------------------------------------------------- D4: another run's report


def test_another_runs_report_beside_a_resumed_checkpoint_is_the_users_and_is_not_written_over(stopped_run, tmp_path,
                                                                                            monkeypatch, capsys):
    """D4. Another run's metrics.csv, summary.json and curves.png (a run on other data, with 3 epochs) copied into a
    folder beside a run's last.pt: `--resume proj/model.pt` wrote the run's report over them without a word (any such
    file cnnlab wrote counted the run's; only checkpoints were compared). Now runs.users_files asks whether the
    report is the checkpoint's run's (checkpoint.same_run_as, runs.report_agrees: metrics.csv's rows that the
    checkpoint's history covers), and another run's is the user's: refused before anything is written."""
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "runB"
    assert _train("--model", "basic_cnn", "--dataset", f"idx:{write_idx_dataset(tmp_path / 'DB', seed=1)}",
                  "--epochs", "3", "--batch-size", "32", "--out", str(other)) == 0
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("metrics.csv", "summary.json", "curves.png"):
        shutil.copy(other / name, proj / name)
    shutil.copy(stopped_run / "last.pt", proj / "model.pt")
    before = _snapshot(proj)
    capsys.readouterr()
    assert _train("--resume", "proj/model.pt") == 2
    assert one_line(capsys) == (
        "cnnlab: error: --resume proj/model.pt: proj is not a run folder (it holds 'curves.png', 'metrics.csv', "
        "'summary.json'), and a resume writes its run's files (config.json, summary.json, metrics.csv, checkpoints, "
        "figures) into the folder of the checkpoint it continues; copy the file into a folder of its own (a new, "
        "empty one) and resume it there")
    assert _snapshot(proj) == before
    # evaluate of such a copy, named as the run's last.pt, writes no report over theirs either
    (proj / "model.pt").rename(proj / "last.pt")
    assert main(["evaluate", "proj/last.pt"]) == 0
    assert "no report written: proj is not a run folder (it holds 'curves.png'" in capsys.readouterr().out
    assert _snapshot(proj) == {**{k: v for k, v in before.items() if k != "model.pt"}, "last.pt": before["model.pt"]}


def test_the_runs_own_report_beside_its_checkpoint_is_the_runs(stopped_run, tmp_path, monkeypatch, capsys):
    """D4's other side: the run's own report (metrics.csv, summary.json, figures) beside its last.pt in a folder whose
    config.json is gone, or beside its best.pt (a history shorter than metrics.csv's rows), is the run's, as ever:
    the resume goes on there; so is another run's summary.json only where it says another test set, classes or
    average."""
    monkeypatch.chdir(tmp_path)
    run = _copy(stopped_run, tmp_path / "R")
    best = (run / "best.pt").read_bytes()  # epoch 1's end, step 8: a history of one row
    (run / "config.json").unlink()
    assert _train("--resume", "R/last.pt", "--max-steps", "17") == 0
    assert "resuming R at epoch 2, batch 4 (step 12)" in capsys.readouterr().out
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # the header, epochs 1 and 2
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("metrics.csv", "summary.json", "curves.png"):
        shutil.copy(run / name, proj / name)
    (proj / "model.pt").write_bytes(best)
    assert _train("--resume", "proj/model.pt", "--max-steps", "9") == 0
    assert "resuming proj at epoch 2, batch 0 (step 8)" in capsys.readouterr().out
    from cnnlab.checkpoint import load_checkpoint
    from cnnlab.runs import report_agrees

    ckpt = load_checkpoint(run / "last.pt")
    summary = json.loads((run / "summary.json").read_text())
    assert report_agrees(run / "summary.json", ckpt["config"], ckpt["data"], [])
    for key, value in (("n", 63), ("ema", 0.5)):
        (tmp_path / "summary.json").write_text(json.dumps({**summary, key: value}))
        assert not report_agrees(tmp_path / "summary.json", ckpt["config"], ckpt["data"], [])



# ----------------------------------------------------------------------------- D1: ranks resuming other positions


def test_hand_started_ranks_resuming_other_positions_are_refused_in_one_line_each_before_any_step(stopped_run,
                                                                                                 tmp_path):
    """D1. Two hand-started ranks (as on two machines, each with its copy of the run), rank 0 typing `--resume s`
    (last.pt, step 12), rank 1 `--resume s/best.pt` (step 8): rank 1 aborted in gloo's C++ ("Is there a collective
    mismatch in your code?", rc 134), rank 0 lost contact, and the run's status.json said failed. Now
    engine.refuse_other_ranks gathers the position each resumes from (or a new run) with the settings, and every rank
    refuses before any step, the run as it was."""
    folders = [tmp_path / "m0", tmp_path / "m1"]
    for folder in folders:
        _copy(stopped_run, folder / "s")
    before = _snapshot(folders[0] / "s")
    common = ["train", "--device", "cpu", "--threads", "1", "--quiet", "--resume"]
    done = two_ranks(folders, [common + ["s"], common + ["s/best.pt"]])
    line = ("the group's processes start from other positions: rank 1 from --resume s/best.pt at step 8 (epoch 2, "
            "batch 0), rank 0 from --resume s at step 12 (epoch 2, batch 4); start every process with the same "
            "command, from the same checkpoint\n")
    assert [d.returncode for d in done] == [2, 2], [d.stderr for d in done]
    assert done[0].stderr == f"cnnlab: error: {line}", done[0].stderr
    assert done[1].stderr == f"cnnlab: error: rank 1: {line}", done[1].stderr
    assert "resuming" not in done[0].stdout and _snapshot(folders[0] / "s") == before


def test_the_ranks_compare_where_they_start_from():
    """D1: a new run beside a resume, and two positions, each said as the rank's command gave it."""
    from cnnlab.engine import _refuse_other_start
    from cnnlab.errors import CnnlabError

    at = {"where": "--resume r", "epoch": 1, "batch": 0, "step": 8}
    _refuse_other_start(1, None, None)
    _refuse_other_start(1, at, {**at, "where": "--resume r/last.pt"})  # the same position, named otherwise
    with pytest.raises(CnnlabError, match=r"other positions: rank 1 as a new run, rank 0 from --resume r at step 8 "
                                          r"\(epoch 2, batch 0\);"):
        _refuse_other_start(1, at, None)
    with pytest.raises(CnnlabError, match=r"rank 2 from --resume r at step 9 \(epoch 2, batch 1\), rank 0 as a new"):
        _refuse_other_start(2, None, {**at, "batch": 1, "step": 9})
