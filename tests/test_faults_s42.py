"""Faults found by the testers of session 42 (cncC, docD): a run read between its epoch's two saves (last.pt, then
best.pt) was said to have lost best.pt; a file system out of inodes was said to be out of space; a SIGKILLed
``analyze`` left its temp file in a results folder nothing locks again; ``cnnlab runs`` named a flag that does not
exist. docs/reliability.md lists them."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import cnnlab
from cnnlab.cli import build_parser, main
from cnnlab.cli.runs import format_runs
from cnnlab.config import TrainConfig
from cnnlab.data.load import load_dataset
from cnnlab.engine import train
from cnnlab.errors import CheckpointError, WriteError
from cnnlab.fileio import NO_INODES, atomic_write_bytes, out_of_room
from cnnlab.runs import describe_run

from conftest import HeldElsewhere, write_idx_dataset
from test_data_hostile import served_by_fake_source
from test_folder_own_data import write_pngs

QUIET = dict(quiet=True, log=lambda m: None)
ARGS = ["--model", "basic_cnn", "--batch-size", "32", "--lr", "0.05", "--device", "cpu", "--threads", "1", "--quiet"]


def cfg_for(tiny_idx, **kw) -> TrainConfig:
    base = dict(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=1, batch_size=32, device="cpu", lr=0.05)
    return TrainConfig(**{**base, **kw})


# ----------------------------------------------------------------------------- 1: between an epoch's two saves


def test_a_run_between_its_epochs_two_saves_is_training_not_a_run_that_lost_its_best_pt(tiny_idx, tmp_path, capsys):
    """In its first epoch's end, between last.pt and best.pt, a run that trains was told to have lost its best.pt
    to a full disk or a kill, and to resume (which is refused: it trains)."""
    run = tmp_path / "runs" / "r"
    train(cfg_for(tiny_idx), out=run, **QUIET)
    for name in ("best.pt", "best.pt.sha256", "status.json", "summary.json"):  # last.pt and metrics.csv written
        (run / name).unlink()
    with HeldElsewhere(run):
        for command in (["evaluate", str(run), "--checkpoint", "best"], ["export", str(run), "--checkpoint", "best"]):
            assert main(command) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "it is training now and has not written best.pt yet" in err, err
            assert "--checkpoint last" in err and "resume" not in err and "lost" not in err
        with pytest.raises(CheckpointError, match="it is training now and has not written best.pt yet") as caught:
            cnnlab.load_run(run).checkpoint("best")
        assert "resume" not in str(caught.value)
    assert main(["evaluate", str(run), "--checkpoint", "best"]) == 2  # no process holds it: the save was lost
    err = capsys.readouterr().err
    assert "its best epoch's save was lost" in err and f"cnnlab train --resume {run}" in err


# ----------------------------------------------------------------------------- 2: no free inodes


class FewInodes:
    """A file system at ``folder`` with plenty of space and ``spare`` inodes left (None: as many as wanted, until a
    temp file whose name starts with ``fill_at`` is made, when they run out): making a file or a folder there beyond
    them fails with ENOSPC, and ``os.statvfs`` counts them as ``df -i`` does (removing a file frees its inode)."""

    def __init__(self, monkeypatch, folder: Path, spare: int | None = None, fill_at: str | None = None):
        self.folder = folder.resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.limit = None if spare is None else self.used() + spare
        real_statvfs, real_mkstemp, real_mkdir = os.statvfs, tempfile.mkstemp, os.mkdir

        def statvfs(path):
            if not self.inside(path):
                return real_statvfs(path)
            limit = self.limit if self.limit is not None else self.used() + 1000
            free = max(0, limit - self.used())
            return os.statvfs_result((4096, 4096, 1 << 20, 1 << 19, 1 << 19, limit, free, free, 0, 255))

        def mkstemp(*args, prefix=None, dir=None, **kwargs):
            if dir is not None and self.inside(dir):
                if fill_at and str(prefix).startswith(fill_at) and self.limit is None:
                    self.limit = self.used()
                self.take()
            return real_mkstemp(*args, prefix=prefix, dir=dir, **kwargs)

        def mkdir(path, *args, **kwargs):
            if self.inside(path) and not os.path.isdir(path):
                self.take()
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "statvfs", statvfs)
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(os, "mkdir", mkdir)

    def inside(self, path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(self.folder)

    def used(self) -> int:
        return 1 + sum(len(dirs) + len(files) for _, dirs, files in os.walk(self.folder))

    def take(self) -> None:
        if self.limit is not None and self.used() >= self.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_what_a_file_system_has_run_out_of_is_told_apart(tmp_path, monkeypatch):
    real = os.statvfs

    def fake(blocks_free: int, inodes_free: int, inodes: int = 100):
        monkeypatch.setattr(os, "statvfs", lambda p: os.statvfs_result(
            (4096, 4096, 1000, blocks_free, blocks_free, inodes, inodes_free, inodes_free, 0, 255)))

    fake(500, 0)
    assert out_of_room(tmp_path / "not" / "made") == "inodes"  # its nearest folder that exists
    fake(0, 0)
    assert out_of_room(tmp_path) == "space"
    fake(500, 0, inodes=0)  # btrfs counts no inodes
    assert out_of_room(tmp_path) is None
    monkeypatch.setattr(os, "statvfs", real)
    assert out_of_room(tmp_path) is None
    FewInodes(monkeypatch, tmp_path / "disk", spare=0)
    with pytest.raises(WriteError) as caught:
        atomic_write_bytes(tmp_path / "disk" / "a.json", b"{}")
    assert str(caught.value) == (f"cannot write {tmp_path / 'disk' / 'a.json'}: {NO_INODES[0]}; {NO_INODES[1]} and run "
                                 "it again (the previous version of the file, if any, is intact)")
    assert "free some disk space" not in str(caught.value) and caught.value.errno == errno.ENOSPC


def test_a_run_whose_file_system_runs_out_of_inodes_says_so_not_that_the_disk_is_full(tiny_idx, tmp_path,
                                                                                       monkeypatch, capsys):
    """tmpfs of 50 MB and 8 inodes: `cannot write ti2/run/best.pt: No space left on device; free some disk space,
    then continue with: cnnlab train --resume ti2/run`, where `df -h` showed the disk 1% used (`df -i` 100%); the
    status.json it could not write either left `cnnlab runs` saying "killed"."""
    disk = tmp_path / "disk"
    run = disk / "run"
    FewInodes(monkeypatch, disk, fill_at=f".best.pt.{os.getpid()}-")  # (not best.pt.sha256, written first)
    assert main(["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--epochs", "2", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "free some disk space" not in err and "No space left" not in err, err
    assert err.rstrip().endswith(f"cannot write {run / 'best.pt'}: {NO_INODES[0]}; {NO_INODES[1]}, then continue "
                                 f"with: cnnlab train --resume {run}")
    assert json.loads((run / "status.json").read_text())["status"] == "running"  # as it began: none could be written
    row = describe_run(run)
    assert row["status"] == "stopped" and "no free inodes left" in row["detail"]
    assert row["detail"].endswith(f"{NO_INODES[1]} before resuming")
    monkeypatch.setattr(os, "statvfs", lambda p: os.statvfs_result((4096, 4096, 1000, 0, 0, 100, 50, 50, 0, 255)))
    assert describe_run(run)["detail"].endswith("its file system has no space left, which may be why it stopped: "
                                                "free some disk space before resuming")
    monkeypatch.undo()  # files deleted: the listing says what it said before, the resume it named works
    assert describe_run(run)["detail"].startswith("killed") and "file system" not in describe_run(run)["detail"]
    assert main(["train", "--resume", str(run), "--threads", "1", "--quiet"]) == 0


def test_the_data_cache_on_a_file_system_out_of_inodes_says_so(tmp_path, monkeypatch):
    """`data fetch mnist` with CNNLAB_HOME on a tmpfs of 5 inodes: `could not cache mnist ... (no space left on
    device) ... free some space`. The staging folder it made is removed before the line is written, freeing inodes:
    the write's own error says what ran out."""
    src = write_idx_dataset(tmp_path / "src")
    served_by_fake_source(monkeypatch, src)
    home = tmp_path / "home"
    FewInodes(monkeypatch, home, spare=3)  # datasets/, tiny/ and the staging folder; no file
    messages: list[str] = []
    load_dataset("tiny", home=home, log=messages.append)
    (warning,) = [m for m in messages if m.startswith("warning")]
    assert f"could not cache tiny in {home / 'datasets' / 'tiny'} ({NO_INODES[0]})" in warning
    assert warning.endswith(f"{NO_INODES[1]}, or set CNNLAB_HOME to a directory on another disk")
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    messages.clear()
    load_dataset(f"folder:{write_pngs(tmp_path / 'pics')}", log=messages.append)
    (warning,) = [m for m in messages if m.startswith("warning")]
    assert "could not cache the converted images" in warning and f"({NO_INODES[0]})" in warning
    assert f"{NO_INODES[1]}, or set CNNLAB_HOME" in warning


# ----------------------------------------------------------------------------- 3: a killed analysis's temp file

#: ``cnnlab analyze`` SIGKILLed as it writes its second file (the first figure, after gradients.json).
KILLED_AT_ITS_FIGURE = ("import os, signal, sys\n"
                        "from cnnlab.cli import main\n"
                        "real, calls = os.fsync, []\n"
                        "def fsync(fd):\n"
                        "    calls.append(fd)\n"
                        "    if len(calls) == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
                        "    real(fd)\n"
                        "os.fsync = fsync\n"
                        "main(sys.argv[1:])\n")


def test_the_temp_file_a_killed_analysis_left_in_its_own_folder_goes_with_the_next_analysis(tiny_idx, tmp_path,
                                                                                            monkeypatch):
    """`analyze gradients` without --out, SIGKILLed between its files: runs/gradients-idx-.../ kept
    `.gradients.png.PID-xxxxxxxx.tmp` for good (a re-run makes a folder of its own; nothing locks that one again).
    The next analysis removes it; the JSON, and folders an analysis holds or that are no analysis's, stay."""
    command = ["analyze", "gradients", "--dataset", f"idx:{tiny_idx}", "--depths", "2", "--width", "2", "--seeds",
               "1", "--epochs", "0", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_ITS_FIGURE, *command], cwd=tmp_path, env=env,
                            capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (dead,) = (tmp_path / "runs").iterdir()
    left = sorted(p.name for p in dead.iterdir())
    assert left[0] == ".analysis.lock" and re.fullmatch(r"\.gradients\.png\.\d+-\w{8}\.tmp", left[1]), left
    assert left[2:] == ["gradients.json"]
    dead_pid = left[1].split(".")[3].split("-")[0]
    busy, mine = tmp_path / "runs" / "gradients-idx-busy", tmp_path / "runs" / "notes"
    for folder in (busy, mine):
        folder.mkdir()
        (folder / f".x.json.{dead_pid}-abcdefgh.tmp").write_text("{")
    monkeypatch.chdir(tmp_path)
    with HeldElsewhere(busy, ".analysis.lock"):
        assert main(command) == 0
    assert sorted(p.name for p in dead.iterdir()) == [".analysis.lock", "gradients.json"]
    assert (busy / f".x.json.{dead_pid}-abcdefgh.tmp").exists() and (mine / f".x.json.{dead_pid}-abcdefgh.tmp").exists()
    assert len(list((tmp_path / "runs").iterdir())) == 4  # the new analysis's own folder


# ----------------------------------------------------------------------------- 4: the legend of cnnlab runs


def _options(parser) -> set[str]:
    """Every option of ``parser`` and of its commands."""
    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                found |= _options(command)
    return found


def test_the_runs_legend_names_only_flags_that_exist():
    """`+ best of evaluations cut to the first images of the split (--eval-limit, ...)`: there is no such flag
    (`cnnlab train --eval-limit 50`: unrecognized arguments); eval_limit is set in the API or a --config file."""
    row = {"run": "runs/r", "model": "resnet", "dataset": "idx:/d", "recipe": "lecture", "teacher": "runs/t/last.pt",
           "epochs": 2, "epochs_done": 2, "final_acc": 90.0, "best_acc": 91.0, "best_split": "test", "eval_limit": 50,
           "train_seconds": 3.0, "status": "finished", "detail": ""}
    legend = format_runs([row]).splitlines()[2:]
    assert len(legend) == 2 and "eval_limit" in legend[1]
    flags = re.findall(r"--[a-z][\w-]*", "\n".join(legend))
    assert flags and set(flags) <= _options(build_parser()), flags
