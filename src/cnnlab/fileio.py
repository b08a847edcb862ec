"""Files that are either the old version or the whole new one: never half-written.

Every file cnnlab writes goes through :func:`atomic_write_bytes` (temp file in the same directory,
fsync, rename). JSON is always valid JSON: non-finite floats (a diverged loss) become ``null``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from cnnlab.errors import CnnlabError, WriteError, first_line, short_repr

#: The most a settings file (--config) may hold: a few KB in practice; a larger file, or a device such as
#: /dev/zero, is refused instead of read into memory.
SMALL_FILE_LIMIT = 1 << 20
#: The same for a JSON file cnnlab wrote into a run folder: summary.json holds the confusion matrix, which for
#: a folder dataset of a few hundred classes is several MB.
RUN_FILE_LIMIT = 256 << 20


def write_error(path: str | Path, err: OSError) -> WriteError:
    """The one-line error for an OS error while writing ``path``: what failed, and what to do."""
    path = Path(path)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some disk space and run it again (the previous version of the file, if any, is intact)"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = (f"make {_nearest_folder(path.parent)} writable, or write somewhere else (e.g. another --out or "
               "CNNLAB_HOME)")
    else:
        fix = "check the path and the disk"
    return WriteError(f"cannot write {path}: {err.strerror or err}; {fix}", err.errno)


def path_error(err: OSError) -> CnnlabError | None:
    """The one line for a path too long for the file system, or behind a folder this user may not enter
    (pathlib's ``exists()`` and ``is_dir()`` raise these for a path given anywhere); None for any other OS error."""
    name = str(err.filename or "")
    shown = f"{name[:60]}{'...' if len(name) > 60 else ''}"
    if err.errno == errno.ENAMETOOLONG:
        longest = max((len(part) for part in name.split(os.sep)), default=0)
        return CnnlabError(f"a path is too long for the file system ({shown}: {len(name)} characters, the longest "
                           f"name in it {longest}); use a shorter one")
    if err.errno in (errno.EACCES, errno.EPERM) and name:
        return CnnlabError(f"cannot reach {shown} (permission denied); check the permissions of the folders on its "
                           "way, or use another path")
    return None


@contextlib.contextmanager
def paths_explained() -> Iterator[None]:
    """Inside, an OS error of a path that :func:`path_error` explains becomes its one line, a :class:`CnnlabError`
    (a context manager and a decorator: the Python API's functions; the command line's ``main`` prints the same
    line for every command)."""
    try:
        yield
    except OSError as err:
        explained = None if isinstance(err, CnnlabError) else path_error(err)
        if explained is None:
            raise
        raise explained from None


def _nearest_folder(folder: Path) -> Path:
    """``folder``, or the nearest folder above it that exists (the one to make writable: ``mkdir -p`` of
    ``runs/a/b`` on a read-only mount fails at ``runs``, and ``runs/a`` is not there to be made writable)."""
    while not os.path.isdir(folder) and folder.parent != folder:  # isdir: False, not an error, for EACCES
        folder = folder.parent
    return folder


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p``, with an OS error as one line (:class:`WriteError`)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        what = kind_of(path)
        fix = "remove it or pick another path" if what == "a file" else "pick another path"
        raise WriteError(f"cannot create folder {path}: {what} of that name is in the way; {fix}",
                         errno.EEXIST) from None
    except OSError as err:
        raise write_error(path / ".", err) from None
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync and rename.

    An OS error (read-only folder, disk full) is a :class:`WriteError` naming the path and the fix;
    ``path`` is then untouched and no temp file is left.
    """
    path = Path(path)
    _refuse_special_file(path)
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            raise write_error(path, err) from None
        raise


def _refuse_special_file(path: Path) -> None:
    """A device, FIFO, socket or folder at ``path`` (or behind a link there) is refused: the rename would put a
    plain file in its place (as root, ``--out /dev/null`` replaced the device; ``/dev/stdout`` is a link)."""
    kind = kind_of(path)
    if kind not in ("nothing", "a file"):
        raise WriteError(f"cannot write {path}: it is {kind}, not a file; give the path of a file to write "
                         "(cnnlab writes a new file and renames it into place)", errno.EEXIST)


def kind_of(path: str | Path) -> str:
    """What is at ``path``, links followed, for messages: ``nothing`` (also a dangling link, or what cannot be
    looked at), else :func:`mode_kind`'s words."""
    try:
        return mode_kind(os.stat(path).st_mode)
    except OSError:
        return "nothing"


def mode_kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, for messages: ``a file``, ``a directory``, ``a FIFO (named pipe)``..."""
    kinds = ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def remove_stale_temp_files_in(folder: str | Path) -> None:
    """Delete every temp file that killed writes left in ``folder`` (which this process owns: it is locked)."""
    _unlink_all(Path(folder).glob(".*.tmp"))


def _unlink_all(paths) -> None:
    for tmp in paths:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj):
    """``obj`` with every non-finite float replaced by None, so that ``json.dumps`` writes valid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def as_path(value, what: str, error: type[CnnlabError] = CnnlabError) -> Path:
    """``value`` (a ``str`` or path-like) as a :class:`Path`; anything else (None, a number) is one line saying
    that ``what`` is a path, not pathlib's TypeError."""
    if isinstance(value, str) and not value.strip():
        raise error(f"{what} is an empty path (an unset variable?); give a path")
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise error(f"{what} must be a path (a str or pathlib.Path), got {short_repr(value)}; give one")


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def open_if_regular(path: str | Path) -> tuple[BinaryIO | None, os.stat_result]:
    """Open ``path`` for reading without blocking: ``(file, fstat)`` when, once open, it is a regular file, else
    ``(None, fstat)`` (closed: a FIFO, a directory, a device). ``O_NONBLOCK`` keeps a FIFO from waiting for a
    writer; the type is checked on the open file, so a file swapped for a FIFO after a check is caught too.
    An ``OSError`` when it cannot be opened at all."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None, st


def read_small_text(path: str | Path, what: str, limit: int = SMALL_FILE_LIMIT,
                    fix: str = "check the path, or save the file as UTF-8", kind: str = "a settings file") -> str:
    """A small UTF-8 text file (a byte-order mark allowed), read whole; :class:`CnnlabError` (one line that starts with ``what``) when it
    cannot be read, is larger than ``limit`` bytes, or is not text."""
    path = Path(path)
    try:  # without blocking: a FIFO of that name (open() waited for a writer for ever) is refused by its kind
        fh, st = open_if_regular(path)
        if fh is None:
            raise CnnlabError(f"{what}: is {mode_kind(st.st_mode)}, not {kind}; check the path")
        with fh:
            data = fh.read(limit + 1)
    except OSError as err:
        raise CnnlabError(f"{what}: cannot be read ({err.strerror or err}); check the path") from None
    if len(data) > limit:
        raise CnnlabError(f"{what}: larger than {limit >> 20} MB, not {kind}; check the path")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # what Windows PowerShell's '>' writes
        raise CnnlabError(f"{what}: UTF-16 text, not UTF-8; save the file as UTF-8")
    try:
        return data.decode("utf-8-sig")  # a leading byte-order mark (Notepad's UTF-8) is not part of the text
    except UnicodeDecodeError as err:
        raise CnnlabError(f"{what}: not text (byte {err.start} is not UTF-8); {fix}") from None


def read_json(path: str | Path, what: str, fix: str = "the file is damaged") -> object:
    """A JSON file's contents, as cnnlab writes them into run folders; :class:`CnnlabError` (one line:
    ``what``, the problem, ``fix``) when it cannot be read or is not JSON."""
    text = read_small_text(path, what, limit=RUN_FILE_LIMIT, fix=fix, kind="a file cnnlab writes")
    try:
        return json.loads(text)
    except ValueError as err:
        raise CnnlabError(f"{what}: not valid JSON ({first_line(err)[:120]}); {fix}") from None
    except RecursionError:
        raise CnnlabError(f"{what}: not valid JSON (nested too deeply); {fix}") from None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
