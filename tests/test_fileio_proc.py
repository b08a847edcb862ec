"""fileio against the process's faults: a writer killed mid-write (its temp file), a file replaced (its mode)."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnlab import fileio
from cnnlab.data import cachefiles
from cnnlab.fileio import atomic_write_bytes, remove_stale_temp_files_in, write_error

#: A writer SIGKILLed at its fsync (what ``strace -e inject=fsync:signal=SIGKILL`` did to ``cnnlab export``).
KILLED_AT_FSYNC = ("import os, signal, sys; from cnnlab import fileio\n"
                   "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
                   "fileio.atomic_write_bytes(sys.argv[1], b'x' * 169_000)\n")
#: A writer that waits at its fsync until its stdin closes, then finishes the write.
PAUSED_AT_FSYNC = ("import os, sys; from cnnlab import fileio\n"
                   "real = os.fsync\n"
                   "def fsync(fd):\n"
                   "    print('paused', flush=True); sys.stdin.read(); real(fd)\n"
                   "os.fsync = fsync\n"
                   "fileio.atomic_write_bytes(sys.argv[1], b'from the live writer')\n")


def _python(code: str, *args: str, **popen):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **popen)


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_the_temp_file_of_a_killed_write_is_removed_by_the_next_write_of_that_file(tmp_path):
    """Found by a tester: ``cnnlab export`` SIGKILLed at its fsync left ``ex3/.r.onnx.cq5q_w0m.tmp`` (169 KB) for
    good, whatever was written there later (and so for evaluate's summary.json, compare's comparison.md, predict's
    --show-input images, the data cache's fast-copy.json). The next writer of the same file removes it."""
    out = tmp_path / "ex3" / "r.onnx"
    killed = _python(KILLED_AT_FSYNC, str(out))
    assert killed.wait(timeout=120) == -signal.SIGKILL
    (left,) = _temp_files(out.parent)
    assert left.startswith(".r.onnx.") and str(killed.pid) in left  # the writer's pid is in its name
    atomic_write_bytes(out.parent / "other.onnx", b"another file's write leaves it")
    assert left in _temp_files(out.parent)
    atomic_write_bytes(out, b"the next export")
    assert _temp_files(out.parent) == [] and out.read_bytes() == b"the next export"


def test_a_live_writers_temp_file_is_left_alone(tmp_path):
    """Two processes writing one file at once: the second does not take the first one's temp file away."""
    out = tmp_path / "summary.json"
    live = _python(PAUSED_AT_FSYNC, str(out), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline() == "paused\n"
        (theirs,) = _temp_files(tmp_path)
        atomic_write_bytes(out, b"from this process")
        assert _temp_files(tmp_path) == [theirs]
        remove_stale_temp_files_in(tmp_path)  # a run folder's cleanup, when its lock is taken, spares it too
        assert _temp_files(tmp_path) == [theirs]
    finally:
        live.stdin.close()
    assert live.wait(timeout=120) == 0
    assert out.read_bytes() == b"from the live writer" and _temp_files(tmp_path) == []


def _left_by(folder: Path, target: str, pid: int | None, age_s: float = 0.0) -> Path:
    """A temp file as a killed writer ``pid`` left it (mkstemp's 8 random characters: none yet in ``folder``)."""
    n = len(list(folder.iterdir()))
    tmp = folder / f".{target}.{f'{pid}-' if pid is not None else ''}k3j_x{n:03d}.tmp"
    tmp.write_bytes(b"half")
    then = time.time() - age_s
    os.utime(tmp, (then, then))
    return tmp


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_which_temp_files_count_as_left_by_a_writer_that_is_gone(tmp_path):
    dead = _left_by(tmp_path, "a.json", _dead_pid())
    reused = _left_by(tmp_path, "a.json", os.getppid(), age_s=2 * fileio.STALE_TEMP_S)  # a live pid, but old
    young = _left_by(tmp_path, "a.json", os.getppid())  # a live pid: a writer at work
    old_style = _left_by(tmp_path, "a.json", None)  # cnnlab 0.2's names had no pid: only age tells
    old_old_style = _left_by(tmp_path, "a.json", None, age_s=2 * fileio.STALE_TEMP_S)
    similar = [_left_by(tmp_path, "a.json.5", _dead_pid()), _left_by(tmp_path, "b.a.json", _dead_pid())]
    held = _left_by(tmp_path, "a.json", _dead_pid())  # a dead pid (another machine's?), but its lock is held
    with open(held, "rb+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        left = set(_temp_files(tmp_path))
    assert left == {p.name for p in (young, old_style, held, *similar)}, left
    assert not dead.exists() and not reused.exists() and not old_old_style.exists()


def test_many_writes_into_one_folder_list_it_once(tmp_path, monkeypatch):
    """predict --show-input beside 10,000 images writes 20,000 files into their folder: listing it for each
    write would make the run quadratic. A folder is listed again only when another process changed it."""
    listed = []
    real = fileio._temp_files_by_target
    monkeypatch.setattr(fileio, "_temp_files_by_target", lambda folder: listed.append(folder) or real(folder))
    for i in range(50):
        atomic_write_bytes(tmp_path / f"{i}.input.png", b"png")
    assert len(listed) == 1
    killed = _python(KILLED_AT_FSYNC, str(tmp_path / "7.input.png"))
    assert killed.wait(timeout=120) == -signal.SIGKILL and len(_temp_files(tmp_path)) == 1
    atomic_write_bytes(tmp_path / "7.input.png", b"png")
    assert len(listed) == 2 and _temp_files(tmp_path) == []


def test_a_locked_run_folder_still_loses_every_temp_file_its_killed_writers_left(tmp_path):
    """The run folder's own cleanup (runs.RunLock): also the names without a pid (cnnlab 0.2's, the fault
    tests' mid-write kills), however young."""
    for pid in (None, _dead_pid()):
        _left_by(tmp_path, "last.pt", pid)
    remove_stale_temp_files_in(tmp_path)
    assert _temp_files(tmp_path) == []


# ----------------------------------------------------------------------------- a file replaced keeps its mode


def test_a_replaced_file_keeps_its_permissions_and_a_new_one_follows_the_umask(tmp_path):
    """Found by a tester: ``chmod 600 sec.onnx``, export again: 644. As with the shell's ``>``, a file written over
    keeps its permissions; a new file gets 0666 less the umask, as before."""
    secret = tmp_path / "sec.onnx"
    atomic_write_bytes(secret, b"1")
    umask = os.umask(0o022)
    os.umask(umask)
    assert secret.stat().st_mode & 0o777 == 0o666 & ~umask
    for mode in (0o600, 0o640, 0o444):
        secret.chmod(mode)
        atomic_write_bytes(secret, b"2")
        assert secret.stat().st_mode & 0o7777 == mode and secret.read_bytes() == b"2"


@pytest.mark.skipif(os.geteuid() != 0, reason="gives a file to another user and group (root only)")
def test_a_replaced_file_keeps_its_owner_and_group_where_permitted(tmp_path):
    """A run's config.json chmod 640 + chgrp: after a resume (as root) it was 644 root:root."""
    config = tmp_path / "config.json"
    atomic_write_bytes(config, b"{}")
    os.chown(config, 1, 1)
    config.chmod(0o640)
    atomic_write_bytes(config, b"{ }")
    st = config.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1, 1, 0o640)


def test_the_cache_files_written_as_a_group_keep_their_permissions(tmp_path):
    cachefiles.write_group(tmp_path, {"a.npy": b"1", "b.npy": b"1"})
    (tmp_path / "a.npy").chmod(0o640)
    cachefiles.write_group(tmp_path, {"a.npy": b"2", "b.npy": b"2"})
    assert (tmp_path / "a.npy").stat().st_mode & 0o777 == 0o640 and (tmp_path / "a.npy").read_bytes() == b"2"


# ----------------------------------------------------------------------------- the fix a write error names


def test_a_write_error_names_only_fixes_that_work_for_the_file():
    """``cd ro && cnnlab export --pretrained resnet`` suggested CNNLAB_HOME, which moves the dataset cache only
    (whose write errors have their own lines)."""
    line = str(write_error(Path("resnet-mnist.onnx"), OSError(errno.EROFS, os.strerror(errno.EROFS))))
    assert line == ("cannot write resnet-mnist.onnx: Read-only file system; make . writable, or write somewhere "
                    "else (e.g. another --out)")
