"""The cache's fast copy: a catalog dataset's verified arrays as ``.npy`` files beside its official ``.gz``
files, so that a load reads them without inflating 55 MB and hashing it with MD5 every time.

Written only from arrays whose MD5s were just checked against the catalog (a download, a system copy, or
the ``.gz`` cache read the slow way): the four ``.npy`` files as one group
(:func:`cnnlab.data.cachefiles.write_group`), then :data:`MANIFEST`, atomically. The manifest records, per
file, the catalog MD5 the data was verified against, the ``.gz`` file's size and modification time at that
moment, and the ``.npy`` file's size, shape and CRC-32 of its data; and when the verification happened.

A load uses the fast copy only when all of it matches: the manifest's format and dataset, the catalog's
MD5s as they are now, every ``.gz`` file's size and mtime (the verified official files are still those),
every ``.npy`` file's size, header (uint8, C order, the recorded shape) and the CRC-32 of its data, read
now. Anything else (no manifest, a touched ``.gz``, a damaged ``.npy``, a changed catalog) is a miss: the
caller verifies the ``.gz`` files by MD5 the slow way and writes the fast copy again. A file of it that is there
but cannot be read (an input/output error, permission denied: ``FastCopy.unreadable``) is a miss too, and is not
written again: the file may be whole, and a disk that just failed a read is no place to rewrite 55 MB. The
``.npy`` files are plain NumPy arrays that any tool can memory-map; cnnlab reads them whole, since the CRC-32
check touches every byte anyway, and a mapped file truncated by someone else would crash the process.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data.cachefiles import write_group
from cnnlab.data.catalog import ROLES, DatasetSpec
from cnnlab.data.idx import MAX_IDX_BYTES
from cnnlab.data.safefs import entry_kind, open_regular, read_bounded, read_error
from cnnlab.errors import DataError, DataUnreadable
from cnnlab.fileio import atomic_write_json

MANIFEST = "fast-copy.json"
FORMAT = 1
_MAX_MANIFEST_BYTES = 1 << 16
_CHUNK = 1 << 22


def npy_name(role: str) -> str:
    return ROLES[role][0] + ".npy"


def gz_name(role: str) -> str:
    return ROLES[role][0] + ".gz"


@dataclass
class FastCopy:
    """What :func:`load_fast_copy` found: the arrays (a hit), or why not (``problem``; ``None`` when there is
    simply no fast copy), and the manifest when one was read."""

    arrays: dict[str, np.ndarray] | None
    problem: str | None = None
    manifest: dict | None = None
    #: A file of the fast copy that is there but could not be read (``problem`` says which, and why): not damage,
    #: so the fast copy is left as it is.
    unreadable: DataUnreadable | None = None


def npy_header(shape: tuple[int, ...]) -> bytes:
    """The exact header of a version-1.0 ``.npy`` file of a C-ordered uint8 array of ``shape``: what the fast
    copy writes, and what it compares byte for byte on reading (no parsing of a file's header)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                               "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    return npy_header(array.shape) + np.ascontiguousarray(array).tobytes()


def write_fast_copy(spec: DatasetSpec, directory: Path, arrays: dict[str, np.ndarray],
                    gz_stats: dict[str, os.stat_result]) -> None:
    """Write the fast copy of ``arrays``, verified by MD5 a moment ago; ``gz_stats`` are the ``stat`` of the
    ``.gz`` files they were verified from (or that hold them). Raises ``OSError`` when it cannot be written."""
    payloads, files = {}, {}
    for role, array in arrays.items():
        payload = _npy_bytes(array)
        payloads[npy_name(role)] = payload
        files[role] = {
            "npy": npy_name(role), "npy_bytes": len(payload), "shape": list(array.shape),
            "crc32": zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B")),
            "md5": spec.md5[role],
            "gz": gz_name(role), "gz_bytes": gz_stats[role].st_size, "gz_mtime_ns": gz_stats[role].st_mtime_ns,
        }
    write_group(directory, payloads)
    atomic_write_json(directory / MANIFEST, {
        "format": FORMAT, "dataset": spec.name,
        "verified_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "files": files,
    })


def read_manifest(directory: Path) -> dict | None:
    """The manifest, ``None`` when there is none; a :class:`DataError` when it cannot be read or parsed."""
    path = directory / MANIFEST
    if entry_kind(path) is None:
        return None
    fh, _ = open_regular(path, "a fast-copy manifest")
    with fh:
        raw = read_bounded(fh, _MAX_MANIFEST_BYTES, str(path))
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError; nesting can recurse
        raise DataError(f"{path}: not valid JSON ({type(err).__name__})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: not a manifest")
    return manifest


def manifest_problem(spec: DatasetSpec, directory: Path, manifest: dict) -> str | None:
    """Why the manifest does not describe this dataset's verified files as they are now; ``None`` if it does.

    Cheap: the catalog's MD5s and a ``stat`` of each ``.gz`` file, no data read."""
    if manifest.get("format") != FORMAT or manifest.get("dataset") != spec.name:
        return "manifest of another format or dataset"
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(ROLES):
        return "manifest lists other files"
    for role in ROLES:
        entry = files[role]
        if not isinstance(entry, dict) or entry.get("md5") != spec.md5[role]:
            return f"{gz_name(role)} was verified against another checksum"
        st = os.stat(directory / gz_name(role))
        if (st.st_size, st.st_mtime_ns) != (entry.get("gz_bytes"), entry.get("gz_mtime_ns")):
            return f"{gz_name(role)} changed since it was verified (size or modification time)"
    return None


def read_npy(path: Path, entry: dict) -> np.ndarray:
    """The ``.npy`` file of a manifest entry, checked: size, header (uint8, C order, shape), CRC-32 of the data.

    Raises :class:`DataError` (or ``KeyError``/``TypeError`` for a malformed manifest entry). The shape must be a
    list of whole numbers, as written: a ``1e999`` there (JSON's infinity) was an ``OverflowError`` traceback."""
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise DataError(f"{path}: the manifest's shape {json.dumps(shape)[:80]} is not a list of whole numbers")
    shape = tuple(shape)
    if math.prod(shape) > MAX_IDX_BYTES:
        raise DataError(f"{path}: the manifest's shape {list(shape)} is too large")
    header = npy_header(shape)
    fh, st = open_regular(path, "a fast-copy array")
    with fh:
        if st.st_size != entry["npy_bytes"] or st.st_size != len(header) + math.prod(shape):
            raise DataError(f"{path}: {st.st_size} bytes, the manifest says {entry['npy_bytes']} for shape {list(shape)}")
        try:
            if fh.read(len(header)) != header:
                raise DataError(f"{path}: its .npy header is not that of a uint8 array of shape {list(shape)}")
            array = np.empty(shape, dtype=np.uint8)
            view = memoryview(array).cast("B")
            pos = 0
            while pos < len(view):
                n = fh.readinto(view[pos:pos + _CHUNK])
                if not n:
                    raise DataError(f"{path}: ends early")
                pos += n
        except OSError as err:  # a read that fails after the open, told as an open that fails
            raise read_error(path, err) from None
    if zlib.crc32(view) != entry["crc32"]:
        raise DataError(f"{path}: CRC-32 of its data does not match the manifest (the file is damaged)")
    return array


def load_fast_copy(spec: DatasetSpec, directory: Path) -> FastCopy:
    """The verified arrays from the fast copy when everything matches (see the module docstring)."""
    try:
        manifest = read_manifest(directory)
        if manifest is None:
            return FastCopy(None)
        problem = manifest_problem(spec, directory, manifest)
        if problem:
            return FastCopy(None, problem, manifest)
        arrays = {role: read_npy(directory / npy_name(role), manifest["files"][role]) for role in ROLES}
    except DataUnreadable as err:  # there, but not readable now: not damage
        return FastCopy(None, str(err), unreadable=err)
    except DataError as err:
        return FastCopy(None, str(err))
    except (OSError, KeyError, TypeError, ValueError) as err:  # a missing file, a malformed manifest entry
        return FastCopy(None, f"{type(err).__name__}: {err}")
    return FastCopy(arrays, None, manifest)
