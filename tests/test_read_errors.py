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


def failing_reads(monkeypatch, module, name: str, code: int = errno.EIO) -> None:
    """``module.open_regular`` opens a file called ``name`` as it is, and every read of it then fails with ``code``."""
    real = module.open_regular

    def open_regular(path, *a, **k):
        stream, st = real(path, *a, **k)
        return (_FailingReads(stream, code), st) if Path(path).name == name else (stream, st)

    monkeypatch.setattr(module, "open_regular", open_regular)


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
