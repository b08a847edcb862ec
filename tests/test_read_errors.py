"""A read that fails after its open (the fltF sweep: strace's ``inject=read:error=EIO``, ENOMEM, EMFILE): told as an
open that fails, in one line naming the file and the fix its error takes; never taken for damage, so nothing good
is fetched again, rewritten or deleted. Also the saves that fail once a run holds a checkpoint (the resume that
continues it), and a rename interrupted by a signal (EINTR). The errors are faked here (the suite runs as root,
without strace): the files are opened, and their reads fail. docs/reliability.md lists them."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import pathlib
from pathlib import Path

import pytest

import cnnlab.checkpoint
import cnnlab.data.fastcopy
import cnnlab.data.folder
import cnnlab.data.idx
import cnnlab.runs
from cnnlab.api import list_runs, load_run
from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.data import fastcopy as fc
from cnnlab.data.status import dataset_status
from cnnlab.engine import train
from cnnlab.errors import CnnlabError, DataError
from cnnlab.fileio import atomic_write_text, write_error
from apps_helpers import quiet
from conftest import tiny_config
import test_fast_copy
from test_fast_copy import count_md5_reads, same

tiny = test_fast_copy.tiny  # the fixture: a catalog entry "tiny" served by a fake source (spec, home, calls)

EIO_FIX = "the disk reported an error: try again, and if it persists copy the data off that disk"


class _FailingReads(io.RawIOBase):
    """An open file whose every read fails with ``code``, as a disk's input/output error after a good open."""

    def __init__(self, stream, code: int):
        super().__init__()
        self.stream, self.code = stream, code

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.stream.seekable()

    def seek(self, *a):
        return self.stream.seek(*a)

    def tell(self):
        return self.stream.tell()

    def readinto(self, buf):
        raise OSError(self.code, os.strerror(self.code))

    def read(self, *a):
        raise OSError(self.code, os.strerror(self.code))

    def close(self) -> None:
        self.stream.close()
        super().close()


def failing_reads(monkeypatch, module, name: str, code: int = errno.EIO, nth: int | None = None) -> None:
    """``module.open_regular`` opens a file called ``name`` as it is, and every read of it then fails with ``code``
    (with ``nth``: only the reads of its ``nth`` open, counted from 1, as strace's ``when=`` picks one read)."""
    real = module.open_regular
    opened = []

    def open_regular(path, *a, **k):
        stream, st = real(path, *a, **k)
        if Path(path).name != name:
            return stream, st
        opened.append(path)
        return (_FailingReads(stream, code), st) if nth is None or len(opened) == nth else (stream, st)

    monkeypatch.setattr(module, "open_regular", open_regular)


def failing_stat(monkeypatch, *paths: Path, code: int = errno.EIO, lstat: bool = False) -> None:
    """``os.stat`` (what pathlib's is_file(), is_dir() and exists() call; with ``lstat``, ``os.lstat`` too) of any of
    ``paths`` fails with ``code``, as strace's ``inject=newfstatat:error=EIO`` makes it; opening and reading them
    still work."""
    names = {os.fspath(p) for p in paths}

    def wrap(real):
        def call(path, *a, **k):
            if isinstance(path, (str, os.PathLike)) and os.fspath(path) in names:
                raise OSError(code, os.strerror(code), os.fspath(path))
            return real(path, *a, **k)
        return call

    monkeypatch.setattr(os, "stat", wrap(os.stat))
    if lstat:
        monkeypatch.setattr(os, "lstat", wrap(os.lstat))


def snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted(folder.iterdir())}


# ----------------------------------------------------------------------------- run folders (defect 1)


@pytest.mark.parametrize("name, code, said", [
    ("config.json", errno.EIO, f"config.json: cannot be read (input/output error); {EIO_FIX}"),
    ("status.json", errno.ENOMEM, "status.json: cannot be read (out of memory); free some memory"),
    ("summary.json", errno.EIO, f"summary.json: cannot be read (input/output error); {EIO_FIX}"),
])
def test_a_run_file_whose_read_fails_is_one_row_and_every_other_run_is_listed(finished, monkeypatch, name, code, said):
    """`cnnlab runs` with a read error on one run's config.json (status.json, summary.json): a traceback, no run
    listed at all."""
    other = finished.parent / "r2"
    train(tiny_config(finished.parent.parent / "tiny", epochs=1), out=other, quiet=True, log=lambda m: None)
    failing_reads(monkeypatch, cnnlab.runs, name, code)  # every run's file of that name: r1's and r2's
    rows = {Path(r["run"]).name: r for r in list_runs(finished.parent)}
    assert set(rows) == {"r1", "r2"}
    assert all(r["status"] == "damaged" and said in r["detail"] and "\n" not in r["detail"] for r in rows.values())
    monkeypatch.undo()
    assert {r["status"] for r in list_runs(finished.parent)} == {"finished"}  # the files were whole


def test_load_run_of_a_run_file_whose_read_fails_is_one_line(finished, monkeypatch):
    failing_reads(monkeypatch, cnnlab.runs, "config.json")
    with pytest.raises(CnnlabError, match=rf"config\.json: cannot be read \(input/output error\); {EIO_FIX}$"):
        load_run(finished)


def test_evaluate_of_a_run_whose_summary_cannot_be_read_is_one_line_and_keeps_it(finished, monkeypatch, capsys):
    """`cnnlab evaluate RUN` with a read error on summary.json: a traceback (and, read as absent, the training's
    figures in it, train_seconds and target, would have been lost to the new report)."""
    before = (finished / "summary.json").read_bytes()
    failing_reads(monkeypatch, cnnlab.runs, "summary.json")
    assert main(["evaluate", str(finished)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"summary.json: cannot be read (input/output error); {EIO_FIX} (no report written" in err
    assert (finished / "summary.json").read_bytes() == before


def test_a_resume_whose_previous_summary_cannot_be_read_finishes_its_report(tiny_idx, tmp_path, monkeypatch):
    """`train --resume RUN` with a read error on the run's summary.json: a traceback after training (last.pt at the
    new step, summary.json still the old one, and the run listed "failed ([Errno 5] Input/output error)")."""
    run = tmp_path / "r"
    train(tiny_config(tiny_idx, epochs=2, max_steps=3), out=run, quiet=True, log=lambda m: None)
    failing_reads(monkeypatch, cnnlab.runs, "summary.json")
    said = []
    result = train(tiny_config(tiny_idx, epochs=2), resume=run, log=said.append)
    monkeypatch.undo()
    (warning,) = [m for m in said if m.startswith("warning: ") and "summary.json" in m]
    assert f"summary.json: cannot be read (input/output error); {EIO_FIX}; the run's new summary.json" in warning
    assert json.loads((run / "summary.json").read_text())["accuracy"] == result.final.accuracy
    assert json.loads((run / "status.json").read_text())["status"] == "finished"


# ----------------------------------------------------------------------------- checkpoints (defects 2 and 6)


def test_a_checkpoint_is_opened_once_so_a_second_open_cannot_fail(finished, monkeypatch):
    """The checkpoint was read and verified, then opened again unguarded (its first bytes, its zip directory): a
    failure of that second open (strace openat:error=ENOMEM:when=2) was an OSError traceback in evaluate, predict,
    export and resume."""
    path = str(finished / "last.pt")
    opened = []
    real = io.open

    def second_open_fails(file, *a, **k):
        if os.fspath(file) == path if isinstance(file, (str, os.PathLike)) else False:
            opened.append(1)
            if len(opened) > 1:
                raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM), path)
        return real(file, *a, **k)

    monkeypatch.setattr(io, "open", second_open_fails)
    monkeypatch.setattr(builtins, "open", second_open_fails)
    assert load_checkpoint(finished / "last.pt")["format"] == "cnnlab-checkpoint"
    assert len(opened) == 1


@pytest.mark.parametrize("code, said", [
    (errno.EIO, f"cannot be read (input/output error); {EIO_FIX}"),
    (errno.EMFILE, "cannot be read (too many open files); raise the open-file limit (ulimit -n)"),
    (errno.ENOMEM, "cannot be read (out of memory); free some memory"),
])
def test_a_checkpoint_or_sidecar_whose_read_fails_is_named_with_the_fix_its_error_takes(finished, monkeypatch, code,
                                                                                         said):
    """Every read error of last.pt got "check the file's permissions", and a read error of its sidecar (an error
    without a file name, unlike a failed open) was blamed on last.pt."""
    for target in ("last.pt", "last.pt.sha256"):
        victim = finished / target
        real_bytes, real_text = pathlib.Path.read_bytes, pathlib.Path.read_text

        def read_bytes(self, real=real_bytes, victim=victim):
            if self == victim:
                raise OSError(code, os.strerror(code))  # a read's error: no file name in it
            return real(self)

        def read_text(self, *a, real=real_text, victim=victim, **k):
            if self == victim:
                raise OSError(code, os.strerror(code))
            return real(self, *a, **k)

        with monkeypatch.context() as m:
            m.setattr(pathlib.Path, "read_bytes", read_bytes)
            m.setattr(pathlib.Path, "read_text", read_text)
            with pytest.raises(CnnlabError) as caught:
                load_checkpoint(finished / "last.pt")
        message = str(caught.value)
        assert message.startswith(f"{victim}: {said}") and "permissions" not in message, message
        assert message.endswith("(the checksum of last.pt)") == (target == "last.pt.sha256")


def test_a_checkpoint_refused_with_eacces_names_the_file_not_the_folders(finished, monkeypatch, capsys):
    """EACCES on last.pt itself: its second open's said "cannot reach .../last.pt (permission denied); check the
    permissions of the folders on its way" (strace openat:error=EACCES:when=2), its first "check the file's
    permissions"; now the one open, and the fix of permission denied on a file."""
    path = str(finished / "last.pt")
    real = io.open

    def denied(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real(file, *a, **k)

    monkeypatch.setattr(io, "open", denied)
    monkeypatch.setattr(builtins, "open", denied)
    assert main(["evaluate", str(finished)]) == 2
    err = capsys.readouterr().err
    assert err == f"cnnlab: error: {path}: cannot be read (permission denied); fix its permissions (chmod u+r, and u+x " \
                  "for a folder) or run as its owner\n"


# ----------------------------------------------------------------------------- the data cache (defects 3, 4, 5)


def test_a_read_error_on_the_fast_copy_falls_back_to_the_gz_files_and_rewrites_nothing(tiny, monkeypatch):
    """A read error on a .npy of the fast copy: its four .npy files and fast-copy.json (55 MB for MNIST) were written
    again onto a disk that had just failed a read, and the note named no file."""
    _, home, calls = tiny
    first = load_dataset("tiny", home=home, log=quiet)
    cache = home / "datasets" / "tiny"
    before = snapshot(cache)
    failing_reads(monkeypatch, cnnlab.data.fastcopy, "train-images-idx3-ubyte.npy")
    reads = count_md5_reads(monkeypatch)
    messages = []
    again = load_dataset("tiny", home=home, log=messages.append)
    assert same(first, again) and len(reads) == 4 and len(calls) == 1
    (note,) = [m for m in messages if m.startswith("note: the fast copy of tiny")]
    assert f"train-images-idx3-ubyte.npy: cannot be read (input/output error); {EIO_FIX}" in note
    assert "the fast copy left as it is" in note and "writing it again" not in note
    assert snapshot(cache) == before


def test_a_read_error_on_a_cached_gz_file_is_one_line_and_fetches_nothing(tiny, monkeypatch):
    """A read error on a cached .gz file read the slow way: "cache of mnist is damaged or unreadable; fetching again",
    then, offline, "no source reachable"; online, all 8 good cache files downloaded and written again."""
    _, home, calls = tiny
    load_dataset("tiny", home=home, log=quiet)
    cache = home / "datasets" / "tiny"
    before = snapshot(cache)
    failing_reads(monkeypatch, cnnlab.data.idx, "train-images-idx3-ubyte.gz")
    messages = []
    with pytest.raises(DataError) as caught:
        load_dataset("tiny", home=home, log=messages.append, full_check=True)
    message = str(caught.value)
    assert message.startswith(f"{cache / 'train-images-idx3-ubyte.gz'}: cannot be read (input/output error); {EIO_FIX}")
    assert "\n" not in message and "delete" not in message and "fetch" not in message
    assert len(calls) == 1 and not any("fetching again" in m for m in messages)
    assert snapshot(cache) == before


def test_data_info_says_a_file_could_not_be_read_not_that_it_does_not_match(tiny, monkeypatch, capsys):
    """`data info --verify` with a read error on fast-copy.json: a traceback; plain `data info`: "fast copy does not
    match (rewritten on the next load)"; a read error on a .gz file: "cache unreadable (see its files: fix their
    permissions, or delete them and fetch again)"."""
    _, home, _ = tiny
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    load_dataset("tiny", log=quiet)
    cache = home / "datasets" / "tiny"
    before = snapshot(cache)
    with monkeypatch.context() as m:
        failing_reads(m, cnnlab.data.fastcopy, fc.MANIFEST)
        for full_check in (False, True):
            row = {r["name"]: r for r in dataset_status(full_check=full_check)}["tiny"]
            assert row["status"] == "cached and verified" and row["checked"] == "md5 now"
            (manifest,) = [f for f in row["files"] if f["file"] == fc.MANIFEST]
            assert f"fast-copy.json: cannot be read (input/output error); {EIO_FIX}" in manifest["status"]
            assert "does not match" not in manifest["status"]
        assert main(["data", "info", "--verify"]) == 0
    with monkeypatch.context() as m:
        failing_reads(m, cnnlab.data.idx, "train-images-idx3-ubyte.gz")
        row = {r["name"]: r for r in dataset_status(full_check=True)}["tiny"]
    assert row["status"] == ("cache unreadable: could not be read (input/output error on train-images-idx3-ubyte.gz): "
                             f"{EIO_FIX}")
    assert "delete" not in row["status"] and "permissions" not in row["status"]
    assert snapshot(cache) == before
    assert "Traceback" not in capsys.readouterr().out


def test_a_folder_dataset_whose_image_reads_run_short_of_memory_stops_instead_of_dropping_them(tmp_path, monkeypatch):
    """(Held before, kept: a read's error is now told as an open's.) An image whose read fails for want of memory
    (or descriptors) is the machine's problem, not the image's: the dataset is not built without it."""
    import cnnlab.data.folder
    from cnnlab.imageio import ResourceError
    from test_data_hostile import make_pics

    root = make_pics(tmp_path / "pics")
    failing_reads(monkeypatch, cnnlab.data.folder, "2.png", errno.ENOMEM)
    with pytest.raises(ResourceError, match=r"2\.png: ") as caught:
        load_dataset(f"folder:{root}", home=tmp_path / "home", log=quiet)
    assert "\n" not in str(caught.value) and "memory" in str(caught.value)


# ----------------------------------------------------------------------------- saves (defect 7), EINTR (defect 8)


@pytest.mark.parametrize("code", [errno.EIO, errno.EXDEV])
def test_a_failed_save_after_a_checkpoint_names_the_resume_that_continues_the_run(tiny_idx, tmp_path, monkeypatch,
                                                                                 capsys, code):
    """EIO (an fsync) or EXDEV (a rename) on a save once last.pt was written: "check the path and the disk", no way
    on named (a full disk's line named the resume); the run's folder holds a run, so running it again is refused."""
    run = tmp_path / "r"
    real = cnnlab.checkpoint.atomic_write_bytes

    def write(path, data):
        if Path(path).name == "best.pt":
            raise write_error(path, OSError(code, os.strerror(code)))
        real(path, data)

    monkeypatch.setattr(cnnlab.checkpoint, "atomic_write_bytes", write)
    command = ["train", "--dataset", f"idx:{tiny_idx}", "--model", "basic_cnn", "--batch-size", "32", "--lr", "0.05",
               "--device", "cpu", "--threads", "1", "--quiet", "--epochs", "2", "--out", str(run)]
    assert main(command) == 2
    err = capsys.readouterr().err
    how = f"check the path and the disk, then continue with: cnnlab train --resume {run}"
    assert err.count("\n") == 1 and err.rstrip().endswith(how), err
    assert f"cannot write {run / 'best.pt'}: {os.strerror(code)}" in err
    assert json.loads((run / "status.json").read_text())["detail"].endswith(how)
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--threads", "1", "--quiet"]) == 0  # the way it names works


def test_a_rename_interrupted_by_a_signal_is_tried_again(tmp_path, monkeypatch):
    """strace rename:error=EINTR: "cannot write ei/config.json: Interrupted system call" ended the run."""
    real = os.replace
    failed = []

    def replace(src, dst, *a, **k):
        if not failed:
            failed.append(dst)
            raise InterruptedError(errno.EINTR, os.strerror(errno.EINTR))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    atomic_write_text(tmp_path / "config.json", "{}\n")
    assert failed and (tmp_path / "config.json").read_text() == "{}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left


# ----------------------------------------------------------------------------- atkK: compare, folder cache, stat, rehash


def test_compare_over_a_run_file_that_cannot_be_read_says_so_and_rewrites_nothing(tiny_idx, tmp_path, monkeypatch):
    """atkK 1. strace read:error=EIO on a finished compare run's metrics.csv: "metrics.csv damaged: written again
    from last.pt's history" (a good file replaced), or the finished run "resumed", its status.json written again
    (compare's _epochs took the error for damage, finished_run for an unfinished run). Each of its reads fails in
    turn (the nth open of the file), then every read; then summary.json's and config.json's."""
    from cnnlab.compare import compare
    from cnnlab.config import TrainConfig

    out = tmp_path / "cmp"
    base = TrainConfig(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=1, batch_size=32, device="cpu", lr=0.05)
    compare(["basic_cnn"], 1, base, out, log=lambda m: None)
    run = next(out.glob("basic_cnn-seed0-*"))
    before = snapshot(run)
    for name, nth in [("metrics.csv", 1), ("metrics.csv", 2), ("metrics.csv", 3), ("metrics.csv", None),
                      ("summary.json", None), ("config.json", None)]:
        logs = []
        with monkeypatch.context() as m:
            failing_reads(m, cnnlab.runs, name, nth=nth)
            with pytest.raises(CnnlabError) as caught:
                compare(["basic_cnn"], 1, base, out, log=logs.append)
        message = str(caught.value)
        assert f"{name}: cannot be read (input/output error); {EIO_FIX}" in message, (name, nth, message)
        assert "\n" not in message and not any("written again" in m or "resumed" in m for m in logs), (name, nth, logs)
        assert snapshot(run) == before, (name, nth)
    logs = []
    compare(["basic_cnn"], 1, base, out, log=logs.append)  # the files were whole: reused as they are
    assert len(logs) == 1 and ": reused, final " in logs[0] and snapshot(run) == before


def _failing_npz_reads(monkeypatch, name: str) -> None:
    """Every read of a file called ``name`` fails with EIO, however it is opened: by the folder module's
    open_regular, or by ``open()`` (what ``np.load(path)`` calls)."""
    failing_reads(monkeypatch, cnnlab.data.folder, name)
    real = builtins.open

    def opened(file, *a, **k):
        stream = real(file, *a, **k)
        if isinstance(file, (str, os.PathLike)) and Path(file).name == name:
            return _FailingReads(stream, errno.EIO)
        return stream

    monkeypatch.setattr(builtins, "open", opened)


def test_a_folder_datasets_cache_that_cannot_be_read_is_one_line_and_kept(tmp_path, monkeypatch):
    """atkK 2. A read error on a folder: dataset's converted images.npz: "converted cache ... is damaged ([Errno 5]
    Input/output error); converting again", and the cache written again (every load, on a disk that had just failed a
    read)."""
    from test_data_hostile import make_pics

    root, home = make_pics(tmp_path / "pics"), tmp_path / "home"
    first = load_dataset(f"folder:{root}", home=home, log=quiet)
    (cache,) = (home / "datasets").glob("folder-*")
    before = snapshot(cache)
    messages = []
    with monkeypatch.context() as m:
        _failing_npz_reads(m, "images.npz")
        with pytest.raises(DataError) as caught:
            load_dataset(f"folder:{root}", home=home, log=messages.append)
    message = str(caught.value)
    assert f"{cache / 'images.npz'}: cannot be read (input/output error); {EIO_FIX}" in message, message
    assert "the cache is left as it is" in message and "\n" not in message and "damaged" not in message
    assert not any("convert" in m for m in messages) and snapshot(cache) == before
    with monkeypatch.context() as m:  # `data info` said "cache damaged (BadZipFile)" for a read error past the first
        failing_reads(m, cnnlab.data.folder, "images.npz", nth=None)
        (row,) = [r for r in dataset_status(home=home) if r["name"].startswith("folder:")]
    assert row["status"] == f"cache unreadable (input/output error); {EIO_FIX}", row
    again = load_dataset(f"folder:{root}", home=home, log=messages.append)  # whole: used as it is
    assert (again.train_images == first.train_images).all() and snapshot(cache) == before


def test_a_folder_datasets_damaged_cache_is_still_converted_again(tmp_path):
    """(Kept with atkK 2.) Content that is damaged is no read error: "damaged ...; converting again", as before."""
    from test_data_hostile import make_pics

    root, home = make_pics(tmp_path / "pics"), tmp_path / "home"
    load_dataset(f"folder:{root}", home=home, log=quiet)
    (cache,) = (home / "datasets").glob("folder-*")
    (cache / "images.npz").write_bytes((cache / "images.npz").read_bytes()[:-100])
    messages = []
    load_dataset(f"folder:{root}", home=home, log=messages.append)
    assert any("is damaged" in m and "converting again" in m for m in messages), messages


def test_the_stat_helpers_turn_an_io_error_into_the_cannot_read_line(tmp_path, monkeypatch):
    """atkK 3. Python 3.11's Path.is_file(), is_dir() and exists() raise every stat error but ENOENT, ENOTDIR, EBADF
    and ELOOP: cnnlab.fileio's is_file/is_dir/exists/lexists say it in one line (or, given ``if_unknown``, take it
    for that), and nothing there is still False."""
    from cnnlab import fileio
    from cnnlab.errors import DataUnreadable

    there = tmp_path / "f"
    there.write_text("x")
    failing_stat(monkeypatch, there, lstat=True)
    for check in (fileio.is_file, fileio.is_dir, fileio.exists, fileio.lexists):
        with pytest.raises(DataUnreadable, match=rf"^{there}: cannot be read \(input/output error\); {EIO_FIX}$"):
            check(there)
    assert fileio.is_file(there, if_unknown=True) and not fileio.is_dir(there, if_unknown=False)
    assert not fileio.is_file(tmp_path / "none") and not fileio.exists(tmp_path / "none" / "x")


@pytest.mark.parametrize("argv", [["evaluate", "{run}"], ["predict", "{run}", "{image}"],
                                  ["export", "{run}", "--out", "{tmp}/m.onnx"]])
def test_a_checkpoint_whose_stat_fails_is_one_line_in_every_command(finished, tmp_path, monkeypatch, capsys, argv):
    """atkK 3. strace newfstatat:error=EIO on last.pt: an `OSError: [Errno 5] Input/output error` traceback in
    evaluate, predict and export (checkpoint.resolve_checkpoint's candidate.is_file())."""
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "d.png")
    failing_stat(monkeypatch, finished / "last.pt")
    args = [a.format(run=finished, image=tmp_path / "d.png", tmp=tmp_path) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == f"cnnlab: error: {finished / 'last.pt'}: cannot be read (input/output error); {EIO_FIX}\n", err


def test_runs_whose_files_stat_fails_are_one_row_each_and_the_others_listed(finished, monkeypatch, capsys):
    """atkK 3. strace newfstatat:error=EIO on one run's config.json: `cnnlab runs` a traceback from runs.is_run_dir,
    nothing listed; list_runs() and load_run() raised a bare OSError."""
    other = finished.parent / "r2"
    train(tiny_config(finished.parent.parent / "tiny", epochs=1), out=other, quiet=True, log=lambda m: None)
    with monkeypatch.context() as m:
        failing_stat(m, finished / "config.json")  # the stat alone (strace when=1): the file still reads
        assert {Path(r["run"]).name: r["status"] for r in list_runs(finished.parent)} == {"r1": "finished",
                                                                                        "r2": "finished"}
        with pytest.raises(CnnlabError, match=rf"config\.json: cannot be read \(input/output error\); {EIO_FIX}$"):
            cnnlab.runs.is_run_dir(finished)
        with pytest.raises(CnnlabError, match=rf"config\.json: cannot be read \(input/output error\); {EIO_FIX}$"):
            load_run(finished)
    for name in ("config.json", "last.pt", "metrics.csv"):  # every stat and lstat of it fails
        with monkeypatch.context() as m:
            failing_stat(m, finished / name, lstat=True)
            rows = {Path(r["run"]).name: r for r in list_runs(finished.parent)}
            assert main(["runs", "--root", str(finished.parent)]) == 0
        assert rows["r2"]["status"] == "finished", name
        assert rows["r1"]["status"] == "damaged", (name, rows["r1"])
        assert rows["r1"]["detail"].startswith(f"{name}: cannot be read (input/output error); {EIO_FIX}"), rows["r1"]
        out = capsys.readouterr().out
        assert "Traceback" not in out and len(out.splitlines()) == 3, out


def test_a_resume_whose_checkpoints_stat_fails_is_one_line_and_changes_nothing(finished, monkeypatch, capsys):
    """atkK 3. `train --resume RUN` with newfstatat:error=EIO on last.pt: a traceback (engine's where.exists())."""
    files = lambda: {k: v for k, v in snapshot(finished).items() if k != ".lock"}  # noqa: E731 (its pid: the lock)
    before = files()
    failing_stat(monkeypatch, finished / "last.pt")
    assert main(["train", "--resume", str(finished), "--threads", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"cnnlab: error: {finished / 'last.pt'}: cannot be read (input/output error); {EIO_FIX}\n", err
    monkeypatch.undo()
    assert files() == before  # status.json too: the run stays as it was


def test_evaluate_whose_rehash_of_the_checkpoint_fails_names_the_error_not_a_training(finished, monkeypatch, capsys):
    """atkK 4. strace read:error=EIO:when=3 on last.pt (the hash again before the report is written): "no report
    written: last.pt changed while it was evaluated (the run trained on)", exit 0: a run that trained nothing."""
    import cnnlab.evaluation

    before = (finished / "summary.json").read_bytes()

    def rehash_fails(fh):
        raise OSError(errno.EIO, os.strerror(errno.EIO))  # a read's error: no file name in it

    monkeypatch.setattr(cnnlab.evaluation, "sha256_of", rehash_fails)
    assert main(["evaluate", str(finished)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained on" not in err and "Traceback" not in err, err
    assert err.startswith(f"cnnlab: error: {finished / 'last.pt'}: cannot be read (input/output error); {EIO_FIX} "
                          "(no report written: last.pt could not be read again"), err
    assert (finished / "summary.json").read_bytes() == before
