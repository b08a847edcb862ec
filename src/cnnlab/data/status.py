"""What ``cnnlab data info`` reports: where each dataset lives and whether its files verify.

It only reads: nothing in the cache is written, repaired or deleted here, and a cache that cannot be read
(permission denied, a damaged file) is reported as such, in its row, never as a traceback.

What it calls verified was verified, and each row's ``checked`` says how and when: either the ``.gz``
files' MD5s now (``--verify``, or whenever the fast copy does not match), or, from a matching fast copy
(:mod:`cnnlab.data.fastcopy`), their MD5s when they were cached, their sizes and modification times
unchanged since, and the fast copy's CRC-32s checked now.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from cnnlab.data.catalog import CATALOG, ROLES
from cnnlab.data.fastcopy import MANIFEST, FastCopy, gz_name, load_fast_copy, npy_name, read_manifest
from cnnlab.data.files import idx_files
from cnnlab.data.folder import CACHE_FILE, read_cache
from cnnlab.data.idx import read_idx
from cnnlab.data.safefs import entry_kind, list_dir, probe, reason, usual_fix
from cnnlab.data.sources import cache_dir, cnnlab_home, expand_home, home_problem
from cnnlab.errors import DataError, DataUnreadable


def _system_copy(spec) -> str | None:
    """The first system directory that holds all four files (not verified here: fetch does that)."""
    for directory in spec.system_dirs:
        try:
            if entry_kind(directory) == "a directory" and not idx_files(Path(directory), spec.name).missing:
                return directory
        except DataError:  # unreadable: not a copy fetch could use
            continue
    return None


def _file_row(spec, role: str, path: Path, unreadable: list[DataUnreadable]) -> dict:
    """One cached file: its size and whether its MD5 (of the unpacked bytes) is the catalog's, checked now. A file
    that is there but cannot be read now is added to ``unreadable`` (not damage: the file may be whole)."""
    try:
        kind = entry_kind(path)
        if kind is None:
            return {"file": path.name, "bytes": 0, "status": "missing"}
        _, digest, st = read_idx(path, ROLES[role][1], want_md5=True)
    except DataError as err:
        if isinstance(err, DataUnreadable):
            unreadable.append(err)
        return {"file": path.name, "bytes": _size(path), "status": f"unreadable: {err}"}
    ok = digest == spec.md5[role]
    status = "verified (md5 ok)" if ok else "CHECKSUM MISMATCH: delete it and fetch again"
    return {"file": path.name, "bytes": st.st_size, "status": status}


def _not_verified(unreadable: list[DataUnreadable]) -> str:
    """The row's status of a cache whose files do not all verify: files that could not be read now (the first named,
    with the fix its error takes: never "delete them", the files may be whole), else damaged."""
    if not unreadable:
        return "cache damaged"
    first, more = unreadable[0], len(unreadable) - 1
    others = f", and {more} more file{'s' if more > 1 else ''}" if more else ""
    return (f"cache unreadable: could not be read ({reason(first.cause)} on {Path(first.path).name}{others}): "
            f"{usual_fix(first.cause)}")


def _size(path: Path) -> int:
    try:
        st = probe(path)
    except DataError:
        return 0
    return st.st_size if st else 0


def _from_fast_copy(copy: FastCopy) -> tuple[list[dict], list[dict], str]:
    """The rows of a cache whose fast copy matches (read and CRC-checked now)."""
    when = copy.manifest.get("verified_utc", "an unrecorded time")
    entries = copy.manifest["files"]
    gz = [{"file": gz_name(role), "bytes": entries[role]["gz_bytes"],
           "status": f"verified (md5 ok when cached, {when}; size and mtime unchanged since)"} for role in ROLES]
    npy = [{"file": npy_name(role), "bytes": entries[role]["npy_bytes"], "status": "fast copy (crc32 ok now)"}
           for role in ROLES]
    return gz, npy, f"md5 when cached ({when}), sizes and mtimes unchanged since, fast copy crc32 now"


def _catalog_files(spec, directory: Path, full_check: bool,
                   unreadable: list[DataUnreadable]) -> tuple[list[dict], list[dict], str]:
    """(rows of the .gz files, rows of the fast copy, how they were checked); the .gz files that could not be read
    now are added to ``unreadable``."""
    copy = None if full_check else load_fast_copy(spec, directory)
    if copy is not None and copy.arrays is not None:
        return _from_fast_copy(copy)
    gz = [_file_row(spec, role, directory / gz_name(role), unreadable) for role in ROLES]
    if copy is not None and copy.unreadable is not None:  # not a mismatch: it may be whole, and is not rewritten
        path = Path(copy.unreadable.path)
        return gz, [{"file": path.name, "bytes": _size(path), "status": f"fast copy not used: {copy.unreadable}"}], \
            "md5 now"
    extra = []
    try:
        manifest = read_manifest(directory)
    except DataError as err:
        manifest, extra = None, [{"file": MANIFEST, "bytes": _size(directory / MANIFEST), "status": f"unreadable: {err}"}]
    if manifest is not None:
        how = "not checked (--verify)" if full_check else "does not match (rewritten on the next load)"
        extra = [{"file": MANIFEST, "bytes": _size(directory / MANIFEST), "status": f"fast copy {how}"}]
    return gz, extra, "md5 now"


def dataset_status(home=None, full_check: bool = False) -> list[dict]:
    """One row per catalog dataset and per converted image folder; ``full_check`` checks every cached
    ``.gz`` file's MD5 now instead of trusting a matching fast copy. A home that is a file (or below one) is
    a :class:`DataError`: every row would say "not cached", and nothing could be."""
    problem = home_problem(home)
    if problem:
        raise DataError(f"{problem[0]}, so no dataset can be cached there; {problem[1]}")
    rows = []
    for spec in CATALOG.values():
        directory = cache_dir(spec, home)
        unreadable: list[DataUnreadable] = []
        gz, fast, checked = _catalog_files(spec, directory, full_check, unreadable)
        complete = all(f["status"].startswith("verified") for f in gz)
        missing = all(f["status"] == "missing" for f in gz)
        system = _system_copy(spec)
        fetch_hint = f"run: cnnlab data fetch {spec.name}"
        if system:
            fetch_hint += f"; it will use the system package's copy in {system}"
        rows.append({
            "name": spec.name,
            "location": str(directory),
            "cached": complete,
            "status": "cached and verified" if complete else (f"not cached ({fetch_hint})" if missing else
                                                              _not_verified(unreadable)),
            "train": spec.sizes.get("train"),
            "test": spec.sizes.get("test"),
            "system_copy": system,
            "checked": checked if not missing else "nothing cached",
            "files": gz + fast,
        })
    rows.extend(_folder_rows(home, full_check))
    return rows


def _folder_rows(home, full_check: bool = False) -> list[dict]:
    """Converted image folders (``folder:DIR``) in the cache, one row each; ``full_check`` reads every array (each
    one's CRC is checked as it is inflated), so that a damaged image array is found, not only the labels'."""
    datasets = (expand_home(home) if home else cnnlab_home()) / "datasets"
    try:
        entries = list_dir(datasets) if entry_kind(datasets) == "a directory" else []
        directories = [datasets / e.name for e in entries if e.name.startswith("folder-")]
    except DataError as err:
        return [{"name": "folder:*", "location": str(datasets), "status": f"cache unreadable: {err}",
                 "train": None, "test": None, "files": []}]
    rows = []
    for directory in directories:
        path = directory / CACHE_FILE
        try:
            if entry_kind(path) != "file":
                continue
        except DataError:
            pass  # reported below, by the failing read
        name, train, test, status = f"folder:? ({directory.name})", None, None, "converted"
        try:
            data = read_cache(path)  # read whole: a read error is no "File is not a zip file" (damage)
            if data is None:
                continue
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                name = f"folder:{z['root']}"
                train, test = int(z["train_labels"].shape[0]), int(z["test_labels"].shape[0])
                skipped = int(z["skipped"].shape[0])
                for member in z.files if full_check else ():
                    z[member]
            status = "converted and cached" + (f" ({skipped} unreadable files skipped)" if skipped else "")
        except DataUnreadable as err:  # permission denied, I/O error: the file itself may be fine
            status = f"cache unreadable ({reason(err.cause)}); {usual_fix(err.cause)}"
        except Exception as err:  # a damaged cache is reported, and reconverted on the next load
            status = f"cache damaged ({type(err).__name__}); it is converted again on the next load"
        rows.append({
            "name": name,
            "location": str(directory),
            "status": status,
            "train": train,
            "test": test,
            "files": [{"file": CACHE_FILE, "bytes": _size(path), "status": status.split(" (")[0]}],
        })
    return rows
