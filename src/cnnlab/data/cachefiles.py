"""Writing a group of cache files so that a reader never sees a half-written one, and a failure replaces none.

Each file is written through :func:`cnnlab.fileio.atomic_write_bytes` into a hidden staging folder beside
the files (``.incoming-<pid>-<random>``, same file system), and only once all are written and fsynced are
they renamed over the old ones. A read-only folder or a full disk fails while staging: the folder stays as
it was. Concurrent writers each stage their own folder; every rename puts a whole file in place, so a
reader sees, for each file, one writer's whole version. Staging folders left by a killed process are
removed once they are older than :data:`STALE_STAGING_S`. A file replaced keeps its permissions (and owner and
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
STAGING_PREFIX = ".incoming-"


def write_group(directory: Path, payloads: dict[str, bytes]) -> None:
    """Put ``{name: bytes}`` in ``directory``: each file old or new and whole, none replaced unless all were
    written. Raises the ``OSError`` of a failure (read-only, disk full), with ``directory`` as it was."""
    _remove_stale_staging(directory)
    staging = directory / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        for name, data in payloads.items():
            atomic_write_bytes(staging / name, data, mode_of=directory / name)
        for name in payloads:
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_staging(directory: Path) -> None:
    try:
        entries = list(directory.glob(STAGING_PREFIX + "*"))
    except OSError:
        return
    for entry in entries:
        try:
            if time.time() - entry.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass
