"""Writing a group of cache files so that a reader never sees a half-written one, and a failure replaces none.

Each file is written through :func:`cnnlab.fileio.atomic_write_bytes` into a hidden staging folder beside
the files (``.incoming-<pid>-<random>``, same file system), and only once all are written and fsynced are
they renamed over the old ones. A read-only folder or a full disk fails while staging: the folder stays as
it was. Concurrent writers each stage their own folder; every rename puts a whole file in place, so a
reader sees, for each file, one writer's whole version. Staging folders left by a killed process are
removed, when the cache is next read or written, once they are older than :data:`STALE_STAGING_S`, or older than
:data:`DEAD_STAGING_S` where the process named in them is no longer alive on this machine. A file replaced keeps its permissions (and owner and
group where permitted), as :func:`cnnlab.fileio.atomic_write_bytes` keeps them.

Groups that must match each other (a dataset's ``.gz`` files and the fast copy that records their sizes and times)
are written under :func:`writers_lock`, an exclusive ``flock`` on the cache folder itself: two writers' groups never
interleave (three ``cnnlab data fetch`` at once left the ``.gz`` files of one and the fast copy of another, whose
next load said they "changed since verified" and wrote it again). Where no lock can be had the writer goes on
without it (see there): the worst is a fast copy that does not match, which the next load writes again.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Iterator

from cnnlab.fileio import atomic_write_bytes

try:
    import fcntl  # POSIX: the lock that keeps two writers' groups apart
except ImportError:  # pragma: no cover - Windows has no flock: writers there are not kept apart
    fcntl = None

#: Staging folders older than this were left by a killed process (a live writer needs seconds).
STALE_STAGING_S = 3600.0
#: ... and those of a process that is gone, older than this (another machine's writer on a shared cache, whose
#: pid means nothing here, is left its hour unless its pid happens to be dead here too: it still has ten minutes).
DEAD_STAGING_S = 600.0
STAGING_PREFIX = ".incoming-"
#: How long a writer waits for another to finish its groups before it writes without the lock (a live one needs
#: seconds; one stopped with Ctrl+Z, or hung on a dead network disk, would otherwise hold every later fetch).
LOCK_WAIT_S = 120.0
_LOCK_POLL_S = 0.05


def write_group(directory: Path, payloads: dict[str, bytes]) -> None:
    """Put ``{name: bytes}`` in ``directory``: each file old or new and whole, none replaced unless all were
    written. Raises the ``OSError`` of a failure (read-only, disk full), with ``directory`` as it was."""
    remove_stale_staging(directory)
    staging = directory / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        for name, data in payloads.items():
            atomic_write_bytes(staging / name, data, mode_of=directory / name)
        for name in payloads:
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def writers_lock(directory: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on the cache folder ``directory`` (made if missing) while the groups written
    inside go together; yields whether it is held. Another process's holder is waited for (at most ``wait_s``
    seconds); where none can be had (no ``fcntl``, a folder that cannot be made or opened, whose failure the write
    itself then names; a file system without ``flock``; a holder past ``wait_s``) the writer goes on without it."""
    fd = _locked_folder(directory, wait_s)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock


def _locked_folder(directory: Path, wait_s: float) -> int | None:
    """A descriptor of ``directory`` holding its exclusive ``flock``, or None (:func:`writers_lock`)."""
    if fcntl is None:
        return None
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:  # another writer holds it
            if time.monotonic() < deadline:
                time.sleep(_LOCK_POLL_S)
                continue
        except OSError:  # a file system without flock (some network disks)
            pass
        os.close(fd)
        return None


def remove_stale_staging(directory: Path) -> None:
    """Remove the staging folders killed writers left in ``directory`` (see the module's docstring); what cannot be
    removed (a cache one may only read) is left as it is."""
    try:
        entries = list(directory.glob(STAGING_PREFIX + "*"))
    except OSError:
        return
    for entry in entries:
        try:
            age = time.time() - entry.stat().st_mtime
        except OSError:
            continue
        if age > STALE_STAGING_S or (age > DEAD_STAGING_S and not _alive(entry.name[len(STAGING_PREFIX):])):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(tag: str) -> bool:
    """Whether the process named in a staging folder's ``<pid>-<random>`` is alive here (True when unsure)."""
    pid = tag.split("-", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (EPERM), or a number no pid is: not known dead
        return True
    return True
