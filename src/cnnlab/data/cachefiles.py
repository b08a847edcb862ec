"""Writing a group of cache files so that a reader never sees a half-written one, and a failure replaces none.

Each file is written through :func:`cnnlab.fileio.atomic_write_bytes` into a hidden staging folder beside
the files (``.incoming-<pid>-<random>``, same file system), and only once all are written and fsynced are
they renamed over the old ones. A read-only folder or a full disk fails while staging: the folder stays as
it was. Concurrent writers each stage their own folder; every rename puts a whole file in place, so a
reader sees, for each file, one writer's whole version. Staging folders left by a killed process are
removed, when the cache is next read or written, once they are older than :data:`STALE_STAGING_S`, or older than
:data:`DEAD_STAGING_S` where the process named in them is no longer alive on this machine. A file replaced keeps its permissions (and owner and
group where permitted), as :func:`cnnlab.fileio.atomic_write_bytes` keeps them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path

from cnnlab.fileio import atomic_write_bytes

#: Staging folders older than this were left by a killed process (a live writer needs seconds).
STALE_STAGING_S = 3600.0
#: ... and those of a process that is gone, older than this (another machine's writer on a shared cache, whose
#: pid means nothing here, is left its hour unless its pid happens to be dead here too: it still has ten minutes).
DEAD_STAGING_S = 600.0
STAGING_PREFIX = ".incoming-"


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
