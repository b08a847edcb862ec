"""The defects a tester (probe newruns, s45) found in the run side's newest fixes: the run's own best.pt refused as
another run's after a resume took its data moved (D3), and called the user's by evaluate and analyze in a run folder
whose config.json is gone (D4), and a damaged checkpoint's advice "use its best.pt (--checkpoint best)" that train and
a command given the file refuse (D2), and the folders a refused ``--out new/sub/..`` or ``n1/n2/../../n3/n4`` made and
left (D1). All on tiny runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.errors import shell_quoted
from conftest import one_line, tiny_config, trained_once, write_idx_dataset


@pytest.fixture(scope="module")
def run_once(tmp_path_factory) -> Path:
    """A tiny finished run (one epoch of 8 steps: last.pt and best.pt)."""
    return trained_once(tmp_path_factory, "nrX-run")


def _copy(run: Path, tmp_path: Path, name: str = "r") -> Path:
    shutil.copytree(run, tmp_path / name)
    return tmp_path / name


def _train(*args: str) -> int:
    return main(["train", "--threads", "1", "--quiet", *args])


# ----------------------------------------------------------------------------- D3: the run's best.pt, data moved


def test_the_runs_own_best_pt_resumes_after_a_resume_took_its_data_moved(tmp_path, capsys):
    """D3. A run whose best.pt was saved before its data moved, resumed since with ``--dataset`` at the new place:
    ``train --resume RUN/best.pt`` said "a checkpoint of another run (dataset ...D1) than the one in RUN (...D2)".
    Now config.other_run takes the data moved as the same run's, and the resume continues at the run's new place
    (engine._saved_config)."""
    old = write_idx_dataset(tmp_path / "D1")
    run = tmp_path / "r"
    assert _train("--model", "basic_cnn", "--dataset", f"idx:{old}", "--epochs", "3", "--batch-size", "32",
                  "--max-steps", "9", "--out", str(run)) == 0  # epoch 1 ended: best.pt names D1
    new = old.rename(tmp_path / "D2")
    assert _train("--resume", str(run), "--dataset", f"idx:{new}", "--max-steps", "10") == 0
    capsys.readouterr()
    assert _train("--resume", str(run / "best.pt"), "--max-steps", "10") == 0, one_line(capsys)
    assert f"idx:{new}" in (run / "config.json").read_text()


# ----------------------------------------------------------------------------- D4: best.pt of a config-less run


def test_evaluate_takes_a_config_less_run_folders_best_pt_as_the_runs_as_its_resume_does(run_once, tmp_path, capsys):
    """D4. A run folder whose config.json was deleted: ``evaluate RUN`` said "no report written: RUN is not a run
    folder (it holds 'best.pt', 'best.pt.sha256')", where ``train --resume RUN/last.pt`` takes that best.pt as the
    run's. Now evaluation.open_subject passes runs.users_files the same predicate the resume does
    (checkpoint.same_run_as): the report is written into the run."""
    run = _copy(run_once, tmp_path)
    (run / "config.json").unlink()
    (run / "summary.json").unlink()
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr()
    assert "not a run folder" not in out.out + out.err
    assert (run / "summary.json").is_file()


def test_another_runs_best_pt_in_a_config_less_folder_is_still_the_users(run_once, tmp_path, capsys):
    """D4's limit: a best.pt of another run (another seed) in such a folder stays the user's, and nothing is
    written into it."""
    from cnnlab.engine import train

    run = _copy(run_once, tmp_path)
    train(tiny_config(run_once.parent / "tiny", seed=7), out=tmp_path / "o", quiet=True, log=lambda m: None)
    for name in ("best.pt", "best.pt.sha256"):
        shutil.copy(tmp_path / "o" / name, run / name)
    (run / "config.json").unlink()
    (run / "summary.json").unlink()
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert "is not a run folder (it holds 'best.pt', 'best.pt.sha256')" in capsys.readouterr().out
    assert not (run / "summary.json").exists()


# ----------------------------------------------------------------------------- D2: the damaged checkpoint's advice


def _damaged_last(run_once: Path, tmp_path: Path) -> Path:
    run = _copy(run_once, tmp_path)
    with open(run / "last.pt", "r+b") as f:
        f.truncate(20000)  # its sidecar names the whole file
    return run


def test_a_damaged_last_pts_advice_names_what_train_resume_takes_and_following_it_works(run_once, tmp_path, capsys):
    """D2. ``train --resume RUN`` of a run whose last.pt was cut short said "use its best.pt (--checkpoint best)",
    which train refuses (``unrecognized arguments: --checkpoint best``). Now the load names it as train takes it
    (runs.checkpoint_fix with flag, from engine._resumed_checkpoint): ``--resume RUN/best.pt``, which resumes."""
    run = _damaged_last(run_once, tmp_path)
    capsys.readouterr()
    assert _train("--resume", str(run)) != 0
    best = shell_quoted(str(run / "best.pt"))
    assert f"use its best.pt (--resume {best}), or train it again" in one_line(capsys)
    assert _train("--resume", str(run / "best.pt")) == 0, one_line(capsys)


def test_a_damaged_last_pts_advice_names_the_file_where_a_file_was_given(run_once, tmp_path, capsys):
    """D2. ``evaluate RUN/last.pt`` (and predict, export with the file) said "use its best.pt (--checkpoint best)",
    which is refused beside a file ("RUN/last.pt is a checkpoint file, and choosing 'best' ..."). Now it names the
    file itself, which evaluates; beside the folder it still names ``--checkpoint best``."""
    run = _damaged_last(run_once, tmp_path)
    best = shell_quoted(str(run / "best.pt"))
    capsys.readouterr()
    assert main(["evaluate", str(run / "last.pt"), "--no-report"]) != 0
    assert f"use its best.pt ({best}), or train it again" in one_line(capsys)
    assert main(["export", str(run / "last.pt"), "--out", str(tmp_path / "x.pt"), "--format", "torchscript"]) != 0
    assert f"use its best.pt ({best}), or train it again" in one_line(capsys)
    assert main(["evaluate", str(run), "--no-report"]) != 0
    assert "use its best.pt (--checkpoint best), or train it again" in one_line(capsys)
    assert main(["evaluate", str(run / "best.pt"), "--no-report"]) == 0


# ----------------------------------------------------------------------------- D1: an --out that ends in `..`


@pytest.mark.parametrize("out", ["new/sub/..", "n1/n2/../../n3/n4", "new/..", "x/../y/z"])
def test_a_refused_start_leaves_none_of_the_folders_its_out_made(out, tmp_path, monkeypatch, capsys):
    """D1. ``train --dataset idx:/nonexistent --out new/sub/..`` left new/ (the run folder, with its .lock and
    status.json) and new/sub/; ``--out n1/n2/../../n3/n4`` left n3/; ``--out new/..`` left new/ (the run folder is the
    current one). Now runs.folders_made records every folder mkdir -p makes, as the OS reads it, and
    runs.remove_if_unused removes those left empty (the run folder among them when it made it); a folder that was
    there (the current one, keep/) stays as before."""
    here = tmp_path / "here"
    (here / "keep").mkdir(parents=True)
    monkeypatch.chdir(here)
    assert _train("--model", "basic_cnn", "--dataset", "idx:/nonexistent", "--out", out) == 2
    assert "idx:/nonexistent: no such directory" in one_line(capsys)
    left = sorted(p.name for p in here.iterdir())
    assert left == (["keep"] if out != "new/.." else [".lock", "keep", "status.json"]), left
    assert os.listdir(here / "keep") == []


def test_removed_if_unused_takes_every_folder_a_dotdot_out_made(tmp_path, monkeypatch):
    """D1, for evaluate's, compare's and analyze's --out (runs.removed_if_unused): the same folders go."""
    from cnnlab.fileio import make_dirs
    from cnnlab.runs import removed_if_unused

    monkeypatch.chdir(tmp_path)
    for out in ("new/sub/..", "n1/n2/../../n3/n4"):
        with pytest.raises(RuntimeError), removed_if_unused(out):
            make_dirs(out)
            raise RuntimeError
        assert os.listdir(tmp_path) == [], out


# ----------------------------------------------------------------------------- D5: a JSON that cannot be renamed in


def _refuse_rename_to(monkeypatch, name: str) -> None:
    """``os.replace`` onto ``name`` refused (EPERM, as onto an immutable file), after the temp file was written."""
    import errno

    import cnnlab.fileio

    real = os.replace

    def replace(src, dst, *a, **k):
        if os.path.basename(dst) == name:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(dst))
        return real(src, dst, *a, **k)
    monkeypatch.setattr(cnnlab.fileio.os, "replace", replace)


def test_an_analysis_whose_json_cannot_be_renamed_in_leaves_the_earlier_analysis_whole(tmp_path, monkeypatch, capsys):
    """D5. When the new branches.json could not be renamed in (an immutable file), the earlier analysis's
    branches.png was already deleted, and the line said "wrote nothing ... (an earlier analysis's branches.json stays
    there)". Now the figures are set aside before the rename and put back when it fails (fileio.set_aside, from
    atomic_write_bytes' just_before): the earlier analysis stays whole, as the line says."""
    from cnnlab.cli.analyze import _write

    out = tmp_path / "ao"
    out.mkdir()
    (out / "a.json").write_text('{"old": 1}')
    (out / "a.png").write_bytes(b"old figure")
    _refuse_rename_to(monkeypatch, "a.json")
    assert _write(out, ("a.json", {"new": 1}), [("a.png", lambda p: p.write_bytes(b"new"))], "table", 1.0,
                  quiet=True) == 1
    err = capsys.readouterr().err
    assert f"wrote nothing in {out}: a.json, a.png (an earlier analysis's a.json, a.png stay there)" in err
    assert sorted(os.listdir(out)) == ["a.json", "a.png"]
    assert (out / "a.png").read_bytes() == b"old figure" and (out / "a.json").read_text() == '{"old": 1}'


def test_a_report_whose_summary_cannot_be_renamed_in_keeps_its_figures(tmp_path, monkeypatch):
    """D5, report.write_report's form: the figures of the summary.json there are set aside, not deleted, before the
    new summary.json is renamed in, and put back when that fails; once it is in, they are gone."""
    from cnnlab.errors import WriteError
    from cnnlab.fileio import atomic_write_text, set_aside

    (tmp_path / "summary.json").write_text("old")
    (tmp_path / "curves.png").write_bytes(b"old curves")
    stale = [tmp_path / "curves.png", tmp_path / "confusion.png"]  # (one not there)
    with monkeypatch.context() as m:
        _refuse_rename_to(m, "summary.json")
        with pytest.raises(WriteError):
            atomic_write_text(tmp_path / "summary.json", "new", just_before=lambda: set_aside(stale))
    assert sorted(p for p in os.listdir(tmp_path) if p != "home") == ["curves.png", "summary.json"]
    assert (tmp_path / "curves.png").read_bytes() == b"old curves"
    atomic_write_text(tmp_path / "summary.json", "new", just_before=lambda: set_aside(stale))
    assert sorted(p for p in os.listdir(tmp_path) if p != "home") == ["summary.json"]
