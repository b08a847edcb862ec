"""Files that are either the old version or the whole new one: never half-written.

Every file cnnlab writes goes through :func:`atomic_write_bytes` (temp file in the same directory,
fsync, rename). JSON is always valid JSON: non-finite floats (a diverged loss) become ``null``.

A temp file is named ``.<name>.<pid>-<random>.tmp``, and its writer holds its ``flock`` while it writes (a name
too long for that within the folder's limit on names, 255 bytes on most file systems, is shortened to its first
bytes and a hash of the whole name, ``<start>~<hash>``: the same for every writer of that file). A
writer killed before the rename (SIGKILL, out of memory, a power cut) leaves it behind; the next writer of the same
file removes the ones whose writer is gone: the lock is free, and the pid runs no process, or the file is
older than :data:`STALE_TEMP_S` (the pid taken by another process since). Two processes that write one file
at once keep each other's temp files. A replaced file keeps its permissions (and owner and group where
permitted), as with the shell's ``>``.
"""

from __future__ import annotations

import array
import contextlib
import errno
import hashlib
import json
import math
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, NamedTuple

try:
    import fcntl  # POSIX: the lock that marks a live writer's temp file
except ImportError:  # pragma: no cover - Windows: a temp file's pid and age tell alone
    fcntl = None
try:
    import pwd  # POSIX: the user's home folder where HOME is empty
except ImportError:  # pragma: no cover - Windows: Path.home() reads USERPROFILE
    pwd = None
try:
    import resource  # POSIX: the file-size limit (ulimit -f) that a write ran into
except ImportError:  # pragma: no cover - Windows
    resource = None

from cnnlab.errors import CnnlabError, DataUnreadable, FolderGone, WriteError, first_line, shell_quoted, short_repr

#: The most a settings file (--config) may hold: a few KB in practice; a larger file, or a device such as
#: /dev/zero, is refused instead of read into memory.
SMALL_FILE_LIMIT = 1 << 20
#: The same for a JSON file cnnlab wrote into a run folder: summary.json holds the confusion matrix, which for
#: a folder dataset of a few hundred classes is several MB.
RUN_FILE_LIMIT = 256 << 20
#: An unlocked temp file older than this was left by a killed writer even when its pid runs a process now (a
#: write takes seconds; a pid comes round again within hours on a busy machine).
STALE_TEMP_S = 3600.0
#: A temp file's name: ``.<name>.``, then ``<pid>-`` (not in older versions' names), then mkstemp's 8 characters.
_TEMP_NAME = re.compile(r"\.(.+)\.(?:(\d{1,10})-)?[a-z0-9_]{8}\.tmp", re.DOTALL)
#: The bytes a temp file's name adds to its name part: ``.``, ``.``, a pid of up to 10 digits (as _TEMP_NAME
#: allows), ``-``, mkstemp's 8 characters, ``.tmp``.
_TEMP_EXTRA = 1 + 1 + 10 + 1 + 8 + 4
#: The longest file name, in bytes, where the file system does not say (ext4, XFS, btrfs, tmpfs: 255).
NAME_MAX = 255
#: Per folder (absolute path): its modification time when listed, and the temp files found then, by the name
#: of the file they were for. A folder is listed again only when someone else changed it since, so that many
#: writes into one large folder (predict --show-input beside 10,000 images) do not each list it.
_TEMP_LISTINGS: dict[str, tuple[int, dict[str, list[str]]]] = {}
#: Per folder (absolute path): the checks of the folder guards that guard it now (:func:`guarded`), called
#: before every write into it, from any thread (a report's figures are drawn in one of their own).
_GUARDED: dict[str, list[Callable[[], None]]] = {}


#: errno -> (what went wrong, in words; the usual fix) of a file that cannot be opened, read or looked at: the one
#: table for every file cnnlab reads (datasets and their cache, run folders, checkpoints, settings files), re-exported
#: by :mod:`cnnlab.data.safefs`. Anything else is described by ``strerror``. A read that fails after its open is told
#: as an open that fails: the file may be whole (an input/output error, memory or open files short), never "damaged".
OS_REASONS = {
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
    errno.EIO: ("input/output error", "the disk reported an error: try again, and if it persists copy the data off "
                                      "that disk"),
    errno.ENOMEM: ("out of memory", "free some memory (close other programs) and try again"),
    errno.EMFILE: ("too many open files", "raise the open-file limit (ulimit -n) and try again"),
    errno.ENFILE: ("too many open files in the system", "close other programs, or raise the open-file limits "
                                                         "(ulimit -n, fs.file-max), and try again"),
}


#: A write's ENOSPC on a file system that has free space but no free inodes (a tmpfs's ``nr_inodes``, an ext4 of many
#: small files; :func:`out_of_room`): what went wrong, in words ("free some disk space" was no help where ``df -h``
#: showed the disk nearly empty), and the fix.
NO_INODES = ("no free inodes left on its file system: too many files, though it has free space, as df -i shows",
             "delete files you no longer need on that file system")


def out_of_room(where: str | Path) -> str | None:
    """What the file system holding ``where`` (or the nearest folder above it that exists) has run out of:
    ``"space"`` (no free blocks for this user), ``"inodes"`` (free space, but no free inodes: too many files), or
    None (neither, or it cannot tell: no ``statvfs``, its call failed, a file system that counts no inodes)."""
    try:
        st = os.statvfs(_nearest_folder(Path(where)))
    except (AttributeError, OSError, ValueError):  # no statvfs (Windows), a folder one may not look into
        return None
    if st.f_blocks and st.f_bavail == 0:
        return "space"
    if st.f_files and min(st.f_ffree, st.f_favail) == 0:  # btrfs counts no inodes (f_files 0)
        return "inodes"
    return None


def no_free_inodes(err: OSError, where: str | Path) -> bool:
    """Whether ``err``, from writing into ``where``, is an ``ENOSPC`` of a file system with free space but no free
    inodes (:data:`NO_INODES` then says it, not "no space left on device"). A :class:`WriteError` of
    :func:`write_error` carries what it saw as it failed (the temp files and staging folders removed since freed
    inodes: the data cache's group of files asked too late)."""
    if isinstance(err, WriteError):
        return err.out_of == "inodes"
    return err.errno == errno.ENOSPC and out_of_room(where) == "inodes"


def reason(err: OSError) -> str:
    """``OSError`` -> a few words: ``permission denied``, ``input/output error``... (another error's first
    line, its first letter lowercased: never the whole line, which may name a path)."""
    if err.errno in OS_REASONS:
        return OS_REASONS[err.errno][0]
    text = (err.strerror or type(err).__name__).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line[:1].lower() + line[1:] if line[1:2].islower() else line


def usual_fix(err: OSError) -> str:
    """What to do about ``err`` on a file being read: ``try again, and if it persists ...`` for an input/output
    error, ``ulimit -n`` for too many open files, the file's permissions for permission denied..."""
    return OS_REASONS.get(err.errno, ("", "check the file and try again"))[1]


def cannot_read(path: str | Path, err: OSError) -> str:
    """``PATH: cannot be read (input/output error); the disk reported an error: try again, ...``: the line for an
    OS error while opening or reading ``path``, whatever the call that failed (open, read, stat)."""
    return f"{path}: cannot be read ({reason(err)}); {usual_fix(err)}"


def write_error(path: str | Path, err: OSError) -> WriteError:
    """The one-line error for an OS error while writing ``path``: what failed, and what to do."""
    path = Path(path)
    if err.errno == errno.ENAMETOOLONG:  # quoted with the user's own lengths, not those of the temp file
        return WriteError(f"cannot write {path}: {too_long(str(path))}; use a shorter one", err.errno, path=path)
    if err.errno == errno.EFBIG:
        return WriteError(f"cannot write {path}: {file_size_limit()}; raise the limit (ulimit -f unlimited) and run "
                          "it again (the previous version of the file, if any, is intact)", err.errno, path=path)
    if err.errno == errno.ELOOP:  # the link that loops named, as every command names it (symlink_loop)
        line = symlink_loop(path)
        return WriteError(line, err.errno, line.split(";")[0], path=path)
    if err.errno == errno.ENOTDIR and (blocked := in_the_way(path, "cannot write")) is not None:
        return blocked  # a file where a folder of the path should be ("check the path and the disk" said nothing)
    why, out_of, again = err.strerror or err, None, "run it again (the previous version of the file, if any, is intact)"
    protected = protection_of(path, err.errno)
    if no_free_inodes(err, path.parent):  # seen now: the caller's clean-up may free inodes
        why, out_of, fix = NO_INODES[0], "inodes", f"{NO_INODES[1]} and {again}"
    elif err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free some disk space and {again}"
    elif protected is not None:  # no folder's mode lifts an immutable or append-only mark
        why, fix = f"{why} ({protected[0]})", f"{protected[1]}, or write somewhere else (e.g. another --out)"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        # CNNLAB_HOME moves the dataset cache only, whose writes have their own lines (cnnlab.data.sources)
        fix = f"make {_nearest_folder(path.parent)} writable, or write somewhere else (e.g. another --out)"
    else:
        fix = "check the path and the disk"
    reason = f"cannot write {path}: {why}"
    return WriteError(f"{reason}; {fix}", err.errno, reason, out_of, path=path)


def in_the_way(path: str | Path, doing: str) -> WriteError | None:
    """The error of a write or a ``mkdir`` of ``path`` that failed with ``ENOTDIR``: ``DOING PATH: afile is a file in
    the way (not a folder); remove it or pick another path``, naming the nearest part of the path that is there and
    is no folder (links followed); None when none is (the path changed since)."""
    path = Path(path)
    for part in (path, *path.parents):
        try:
            mode = os.stat(part).st_mode
        except OSError:  # not there, or behind the file in the way (ENOTDIR)
            continue
        if stat.S_ISDIR(mode):
            return None
        what = mode_kind(mode)
        reason = f"{doing} {path}: {part} is {what} in the way (not a folder)"
        fix = "remove it or pick another path" if what == "a file" else "pick another path"
        return WriteError(f"{reason}; {fix}", errno.ENOTDIR, reason, path=path)
    return None


#: Linux's ioctl that reads a file's attributes (``lsattr``), and the two that refuse every change to a file or
#: folder whatever its mode, root's too (``chattr +i``, ``chattr +a``: EPERM).
_FS_IOC_GETFLAGS = 0x80086601
_ATTRIBUTES = {0x10: ("immutable", "i"), 0x20: ("append-only", "a")}


def protection_of(path: str | Path, code: int | None) -> tuple[str, str] | None:
    """For a write of ``path`` refused with ``code`` EPERM: ``(what, fix)``, what protects it and how to lift that,
    where the file or the folder it goes in is immutable or append-only (``chattr +i``: no mode of the folder lifts
    it, "make the folder writable" did not help), or the file is there and it cannot tell (``lsattr`` shows);
    None otherwise (another errno, no file and no mark seen)."""
    if code != errno.EPERM:
        return None
    path = Path(path)
    for target in (path, _nearest_folder(path.parent)):
        mark = _attribute(target)
        if mark is not None:
            words, letter = mark
            return (f"{target} is {words}: lsattr shows '{letter}'",
                    f"lift that (chattr -{letter} {shell_quoted(str(target))}, as root)")
    if not os.path.lexists(path):
        return None
    return (f"{path} is protected: immutable or append-only as lsattr shows, or another user's in a folder with the "
            "sticky bit", f"lift that (chattr -i {shell_quoted(str(path))}, as root) or ask its owner")


def _attribute(path: Path) -> tuple[str, str] | None:
    """The immutable or append-only attribute of ``path`` (:data:`_ATTRIBUTES`' words and letter); None where it has
    neither, or it cannot tell (not Linux, a file system without attributes, a file one may not open)."""
    if fcntl is None or not hasattr(fcntl, "ioctl"):
        return None
    try:  # a file or a folder only: a device is never opened (a tape rewinds), a link has no marks of its own
        if not (stat.S_ISREG(mode := os.lstat(path).st_mode) or stat.S_ISDIR(mode)):
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        flags = array.array("l", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
    except OSError:
        return None
    finally:
        os.close(fd)
    return next((mark for bit, mark in _ATTRIBUTES.items() if flags[0] & bit), None)


def user_home() -> Path | None:
    """The user's home folder: ``$HOME``, or where that is empty or unset, the one of this user's passwd entry
    (``Path.home()`` made an empty HOME the root, ``/``: a cache at ``/.cache/cnnlab``); None when neither names
    one. On Windows, ``Path.home()``."""
    home = os.environ.get("HOME")
    if home:
        return Path(home)
    if pwd is None:
        try:
            return Path.home()
        except RuntimeError:
            return None
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:  # a uid without an entry (a container's)
        return None
    return Path(home) if home else None


def expand_user(path: str | Path) -> Path:
    """``path`` with ``~`` and ``~/...`` expanded by :func:`user_home` (``Path.expanduser`` made ``idx:~/data``
    ``/data`` under an empty HOME); ``~user`` and paths without ``~`` as ``Path.expanduser`` takes them. Where no home
    is known, ``path`` as it is (the folder named ``~`` is then not found, and the caller says so)."""
    text = os.fspath(path)
    if text == "~" or text.startswith(("~/", "~" + os.sep)):
        home = user_home()
        return Path(path) if home is None else home / text[2:]
    try:
        return Path(path).expanduser()
    except RuntimeError:  # ~user of no such user
        return Path(path)


def too_long(name: str) -> str:
    """``a path is too long for the file system (NAME...: N bytes, the longest name in it M bytes; ...)``: in bytes,
    as the file system counts (a name of 86 '日' is 258 bytes, "86 characters" said nothing of the limit)."""
    shown = f"{name[:60]}{'...' if len(name) > 60 else ''}"
    size = lambda text: len(os.fsencode(text))  # noqa: E731
    longest = max((size(part) for part in name.split(os.sep)), default=0)
    return (f"a path is too long for the file system ({shown}: {size(name):,} bytes, the longest name in it {longest} "
            f"bytes; names take at most {NAME_MAX} bytes on most file systems, paths 4,096)")


def file_size_limit() -> str:
    """What a write that failed with ``EFBIG`` ran into: the process's file-size limit (``ulimit -f``)."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource is not None else -1
    if resource is None or limit == resource.RLIM_INFINITY or limit < 0:
        return "file too large (over a file-size limit: ulimit -f, or the file system's largest file)"
    return f"file too large (this process may write files of at most {limit:,} bytes: ulimit -f)"


def path_error(err: OSError) -> CnnlabError | None:
    """The one line for a path too long for the file system, behind a folder this user may not enter (pathlib's
    ``exists()`` and ``is_dir()`` raise these for a path given anywhere), or in a loop of symbolic links
    (:func:`symlink_loop`); None for any other OS error."""
    name = str(err.filename or "")
    shown = f"{name[:60]}{'...' if len(name) > 60 else ''}"
    if err.errno == errno.ENAMETOOLONG:
        return CnnlabError(f"{too_long(name)}; use a shorter one")
    if err.errno == errno.ELOOP and name:
        return CnnlabError(symlink_loop(name))
    if err.errno in (errno.EACCES, errno.EPERM) and name:
        return CnnlabError(f"cannot reach {shown} (permission denied); check the permissions of the folders on its "
                           "way, or use another path")
    return None


#: The errors of a ``stat`` that mean "nothing there", as pathlib's ``is_file()``, ``is_dir()`` and ``exists()``
#: take them; Python 3.11's raise every other (an input/output error, memory short: a traceback where they stood in
#: a test). Not ``ELOOP``, which pathlib takes for nothing too: a loop of symbolic links is the user's to fix, and
#: taken for nothing it was "no such checkpoint", "nothing of that name is in the way", or a file written over it.
STAT_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF})


def symlink_loop(path: str | Path) -> str:
    """The one line for a path whose symbolic links the system refuses to follow (``ELOOP``), said by every command as
    ``--config`` says a loop (:func:`cannot_read`): ``LINK: cannot be read (symlink loop); fix or remove the symbolic
    link``, or where the links lead somewhere but are too many (:func:`link_trouble`) ``LINK: cannot be read (more
    than 40 symbolic links on the way ...)``; ``LINK`` the first part of ``path`` that fails (``loopA`` of
    ``loopA/sub/x``), else ``path``."""
    trouble = link_trouble(path)
    if trouble is None or trouble.dangling:  # changed since the error
        return cannot_read(path, OSError(errno.ELOOP, os.strerror(errno.ELOOP)))
    return f"{trouble.part}: cannot be read ({trouble.what}); {trouble.fix}"


#: The symbolic links one lookup of a path follows on Linux (the kernel's ``MAXSYMLINKS``): past them, ``ELOOP``, as
#: for a loop of links.
MAX_SYMLINKS = 40


class LinkTrouble(NamedTuple):
    """What :func:`link_trouble` finds wrong with a path's symbolic links: the first ``part`` of the path where its
    lookup fails on them, ``what`` is wrong there (words for messages), the ``fix``, and whether that part is a link
    to nowhere (else the system refused to follow its links, ``ELOOP``)."""

    part: Path
    what: str
    fix: str
    dangling: bool = False


def link_trouble(path: str | Path) -> LinkTrouble | None:
    """What is wrong with the symbolic links on ``path``'s way, links followed as the system follows them, at the
    first part of ``path`` where its lookup fails on them (``loopA`` of ``loopA/sub/x``):

    - a loop (a link met again while it is followed: the lookup never ends): ``symlink loop``;
    - more links than the system follows (:data:`MAX_SYMLINKS`), a chain that is no loop: said so, with the path it
      leads to as the fix (``readlink -f`` follows any number);
    - a link to nowhere (``dl -> nowhere``, or a chain of links ending there): ``a symbolic link to nowhere (nowhere:
      missing)``.

    None where the lookup fails on no link (nothing there: a folder or file yet to be made), or does not fail."""
    path = Path(path)
    for part in (*reversed(path.parents), path):
        try:
            os.stat(part)
        except OSError as err:
            if err.errno == errno.ELOOP:
                return _refused_links(part)
            if err.errno == errno.ENOENT and os.path.islink(part):
                return LinkTrouble(part, f"a symbolic link to nowhere ({nowhere(part)}: missing)",
                                   "remove or fix the link, or pick another path", dangling=True)
            return None
    return None


def _refused_links(part: Path) -> LinkTrouble:
    """Why the lookup of ``part``, whose folder is reached, failed with ``ELOOP``: a loop of links, or too many."""
    try:
        os.path.realpath(part, strict=True)  # follows any number of links; ELOOP only where one is met again
    except OSError as err:
        if err.errno == errno.ELOOP:
            return LinkTrouble(part, *OS_REASONS[errno.ELOOP])
    quoted = shell_quoted(str(part))
    return LinkTrouble(part, f"more than {MAX_SYMLINKS} symbolic links on the way, the most the system follows; "
                             "no loop", f"give the path they lead to instead (readlink -f {quoted} prints it), or "
                                        "shorten the chain of links")


def nowhere(link: Path) -> str:
    """Where the link to nowhere ``link`` points: its target, and that target's own where it is a link to nowhere too
    (``b -> nowhere`` of ``a -> b -> nowhere``)."""
    hops, here = [], str(link)
    while os.path.islink(here) and len(hops) <= MAX_SYMLINKS:
        try:
            target = os.readlink(here)
        except OSError:  # gone since
            break
        hops.append(target)
        here = os.path.join(os.path.dirname(here), target)
    return " -> ".join(hops)


def is_loop(path: str | Path) -> bool:
    """Whether the system refuses to follow ``path``'s symbolic links (``ELOOP``): a loop of them, or more than it
    follows (:func:`link_trouble` tells which)."""
    try:
        os.stat(path)
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


def resolved(path: str | Path) -> Path:
    """``Path(path).resolve()``, whose loop of symbolic links (Python 3.11's ``RuntimeError``) is
    :func:`symlink_loop`'s line, and whose other OS errors are :func:`path_error`'s where it has one: for every path a
    user gives (a run, ``--out``, a dataset's folder)."""
    if is_loop(path):  # Python 3.11's resolve() raised RuntimeError("Symlink loop from ..."); 3.13's says nothing
        raise CnnlabError(symlink_loop(path))
    try:
        return Path(path).resolve()
    except RuntimeError:  # a loop made since the look
        raise CnnlabError(symlink_loop(path)) from None
    except OSError as err:
        explained = path_error(err)
        if explained is None:
            raise
        raise explained from None


def stat_or_none(path: str | Path, follow: bool = True) -> os.stat_result | None:
    """``os.stat`` of ``path`` (``lstat`` where not ``follow``); None where nothing is there (:data:`STAT_ABSENT`, as
    pathlib takes it). Any other OS error is one line: :func:`path_error`'s (a name too long, a folder on the way
    one may not enter, a loop of symbolic links), else a :class:`~cnnlab.errors.DataUnreadable`, :func:`cannot_read`'s line (an input/output
    error: the file may be there and whole, so never taken for a missing one)."""
    try:
        return os.stat(path) if follow else os.lstat(path)
    except OSError as err:
        if err.errno in STAT_ABSENT:
            return None
        if err.filename is None:
            err.filename = os.fspath(path)
        explained = path_error(err)
        if explained is not None:
            raise explained from None
        raise DataUnreadable(cannot_read(path, err), str(path), err) from None


def is_file(path: str | Path, if_unknown: bool | None = None) -> bool:
    """``Path(path).is_file()``, whose stat error other than "nothing there" is :func:`stat_or_none`'s one line; or,
    given ``if_unknown``, what such a file counts as (for a note, a hint or a clean-up that must not end the command
    nor act on a file that may be there)."""
    return _is_kind(path, stat.S_ISREG, if_unknown)


def is_dir(path: str | Path, if_unknown: bool | None = None) -> bool:
    """``Path(path).is_dir()``, as :func:`is_file` (``if_unknown`` the same)."""
    return _is_kind(path, stat.S_ISDIR, if_unknown)


def lies_in(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` (which need not exist yet) is ``folder`` or lies below it, both resolved as the file system
    will (links, ``..``; ``os.path.realpath`` never raises, a link loop is left as it stands)."""
    real, top = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return real == top or top in real.parents


def _is_kind(path: str | Path, test, if_unknown: bool | None) -> bool:
    try:
        st = stat_or_none(path)
    except CnnlabError:
        if if_unknown is None:
            raise
        return if_unknown
    return st is not None and test(st.st_mode)


def exists(path: str | Path) -> bool:
    """``Path(path).exists()``, whose stat error other than "nothing there" is :func:`stat_or_none`'s one line."""
    return stat_or_none(path) is not None


def lexists(path: str | Path) -> bool:
    """``os.path.lexists(path)`` (a dangling link is there), which takes every error for "nothing there": here only
    :data:`STAT_ABSENT`'s, any other :func:`stat_or_none`'s one line."""
    return stat_or_none(path, follow=False) is not None


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


def not_a_folder(path: str | Path) -> WriteError:
    """The error of a folder to make at ``path``, where something that is no folder is (a ``mkdir`` that failed with
    ``EEXIST``, or a command's check before its work): ``cannot create folder PATH: a file of that name is in the way;
    remove it or pick another path`` (a FIFO, a device...), a link to nowhere on its way named with its target, a loop
    of links as every command names one."""
    path = Path(path)
    if is_loop(path):  # not "nothing of that name is in the way"
        return write_error(path, OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path)))
    if (trouble := link_trouble(path)) is not None and trouble.dangling:  # nor a link to nowhere on its way
        reason = f"cannot create folder {path}: {trouble.part} is {trouble.what}"
        return WriteError(f"{reason}; {trouble.fix}", errno.EEXIST, reason, path=path)
    what = kind_of(path)
    fix = "remove it or pick another path" if what == "a file" else "pick another path"
    reason = f"cannot create folder {path}: {what} of that name is in the way"
    return WriteError(f"{reason}; {fix}", errno.EEXIST, reason)


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p``, with an OS error as one line (:class:`WriteError`)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise not_a_folder(path) from None
    except OSError as err:
        blocked = in_the_way(path, "cannot create folder") if err.errno == errno.ENOTDIR else None
        raise blocked or write_error(path / ".", err) from None
    return path


def atomic_write_bytes(path: str | Path, data: bytes, *, mode_of: str | Path | None = None,
                       just_before: Callable[[], None] | None = None) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync and rename.

    An OS error (read-only folder, disk full) is a :class:`WriteError` naming the path and the fix;
    ``path`` is then untouched and no temp file is left. A file replaced keeps its permissions (and owner and
    group where permitted); a new file gets 0666 less the umask. ``mode_of``: the file whose permissions count
    instead (one staged elsewhere, to be renamed over it). Temp files of ``path`` that killed writers left are
    removed first (see the module's docstring). ``just_before()`` is called once the new file is written and
    fsynced, the moment before it is renamed into place (what must go with the old version: files drawn from it);
    what it returns, where callable (:func:`set_aside`'s), is called with True once the rename is done and with
    False when the rename failed: the old version's files then stay whole beside it (a rename refused after
    ``just_before`` had deleted them left the old JSON without its figures).
    """
    path = Path(path)
    _refuse_special_file(path)
    part = temp_part(path)  # a name too long is refused before any folder is made for it
    guard = _guard_of(path.parent)
    if guard is None:
        make_dirs(path.parent)
    else:  # a guarded folder gone is never made anew (its first files went with it): FolderGone
        guard()
    # the permissions of the file replaced: not those of a link's target, which stays as it is (the link is replaced)
    old = None if mode_of is None and os.path.islink(path) else _regular_stat(path if mode_of is None else Path(mode_of))
    _remove_stale_temp_files_of(path, part)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{part}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as err:
        if guard is not None:  # its folder moved or deleted since the check (no such file): said as such
            guard()
        raise write_error(path, err) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            _flock_held_elsewhere(fd)  # locks it while it is written: the mark of a live writer
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _take_over(tmp, old)
        settle = just_before() if just_before is not None else None
        try:
            _rename(tmp, path)
        except BaseException:
            if callable(settle):
                settle(False)
            raise
        if callable(settle):
            settle(True)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:  # gone already; or kept by an append-only folder (chattr +a), which the error below names
            pass
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            if guard is not None:  # its folder moved or deleted since the check (no such file): said as such
                guard()
            raise write_error(path, err) from None
        raise
    _note_own_change(path.parent)


def _guard_of(folder: Path) -> Callable[[], None] | None:
    """The check of the :class:`FolderGuard` guarding ``folder`` now (:func:`guarded`), None where none does."""
    if not _GUARDED:
        return None
    checks = _GUARDED.get(os.path.abspath(folder))
    return checks[-1] if checks else None


@contextlib.contextmanager
def guarded(guard: "FolderGuard | None") -> Iterator["FolderGuard | None"]:
    """Inside, every write into ``guard``'s folder (:func:`atomic_write_bytes`, from any thread) first checks that
    the folder is still the one the guard took: one moved or deleted meanwhile stops the write with its one line
    (:class:`~cnnlab.errors.FolderGone`, or the guard's own ``refusal``), and is never made anew. ``None``: nothing
    guarded (a run without a folder, an ``--out`` not given)."""
    if guard is None:
        yield None
        return
    key = os.path.abspath(guard.folder)
    _GUARDED.setdefault(key, []).append(guard.check)
    try:
        yield guard
    finally:
        checks = _GUARDED.get(key, [])
        if guard.check in checks:
            checks.remove(guard.check)
        if not checks:
            _GUARDED.pop(key, None)


class FolderGuard:
    """A folder this process writes into, known by its identity (device and inode; where the process holds a lock
    file in it, that file's too): a folder renamed or deleted while the process works in it is noticed at its next
    write (:meth:`check`, and every write inside :func:`guarded`), which stops with one line and writes nothing
    more. Each write made the folder's old path anew: a training wrote on without its config.json or lock, where a
    resume was then accepted; a report's figures went into a new folder, its summary.json with the one moved.

    ``refusal(where)`` makes the error raised, ``where`` the folder's new place (None: deleted, or it cannot be
    told); by default a :class:`~cnnlab.errors.FolderGone`. Its new place is read from an open descriptor (on
    Linux): the lock file's where :meth:`take` is given a lock, else the folder's own, opened then."""

    def __init__(self, folder: str | Path, refusal: Callable[[Path | None], BaseException] | None = None):
        self.folder = Path(folder)
        self.refusal = refusal or self._gone
        self.lock = None  # a held lock file in the folder (runs.RunLock: its fd and path)
        self.fd: int | None = None  # the folder's own descriptor, where no lock's tells where it went
        self.identity: tuple | None = None
        self.gone = False

    def take(self, lock=None) -> "FolderGuard":
        """The folder as it is now (and ``lock``, a held :class:`cnnlab.runs.RunLock` in it); one that is not there
        is not guarded."""
        self.lock = lock
        if (lock is None or lock.fd is None) and self.fd is None:
            try:
                self.fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
            except OSError:  # (out of descriptors: guarded all the same, only its new place is not told)
                self.fd = None
        self.identity = self._now()
        return self

    def release(self) -> None:
        """Close the folder's descriptor, if one was opened."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def _now(self) -> tuple | None:
        try:
            folder = os.stat(self.folder)
            if self.lock is not None and self.lock.fd is not None:
                held, locked = os.stat(self.lock.path), os.fstat(self.lock.fd)
                if (locked.st_dev, locked.st_ino) != (held.st_dev, held.st_ino):
                    return None  # another lock file: another folder in its place
        except OSError:
            return None
        return folder.st_dev, folder.st_ino

    def check(self) -> None:
        """Raise (one line) when the folder is no longer the one taken."""
        if self.identity is None or self._now() == self.identity:
            return
        self.gone = True
        raise self.refusal(self.moved_to())

    def moved_to(self) -> Path | None:
        """Where the folder is now (from an open descriptor, on Linux), relative to the current folder where it
        lies in it; None when it was deleted or that cannot be told."""
        by_lock = self.lock is not None and getattr(self.lock, "fd", None) is not None
        fd = self.lock.fd if by_lock else self.fd
        if fd is None:
            return None
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        if target.endswith(" (deleted)") or not target.startswith("/"):
            return None
        folder = Path(target).parent if by_lock else Path(target)
        try:
            return folder.relative_to(Path.cwd())
        except (ValueError, OSError):
            return folder

    def _gone(self, where: Path | None) -> FolderGone:
        what = f"was moved to {where}" if where is not None else "was moved or deleted"
        return FolderGone(f"{self.folder} {what} while this command wrote into it; nothing more is written, nor a "
                          "folder made in its place: run it again", where)


def _rename(tmp: str, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except InterruptedError:  # EINTR (a signal, NFS), which Python does not retry for a rename: once more
        os.replace(tmp, path)


def set_aside(paths: list[Path]) -> Callable[[bool], None]:
    """Move the files at ``paths`` that are there out of the way, under temp names beside them (a write's, so that
    a kill before they are settled leaves what the next write there removes: see the module's docstring), for
    :func:`atomic_write_bytes`'s ``just_before``: the function it returns, ``settle(done)``, removes them once the
    new file is in place, or puts them back where the rename failed. One that cannot be moved stays where it is, and so
    does a folder in the place of a file (hidden under a temp name that no write removes, where the write of that
    file refuses it by its name instead)."""
    moved = []
    for path in paths:
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                continue
        except OSError:  # not there: nothing to move
            continue
        aside = path.with_name(f".{temp_part(path)}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
        try:
            os.rename(path, aside)
        except OSError:  # not there (FileNotFoundError), or kept (a read-only folder)
            continue
        moved.append((path, aside))

    def settle(done: bool) -> None:
        for path, aside in moved:
            try:
                if done:
                    os.unlink(aside)
                elif not os.path.lexists(path):
                    os.rename(aside, path)
            except OSError:  # (a temp file left is removed by the next write of its file)
                pass
    return settle


def temp_part(path: Path) -> str:
    """The name part of ``path``'s temp files: its name, or, where a temp file's name would then be longer than
    its folder allows, the name's first bytes and a hash of the whole name (``<start>~<12 hex digits>``). A name
    too long for the folder itself is a :class:`WriteError` (with its own lengths)."""
    name = path.name
    try:
        size = len(os.fsencode(name))
    except UnicodeError:  # not a name the OS takes: its own call says so
        return name
    if size + _TEMP_EXTRA <= 128:  # short enough for any file system's names (ecryptfs: 143 bytes)
        return name
    limit = name_max(_nearest_folder(path.parent))
    if size > limit:
        raise write_error(path, OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path)))
    if size + _TEMP_EXTRA <= limit:
        return name
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:12]
    start = os.fsencode(name)[:max(0, limit - _TEMP_EXTRA - len(digest) - 1)].decode("utf-8", "ignore")
    return f"{start}~{digest}"


def name_max(folder: str | Path) -> int:
    """The longest file name, in bytes, that the file system of ``folder`` takes (:data:`NAME_MAX` where it
    does not say)."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or it cannot tell
        return NAME_MAX
    return limit if limit and limit > 0 else NAME_MAX


def _regular_stat(path: Path) -> os.stat_result | None:
    """The ``stat`` of the regular file at ``path`` (links followed); None when there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _take_over(tmp: str, old: os.stat_result | None) -> None:
    """Give the temp file ``tmp`` the permissions of the file it replaces, ``old``, and its owner and group where
    this user may (root: both; others: a group they are in); without one, 0666 less the umask (mkstemp's
    0600 would hide a new file from the group)."""
    if old is None:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        return
    own = os.stat(tmp)
    if (own.st_uid, own.st_gid) != (old.st_uid, old.st_gid) and hasattr(os, "chown"):
        for uid in (old.st_uid, -1):
            try:
                os.chown(tmp, uid, old.st_gid)
                break
            except OSError:  # not permitted: the next, lesser try (the group only), else as made
                continue
    os.chmod(tmp, stat.S_IMODE(old.st_mode) & 0o777)  # after chown, which may clear bits; never set-id bits


def _flock_held_elsewhere(fd: int) -> bool:
    """Take ``fd``'s ``flock`` without waiting: True when another open file (a live writer) holds it; False when
    it is taken now, or the file system has no such locks (a temp file's pid and age then speak alone)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a process on this machine (another user's included); on Windows, taken to be one (its
    ``os.kill`` would end it)."""
    if not 0 < pid < 1 << 31:
        return False
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def _remove_stale_temp_files_of(path: Path, part: str) -> None:
    """Remove the temp files of ``path`` (named after ``part``: :func:`temp_part`) that writers now gone left
    beside it (a live writer's stay)."""
    try:
        folder = os.path.abspath(path.parent)
        mtime = os.stat(folder).st_mtime_ns
    except OSError:  # the write's own error says what is wrong
        return
    listed = _TEMP_LISTINGS.get(folder)
    if listed is None or listed[0] != mtime:
        if len(_TEMP_LISTINGS) > 1000:
            _TEMP_LISTINGS.clear()
        listed = _TEMP_LISTINGS[folder] = (mtime, _temp_files_by_target(folder))
    for name in listed[1].pop(part, ()):
        _remove_if_stale(os.path.join(folder, name), _TEMP_NAME.fullmatch(name).group(2), owned=False)


def _temp_files_by_target(folder: str) -> dict[str, list[str]]:
    """The temp files in ``folder``, by the name of the file each was for."""
    found: dict[str, list[str]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = _TEMP_NAME.fullmatch(entry.name) if entry.name.endswith(".tmp") else None
                if match:
                    found.setdefault(match.group(1), []).append(entry.name)
    except OSError:
        pass
    return found


def _note_own_change(folder: Path) -> None:
    """A listing of ``folder`` stays valid after this process's own write there (what it found is unchanged)."""
    try:
        key = os.path.abspath(folder)
        listed = _TEMP_LISTINGS.get(key)  # (another thread may write, and clear the listings, meanwhile)
        if listed is not None:
            _TEMP_LISTINGS[key] = (os.stat(key).st_mtime_ns, listed[1])
    except OSError:
        pass


def _remove_if_stale(tmp: str, pid: str | None, owned: bool) -> None:
    """Remove the temp file ``tmp`` (written by ``pid``; None: a name without one) when its writer is gone: its
    lock is free, and the pid runs no process or the file is older than :data:`STALE_TEMP_S`. In a folder this
    process ``owned`` (a locked run folder), a temp file without a pid need not be old."""
    flags = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:  # for writing where allowed: NFS emulates flock with locks that need it
        fd = os.open(tmp, os.O_RDWR | flags) if os.access(tmp, os.W_OK) else os.open(tmp, os.O_RDONLY | flags)
    except OSError:  # gone already, a link, or not ours to open
        return
    try:
        st = os.fstat(fd)
        young = time.time() - st.st_mtime < STALE_TEMP_S
        writer_may_live = _pid_alive(int(pid)) if pid is not None else not owned
        if not stat.S_ISREG(st.st_mode) or (writer_may_live and young) or _flock_held_elsewhere(fd):
            return
        os.unlink(tmp)  # under its lock: no writer holds it
    except OSError:
        pass
    finally:
        os.close(fd)


def _refuse_special_file(path: Path) -> None:
    """A device, FIFO, socket or folder at ``path`` (or behind a link there) is refused: the rename would put a
    plain file in its place (as root, ``--out /dev/null`` replaced the device; ``/dev/stdout`` is a link); so is a
    loop of symbolic links (:func:`symlink_loop`), which the user may have made on purpose."""
    if is_loop(path):
        raise write_error(path, OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path)))
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


def remove_stale_temp_files_in(folder: str | Path, owned: bool = True) -> None:
    """Delete the temp files that killed writes left in ``folder``, which this process owns (it is locked): all
    but those that a live writer holds (an ``evaluate`` or ``export`` writing into the run folder now). In a
    folder not ``owned``, only those whose writer is gone by the rule of the module's docstring."""
    for tmp in Path(folder).glob(".*.tmp"):
        match = _TEMP_NAME.fullmatch(tmp.name)
        _remove_if_stale(str(tmp), match.group(2) if match else None, owned=owned)


def atomic_write_text(path: str | Path, text: str, *, just_before: Callable[[], None] | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), just_before=just_before)


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


def atomic_write_json(path: str | Path, obj, *, just_before: Callable[[], None] | None = None) -> None:
    """``obj`` as strict JSON at ``path`` (:func:`atomic_write_bytes`, ``just_before`` as it takes it)."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n",
                      just_before=just_before)


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


#: The PNG text chunk (keyword, text) every figure cnnlab draws carries (``drawing.save_png``, ``plots.save_figure``),
#: right after the image header: what tells a run's curves.png from a user's image of that name (:func:`png_marked`).
FIGURE_MARK = ("Software", "cnnlab")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: How far into a PNG :func:`png_marked` looks for the mark (cnnlab writes it at byte 33).
_PNG_HEAD = 4096


def png_marked(stream: BinaryIO, mark: tuple[str, str] = FIGURE_MARK) -> bool:
    """Whether the open file ``stream`` is a PNG that carries the text chunk ``mark`` before its pixels (among the
    chunks of its first bytes): a figure cnnlab drew (:data:`FIGURE_MARK`), not any PNG of the same name."""
    head = read_at_most(stream, _PNG_HEAD)
    if not isinstance(head, bytes) or not head.startswith(_PNG_SIGNATURE):
        return False
    wanted, at = mark[0].encode("latin-1") + b"\0" + mark[1].encode("latin-1"), len(_PNG_SIGNATURE)
    while at + 8 <= len(head):
        size, kind = int.from_bytes(head[at:at + 4], "big"), head[at + 4:at + 8]
        if kind in (b"IDAT", b"IEND"):
            return False
        if kind == b"tEXt" and head[at + 8:at + 8 + size] == wanted:
            return True
        at += 12 + size  # length, type, data, CRC
    return False


#: The most one ``read`` of :func:`read_at_most` asks for.
READ_CHUNK = 1 << 20


def read_at_most(stream: BinaryIO, size: int):
    """Up to ``size`` bytes of ``stream`` (fewer at its end), read in chunks of at most :data:`READ_CHUNK`:
    ``stream.read(size)`` allocates ``size`` bytes before it reads one, whatever the file holds (each run JSON read
    under :data:`RUN_FILE_LIMIT` reserved 256 MB, which a data-segment limit refused: ``evaluate RUN`` of a tiny run
    was out of memory under ``ulimit -d 400000``). What a first read gives that is not bytes (a text-mode file's str,
    None) is returned as it is, for the caller to refuse."""
    data = stream.read(min(size, READ_CHUNK))
    if not isinstance(data, (bytes, bytearray)) or not data or len(data) >= size:
        return data
    chunks, total = [bytes(data)], len(data)
    while total < size:
        chunk = stream.read(min(size - total, READ_CHUNK))
        if not chunk:
            break
        chunks.append(bytes(chunk))
        total += len(chunk)
    return b"".join(chunks)


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
            data = read_at_most(fh, limit + 1)  # (a file of 1 KB costs 1 KB, not the limit)
    except OSError as err:  # its open or its read (an input/output error after the open is told as the same)
        raise CnnlabError(cannot_read(what, err)) from None
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


def file_stamp(path: str | Path) -> tuple[int, int, int, int] | None:
    """What tells the versions of the file ``path`` names apart without reading it: its device, inode, size and
    modification time in ns (a file renamed into place, as every cnnlab save is, is a new inode); None when it cannot
    be statted now (gone, moved, unreadable)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return sha256_of(fh)


def sha256_of(fh) -> str:
    """The SHA-256 of an open binary file's bytes from where it stands to its end, read in 1 MiB chunks."""
    h = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def sidecar_hashes(text: str) -> list[str]:
    """The hashes a checkpoint's ``.sha256`` sidecar lists, a ``<hash>  <name>`` line each (one normally; two while
    a save is in flight, or for good after a save was killed)."""
    return [line.split()[0] for line in text.splitlines() if line.strip()]
