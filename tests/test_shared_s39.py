"""A run folder shared between users: what another user may have planted there must not make cnnlab write elsewhere,
and what cnnlab writes there follows the umask like every other file."""

from __future__ import annotations

import os
import stat

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.runs import RunLock


def test_a_lock_planted_as_a_link_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "notes.txt"
    victim.write_text("my thesis notes\n")
    run = tmp_path / "trap"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    with pytest.raises(CnnlabError, match=r"\.lock is a symbolic link, which cnnlab does not follow"):
        RunLock(run).acquire()
    assert victim.read_text() == "my thesis notes\n"
    (run / ".lock").unlink()
    os.link(victim, run / ".lock")  # a hard link: the same file under the run's name
    with pytest.raises(CnnlabError, match=r"has other names \(a hard link\)"):
        RunLock(run).acquire()
    assert victim.read_text() == "my thesis notes\n"
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(tmp_path / "nowhere.txt")  # a dangling link: nothing created where it points
    with pytest.raises(CnnlabError, match="symbolic link"):
        RunLock(run).acquire()
    assert not (tmp_path / "nowhere.txt").exists()


def test_a_fifo_or_folder_named_lock_is_refused_in_one_line(tmp_path):
    for make, said in ((os.mkfifo, "is a FIFO .*, not the lock file cnnlab writes"),
                       (os.mkdir, r"is a directory, not the lock file cnnlab writes; remove it \(rmdir ")):
        run = tmp_path / make.__name__
        run.mkdir()
        make(run / ".lock")
        with pytest.raises(CnnlabError, match=said):
            RunLock(run).acquire()


def test_the_lock_file_follows_the_umask_as_other_files_do(tmp_path):
    old = os.umask(0o002)
    try:
        lock = RunLock(tmp_path / "g").acquire()
        lock.release()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "g" / ".lock").stat().st_mode) == 0o664  # a group may resume the run


def _forbid(monkeypatch, folder):
    """Every look into ``folder`` raises EACCES, as another user's 0700 folder does (the suite may run as root)."""
    import builtins
    import pathlib

    inside = lambda p: str(os.fspath(p)).startswith(str(folder) + os.sep)  # noqa: E731

    def guard(real):
        def call(p, *a, **k):
            if inside(p):
                raise PermissionError(13, "Permission denied", str(p))
            return real(p, *a, **k)
        return call

    for name in ("stat", "lstat", "open", "scandir", "listdir"):
        monkeypatch.setattr(os, name, guard(getattr(os, name)))
    monkeypatch.setattr(builtins, "open", guard(builtins.open))
    monkeypatch.setattr(pathlib.Path, "iterdir", guard(pathlib.Path.iterdir))


def test_one_unreadable_folder_among_the_runs_lists_the_others(finished, tmp_path, monkeypatch, capsys):
    """A folder of another user's (0700) in a shared runs/ stopped `cnnlab runs`, `latest` and `list_runs` for
    everyone: `cannot reach runs/bob-private/config.json (permission denied)`."""
    import cnnlab
    from cnnlab.cli import main

    private = finished.parent / "bob-private"
    private.mkdir()
    _forbid(monkeypatch, private)
    rows = {r["run"]: r for r in cnnlab.list_runs(finished.parent)}
    assert rows[str(finished)]["status"] == "finished"
    assert rows[str(private)]["status"] == "damaged" and "permission denied" in rows[str(private)]["detail"].lower()
    monkeypatch.chdir(tmp_path)
    assert cnnlab.load_run("latest").folder == finished.resolve()
    assert main(["runs", "--root", str(finished.parent)]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "damaged (the folder cannot be read or entered (permission denied)" in out


def test_a_runs_folder_one_may_enter_but_not_list_is_said_so(finished, monkeypatch):
    """``runs/`` of mode 0711: `no runs under runs/ yet`, exit 0, `[]` from --json: a wrong answer."""
    from cnnlab.runs import find_runs

    monkeypatch.setattr(os, "scandir", lambda p=".": (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.raises(CnnlabError, match=r"cannot list .*runs/ \(permission denied\)"):
        find_runs(finished.parent)


def test_an_unreadable_sidecar_is_named_not_its_checkpoint(finished, monkeypatch):
    """`last.pt: cannot be read (Permission denied); check the file's permissions`, where last.pt was readable and
    its last.pt.sha256 was not: the user who checks last.pt finds nothing wrong."""
    from cnnlab.checkpoint import load_checkpoint

    import pathlib

    sidecar = finished / "last.pt.sha256"  # every read of it fails, as of another user's 0600 file

    real_read_text = pathlib.Path.read_text

    def read_text(self, *a, **k):
        if self == sidecar:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *a, **k)

    real_os_open = os.open

    def os_open(p, *a, **k):
        if os.fspath(p) == str(sidecar):
            raise PermissionError(13, "Permission denied", str(p))
        return real_os_open(p, *a, **k)

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    monkeypatch.setattr(os, "open", os_open)
    with pytest.raises(CnnlabError, match=r"last\.pt\.sha256: cannot be read \(permission denied\); fix its "
                                          r"permissions \(chmod u\+r.*\) or run as its owner \(the checksum of "
                                          r"last\.pt\)"):
        load_checkpoint(finished / "last.pt")


def test_a_run_one_may_not_write_is_answered_with_a_fix_that_works(finished, monkeypatch):
    """`train --resume` of a teacher's read-only run said `... or write somewhere else (e.g. another --out)`, and
    `--resume RUN --out X` is refused: copying the run and resuming the copy is what works."""
    real_open = os.open

    def os_open(p, *a, **k):
        if os.fspath(p) == str(finished / ".lock"):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *a, **k)

    monkeypatch.setattr(os, "open", os_open)
    with pytest.raises(CnnlabError, match=r"the run folder is not writable by you: copy it \(cp -r .*r1 COPY\) and "
                                          r"use the copy"):
        RunLock(finished).acquire()


def test_a_tensorboard_link_planted_in_a_run_folder_is_not_followed(tiny_idx, tmp_path):
    """A `tensorboard` link planted in a run folder: training wrote its events into the folder it named; a file in
    its place ended in tensorboard's FileExistsError traceback and a failed run."""
    pytest.importorskip("tensorboard")
    from cnnlab.engine import train
    from tests.conftest import tiny_config

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name, plant in (("link", lambda p: p.symlink_to(elsewhere)), ("file", lambda p: p.write_text("x"))):
        run = tmp_path / name
        run.mkdir()
        plant(run / "tensorboard")
        with pytest.raises(CnnlabError, match="symbolic link, which cnnlab does not follow|in the way of --tensorboard"):
            train(tiny_config(tiny_idx, tensorboard=True, max_steps=1), out=run, quiet=True, log=lambda m: None)
    assert list(elsewhere.iterdir()) == []


def test_evaluate_names_a_planted_lock_not_a_process_that_does_not_exist(finished, tmp_path, capsys):
    from cnnlab.cli import main

    (finished / ".lock").unlink(missing_ok=True)
    (finished / ".lock").symlink_to(tmp_path / "notes.txt")
    assert main(["evaluate", str(finished), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "no report written:" in out and "is a symbolic link, which cnnlab does not follow" in out
    assert "another cnnlab process" not in out and not (tmp_path / "notes.txt").exists()


def test_names_to_copy_paste_back_on_any_stdout(monkeypatch):
    """Shown names went through stdout's own escaping (`'r\\xe9sum\\xe9 run'`: a folder that does not exist) and a
    name starting with `-` was read as an option."""
    import io
    import subprocess
    import sys

    from cnnlab.errors import shell_quoted

    assert shell_quoted("-dash") == "./-dash"
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    for name in ("résumé run", "nl\né", "emoji😀"):
        shown = shell_quoted(name)
        assert shown.isascii()
        back = subprocess.run(["bash", "-c", f"printf %s {shown}"], capture_output=True).stdout
        assert back == name.encode(), (name, shown)
