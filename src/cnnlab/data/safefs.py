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

from cnnlab.errors import DataError
from cnnlab.fileio import mode_kind, open_if_regular

#: errno -> (what went wrong, in words; the usual fix). Anything else is described by ``strerror``.
_REASONS = {
    errno.EACCES: ("permission denied", "fix its permissions (chmod u+r, and u+x for a folder) or run as its owner"),
    errno.EPERM: ("operation not permitted", "fix its permissions or run as its owner"),
    errno.EROFS: ("read-only file system", "use a writable location"),
    errno.ENOSPC: ("no space left on device", "free some space"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or raise the quota"),
    errno.ELOOP: ("symlink loop", "fix or remove the symbolic link"),
    errno.EISDIR: ("is a directory", "give a file"),
    errno.ENOTDIR: ("a part of the path is not a directory", "check the path"),
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.ENAMETOOLONG: ("file name too long", "use a shorter path"),
    errno.EIO: ("input/output error", "the disk or network file system is failing; copy the data elsewhere"),
    errno.EMFILE: ("too many open files", "raise the open-file limit (ulimit -n)"),
}


def reason(err: OSError) -> str:
    """``OSError`` -> a few words: ``permission denied``, ``no space left on device``... (another error's first
    line, its first letter lowercased: never the whole line, which may name a path)."""
    if err.errno in _REASONS:
        return _REASONS[err.errno][0]
    text = (err.strerror or type(err).__name__).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line[:1].lower() + line[1:] if line[1:2].islower() else line


def usual_fix(err: OSError) -> str:
    return _REASONS.get(err.errno, ("", "check the file and try again"))[1]


def read_error(path: str | Path, err: OSError, fix: str | None = None) -> DataError:
    """``PATH: cannot be read (permission denied); fix its permissions ...``"""
    return DataError(f"{path}: cannot be read ({reason(err)}); {fix or usual_fix(err)}")


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


_CHUNK = 1 << 20


def read_bounded(stream: BinaryIO, limit: int, what: str) -> bytes:
    """All of ``stream``, refused with a :class:`DataError` once it passes ``limit`` bytes.

    Read in chunks: ``read(limit + 1)`` would allocate ``limit`` bytes up front, whatever the stream holds.
    """
    chunks, total = [], 0
    while True:
        chunk = stream.read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise DataError(f"{what}: more than {limit:,} bytes, far larger than the file can be; "
                            "it is not the expected file: check the source")
