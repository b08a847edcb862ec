"""The osO tester's symlink loops, FIFOs, stray locks and wrong fixes (s43): a loop of symbolic links named as one in
every command (:func:`cnnlab.fileio.symlink_loop`, the line ``train --config`` said), never taken for nothing there;
``train --resume FILE`` refuses a file that is no checkpoint before it touches the file's folder; ``--teacher`` names
its own flag for a run's best.pt; a FIFO in place of a run's last.pt is said as a resume says it.
docs/reliability.md lists them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from apps_helpers import deadline
from conftest import trained_once, write_idx_dataset
from cnnlab import fileio
from cnnlab.cli import main
from cnnlab.errors import CnnlabError, WriteError, shell_quoted

LOOP_FIX = "cannot be read (symlink loop); fix or remove the symbolic link"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished tiny run (basic_cnn, one epoch), copied by each test that changes it."""
    return trained_once(tmp_path_factory, "osO")


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "r1"))


@pytest.fixture
def loop(tmp_path) -> Path:
    """``loopA -> loopB -> loopA`` (``ln -s loopB loopA; ln -s loopA loopB``)."""
    (tmp_path / "loopA").symlink_to("loopB")
    (tmp_path / "loopB").symlink_to("loopA")
    return tmp_path / "loopA"


def image(tmp_path) -> Path:
    path = tmp_path / "digit.png"
    img = Image.new("L", (28, 28))
    img.paste(255, (12, 5, 16, 23))  # a "1"
    img.save(path)
    return path


def still_a_loop(loop: Path) -> None:
    assert os.readlink(loop) == "loopB" and os.readlink(loop.with_name("loopB")) == "loopA"


# ----------------------------------------------------------------------------- 1, 6, 7: a loop of symbolic links


def test_the_one_place_names_a_loop_and_the_link_that_loops(loop):
    """Python 3.11's ``Path.resolve()`` raised ``RuntimeError: Symlink loop`` and ``is_dir()``/``exists()`` took a loop
    for nothing there: ``fileio.resolved`` and ``stat_or_none`` (``is_file``, ``is_dir``, ``exists``) say the line
    ``--config`` says, naming the link that loops, also of a path below it."""
    for check in (fileio.resolved, fileio.is_dir, fileio.is_file, fileio.exists):
        with pytest.raises(CnnlabError) as err:
            check(loop)
        assert str(err.value) == f"{loop}: {LOOP_FIX}"
    with pytest.raises(CnnlabError, match=f"^{loop}: cannot be read"):
        fileio.exists(loop / "sub" / "x.pt")
    assert fileio.is_dir(loop, if_unknown=False) is False and fileio.lexists(loop)
    with pytest.raises(WriteError, match=f"^{loop}: cannot be read"):
        fileio.make_dirs(loop)
    with pytest.raises(WriteError, match=f"^{loop}: cannot be read"):
        fileio.atomic_write_text(loop, "x")  # the rename put a file in the loop's place
    with pytest.raises(WriteError, match=f"^{loop}: cannot be read"):
        fileio.atomic_write_text(loop / "sub" / "x.json", "x")
    still_a_loop(loop)


def test_evaluate_out_a_symlink_loop_is_one_line_before_the_evaluation(run, loop, capsys):
    """osO 1. ``evaluate RUN --out LOOP``: the whole evaluation's table, then a ``RuntimeError: Symlink loop``
    traceback from ``cli/evaluate.py``'s ``out.resolve()``."""
    assert main(["evaluate", str(run), "--out", str(loop), "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    assert err == f"cnnlab: error: {loop}: {LOOP_FIX}\n" and out == ""  # nothing evaluated
    still_a_loop(loop)
    assert main(["evaluate", str(run), "--out", str(loop / "sub"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == f"cnnlab: error: {loop}: {LOOP_FIX}\n"


@pytest.mark.parametrize("argv", [["export-weights", "{run}", "--out", "{loop}"],
                                  ["export", "{run}", "--out", "{loop}"],
                                  ["export", "{run}", "--format", "torchscript", "--out", "{loop}"],
                                  ["export-weights", "{run}", "--out", "{loop}/w.safetensors"]])
def test_export_out_a_symlink_loop_is_refused_and_the_loop_left(run, loop, capsys, argv):
    """osO 6. ``export-weights RUN --out LOOP`` (and ``export``) replaced the user's symbolic link with a file and said
    ``wrote LOOP``."""
    assert main([a.format(run=run, loop=loop) for a in argv]) == 2
    assert capsys.readouterr().err == f"cnnlab: error: {loop}: {LOOP_FIX}\n"
    still_a_loop(loop)


@pytest.mark.parametrize("argv", [
    ["train", "--model", "basic_cnn", "--dataset", "idx:{tiny}", "--epochs", "1", "--out", "{loop}"],
    ["train", "--resume", "{loop}"],
    ["train", "--config", "{loop}"],
    ["train", "--model", "basic_cnn", "--dataset", "idx:{tiny}", "--epochs", "1", "--teacher", "{loop}",
     "--out", "{tmp}/student"],
    ["evaluate", "{loop}"], ["predict", "{loop}", "{image}"], ["export", "{loop}"], ["export-weights", "{loop}"],
    ["runs", "--root", "{loop}"], ["evaluate", "--weights", "{loop}", "--model", "basic_cnn", "--dataset", "idx:{tiny}"],
    ["compare", "--models", "basic_cnn", "--seeds", "1", "--dataset", "idx:{tiny}", "--epochs", "1", "--out", "{loop}"],
])
def test_a_symlink_loop_is_named_as_one_by_every_command(trained, loop, tmp_path, capsys, argv):
    """osO 7. ``train --out LOOP``: ``cannot create folder LOOP: nothing of that name is in the way``; ``evaluate``,
    ``predict``, ``export``, ``export-weights LOOP``: ``no such checkpoint``; ``train --resume LOOP``: ``no such run
    folder or checkpoint``; ``runs --root LOOP``: ``no such folder``; ``--teacher LOOP``: a traceback. Only
    ``train --config LOOP`` said it right; now all say its line."""
    tiny = trained.parent / "tiny"
    args = [a.format(loop=loop, tiny=tiny, tmp=tmp_path, image=image(tmp_path)) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"{loop}: {LOOP_FIX}\n") and err.count("\n") == 1, err
    still_a_loop(loop)
    assert not (tmp_path / "student").exists()


def test_a_dataset_folder_that_loops_is_the_parsers_one_line(loop, capsys):
    """osO 7 (the grep for ``Path.resolve()``): ``--dataset idx:LOOP`` (and ``folder:``) was a ``RuntimeError``
    traceback from ``dataset_names.canonical_dataset_name``."""
    for kind in ("idx", "folder"):
        with pytest.raises(SystemExit) as stop:
            main(["train", "--model", "basic_cnn", "--dataset", f"{kind}:{loop}", "--epochs", "1"])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert f"argument --dataset: {loop}: {LOOP_FIX}" in err and err.count("\n") == 1, err


def test_predict_show_input_into_a_symlink_loop_warns_with_its_line(run, loop, tmp_path, capsys):
    """osO 7. ``predict RUN digit.png --show-input LOOP`` warned ``(cannot create folder LOOP: nothing of that name is
    in the way)``; and an image that is a loop: ``cannot open it (Too many levels of symbolic links)``."""
    assert main(["predict", str(run), str(image(tmp_path)), "--show-input", str(loop), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"was not written into {loop} ({loop}: cannot be read (symlink loop)); fix or remove the "
                        "symbolic link, or give another folder: --show-input DIR\n"), err
    assert main(["predict", str(run), str(loop), "--device", "cpu"]) == 1
    assert f"skipped {loop}: {LOOP_FIX}" in capsys.readouterr().err
    still_a_loop(loop)


def test_a_loop_among_the_runs_is_still_no_run(run, tmp_path, capsys):
    """A link in a loop beside the runs is left out of ``cnnlab runs``, as a dangling link is (not a damaged run)."""
    (run.parent / "la").symlink_to("lb")
    (run.parent / "lb").symlink_to("la")
    assert main(["runs", "--root", str(run.parent)]) == 0
    out = capsys.readouterr().out
    assert "r1" in out and "la" not in out and "lb" not in out


# ----------------------------------------------------------------------------- 2: a resume's file before its lock


def test_resume_of_a_file_that_is_no_checkpoint_touches_nothing(tmp_path, capsys):
    """osO 2. ``train --resume lt/digit.png``: refused (``not a checkpoint (a PNG image)``), but a 32-byte ``.lock``
    was left in ``lt/``, a folder of the user's own (in a read-only one the refusal was ``cannot write lt/.lock``);
    the same for a FIFO, a JSON file and a folder that holds no run."""
    folder = tmp_path / "lt"
    folder.mkdir()
    shot = image(folder)
    (folder / "notes.txt").write_text("hi")
    (folder / "cfg.json").write_text("{}")
    os.mkfifo(folder / "pipe.pt")
    before = sorted(p.name for p in folder.iterdir())
    cases = {shot: f"{shot}: not a checkpoint (a PNG image)",
             folder / "cfg.json": f"{folder / 'cfg.json'}: not a checkpoint (a JSON file)",
             folder / "pipe.pt": f"{folder / 'pipe.pt'}: a FIFO (named pipe), not a checkpoint",
             folder: f"{folder / 'last.pt'}: no such checkpoint"}
    for given, said in cases.items():
        with deadline(60):
            assert main(["train", "--resume", str(given)]) == 2
        err = capsys.readouterr().err
        assert err == f"cnnlab: error: {said}; pass a run directory or a .pt file written by cnnlab\n", err
        assert sorted(p.name for p in folder.iterdir()) == before, given


def test_a_refused_resume_file_takes_no_lock(tmp_path, monkeypatch, capsys):
    """osO 2, the read-only folder: the refusal comes before the lock is even tried (a lock that cannot be taken
    there named the folder, not the file)."""
    import cnnlab.runs

    def no_lock(*a, **k):
        raise AssertionError("the lock was taken")

    monkeypatch.setattr(cnnlab.runs.RunLock, "acquire", no_lock)
    assert main(["train", "--resume", str(image(tmp_path))]) == 2
    assert "not a checkpoint (a PNG image)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 8: --teacher names its own flag


def test_a_teacher_run_without_last_pt_is_told_to_give_its_best_pt_with_teacher(trained, run, tmp_path, capsys):
    """osO 8. ``train --teacher RUN`` of a run whose last.pt is gone (best.pt there): ``its best.pt holds the weights
    of its best epoch: --checkpoint best``, a flag ``train`` does not have (``unrecognized arguments``)."""
    (run / "last.pt").unlink()
    (run / "last.pt.sha256").unlink()
    tiny = trained.parent / "tiny"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny}", "--epochs", "1", "--teacher",
                 str(run), "--out", str(tmp_path / "s"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == (f"cnnlab: error: --teacher: {run}: no last.pt in this run directory; its best.pt holds the weights "
                   f"of its best epoch: --teacher {shell_quoted(str(run / 'best.pt'))}\n"), err
    assert main(["evaluate", str(run)]) == 2  # a command with --checkpoint still names it
    assert capsys.readouterr().err.endswith("its best.pt holds the weights of its best epoch: --checkpoint best\n")


# ----------------------------------------------------------------------------- 12: a FIFO where last.pt goes


@pytest.mark.parametrize("argv", [["evaluate", "{run}"], ["predict", "{run}", "{image}"], ["export", "{run}"],
                                  ["export-weights", "{run}"],
                                  ["train", "--model", "basic_cnn", "--dataset", "idx:{tiny}", "--epochs", "1",
                                   "--teacher", "{run}", "--out", "{tmp}/s"],
                                  ["train", "--resume", "{run}"]])
def test_a_fifo_in_place_of_last_pt_is_named_as_a_fifo(run, tmp_path, capsys, argv):
    """osO 12. ``mkfifo RUN/last.pt``: ``evaluate``, ``predict``, ``export``, ``export-weights``, ``analyze branches``
    and ``--teacher`` said ``RUN: no last.pt in this run directory; ... --checkpoint best``; ``train --resume`` and
    ``runs`` said what it is. Now all say it as the resume does."""
    (run / "last.pt").unlink()
    os.mkfifo(run / "last.pt")
    args = [a.format(run=run, image=image(tmp_path), tiny=write_idx_dataset(tmp_path / "tiny"), tmp=tmp_path)
            for a in argv]
    with deadline(120):
        assert main(args) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"{run / 'last.pt'}: a FIFO (named pipe), not a checkpoint; pass a run directory or a .pt "
                        "file written by cnnlab\n") and err.count("\n") == 1, err
