"""Touching files the data path does not control: operating-system errors as one-line :class:`DataError`\\ s,
regular files only (a FIFO or a device is never opened for reading, so nothing blocks or streams forever),
and reads bounded by what the caller expects.

Every message names the path, what went wrong in words (``permission denied``, ``read-only file system``,
``no space left on device``...) and what to do about it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from cnnlab.errors import DataError, DataUnreadable
# the errno table (reason, usual_fix) is cnnlab.fileio's, shared with run folders and checkpoints: re-exported here
from cnnlab.fileio import cannot_read, mode_kind, open_if_regular, read_at_most, reason, usual_fix  # noqa: F401

#: The errors of a path that leads to no file (nothing there, a symlink loop...): a miss, not a file that may be whole.
ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG, errno.EISDIR})


def read_error(path: str | Path, err: OSError, fix: str | None = None) -> DataError:
    """``PATH: cannot be read (permission denied); fix its permissions ...``, for an error of the open, of a read
    after it, or of a ``stat``: a :class:`DataUnreadable` where the file is there and may be whole (input/output
    error, permission denied...), a plain :class:`DataError` where the path leads to none (:data:`ABSENT`)."""
    message = f"{path}: cannot be read ({reason(err)}); {fix}" if fix else cannot_read(path, err)
    return DataError(message) if err.errno in ABSENT else DataUnreadable(message, str(path), err)


def kind_of(mode: int) -> str:
    """What a non-regular file is, for messages: ``a directory``, ``a FIFO (named pipe)``..."""
    return mode_kind(mode)


def probe(path: str | Path) -> os.stat_result | None:
    """``stat`` of ``path`` (links followed); ``None`` when nothing is there; a :class:`DataError` when the
    path cannot be looked at (permission denied on a folder above it, a symlink loop...)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:
            return None
        raise read_error(path, err) from None


def is_regular(path: str | Path) -> bool:
    st = probe(path)
    return st is not None and stat.S_ISREG(st.st_mode)


def entry_kind(path: str | Path) -> str | None:
    """What is at ``path`` (links followed): ``None`` for nothing, ``"file"`` for a regular file, else words
    for messages: ``a directory``, ``a FIFO (named pipe)``, ``a broken symbolic link``..."""
    st = probe(path)
    if st is None:
        return "a broken symbolic link" if os.path.islink(path) else None
    return "file" if stat.S_ISREG(st.st_mode) else kind_of(st.st_mode)


def require_regular(path: str | Path, what: str) -> os.stat_result | None:
    """``stat`` of ``path`` when it is a regular file, ``None`` when absent; a :class:`DataError` when it is
    something else (a directory, a FIFO...). ``what`` says what the file should be, for the message."""
    st = probe(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: is {kind_of(st.st_mode)}, not {what}; replace it with the file or remove it")
    return st


def open_regular(path: str | Path, what: str = "a data file") -> tuple[BinaryIO, os.stat_result]:
    """Open ``path`` for reading if, once open, it is a regular file; returns the file and its ``fstat``.

    ``O_NONBLOCK`` keeps a FIFO from blocking the open; the type is checked on the open file itself, so
    a file swapped for a FIFO between a check and the open is refused too.
    """
    try:
        stream, st = open_if_regular(path)
    except OSError as err:
        raise read_error(path, err) from None
    if stream is None:
        raise DataError(f"{path}: is {kind_of(st.st_mode)}, not {what}; replace it with the file or remove it")
    return stream, st


def list_dir(path: str | Path) -> list[os.DirEntry]:
    """The entries of a folder, sorted by name; a :class:`DataError` when it cannot be read."""
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as err:
        raise read_error(path, err) from None


def read_bounded(stream: BinaryIO, limit: int, what: str) -> bytes:
    """All of ``stream``, refused with a :class:`DataError` once it passes ``limit`` bytes; an OS error of a read is
    :func:`read_error`'s line for ``what`` (the file's path).

    Read in chunks (:func:`cnnlab.fileio.read_at_most`): ``read(limit + 1)`` would allocate ``limit`` bytes up front,
    whatever the stream holds.
    """
    try:
        data = read_at_most(stream, limit + 1)
    except OSError as err:  # a read that fails after the open is told as an open that fails (``what``: the path)
        if err.errno is None:  # the stream's own error (gzip's BadGzipFile), which its caller words
            raise
        raise read_error(what, err) from None
    if len(data) <= limit:
        return data
    raise DataError(f"{what}: more than {limit:,} bytes, far larger than the file can be; "
                    "it is not the expected file: check the source")
