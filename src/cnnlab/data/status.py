"""What ``cnnlab data info`` reports: where each dataset lives and whether its files verify."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.data.catalog import CATALOG, ROLES
from cnnlab.data.files import find_in_dir
from cnnlab.data.folder import CACHE_FILE
from cnnlab.data.idx import md5, read_maybe_gzip
from cnnlab.data.sources import cache_dir, cnnlab_home
from cnnlab.errors import DataError


def _system_copy(spec) -> str | None:
    """The first system directory that holds all four files (not verified here: fetch does that)."""
    for directory in spec.system_dirs:
        if Path(directory).is_dir() and all(find_in_dir(Path(directory), role) for role in ROLES):
            return directory
    return None


def dataset_status(home=None) -> list[dict]:
    rows = []
    for spec in CATALOG.values():
        directory = cache_dir(spec, home)
        files = []
        for role, (base, _) in ROLES.items():
            path = directory / (base + ".gz")
            if not path.is_file():
                files.append({"file": path.name, "bytes": 0, "status": "missing"})
                continue
            try:
                ok = md5(read_maybe_gzip(path)) == spec.md5[role]
                status = "verified (md5 ok)" if ok else "CHECKSUM MISMATCH: delete it and fetch again"
            except DataError as err:
                status = f"unreadable: {err}"
            files.append({"file": path.name, "bytes": path.stat().st_size, "status": status})
        complete = all(f["status"].startswith("verified") for f in files)
        missing = all(f["status"] == "missing" for f in files)
        system = _system_copy(spec)
        fetch_hint = f"run: cnnlab data fetch {spec.name}"
        if system:
            fetch_hint += f"; it will use the system package's copy in {system}"
        rows.append({
            "name": spec.name,
            "location": str(directory),
            "status": "cached and verified" if complete else
                      (f"not cached ({fetch_hint})" if missing else "cache damaged"),
            "train": spec.sizes.get("train"),
            "test": spec.sizes.get("test"),
            "system_copy": system,
            "files": files,
        })
    rows.extend(_folder_rows(home))
    return rows


def _folder_rows(home) -> list[dict]:
    """Converted image folders (``folder:DIR``) in the cache, one row each."""
    root = Path(home) if home else cnnlab_home()
    rows = []
    for directory in sorted((root / "datasets").glob("folder-*")):
        path = directory / CACHE_FILE
        if not path.is_file():
            continue
        name, train, test, status = f"folder:? ({directory.name})", None, None, "converted"
        try:
            with np.load(path, allow_pickle=False) as z:
                name = f"folder:{z['root']}"
                train, test = int(z["train_labels"].shape[0]), int(z["test_labels"].shape[0])
                skipped = int(z["skipped"].shape[0])
            status = "converted and cached" + (f" ({skipped} unreadable files skipped)" if skipped else "")
        except Exception as err:  # a damaged cache is reported, and reconverted on the next load
            status = f"cache damaged ({type(err).__name__}); it is converted again on the next load"
        rows.append({
            "name": name,
            "location": str(directory),
            "status": status,
            "train": train,
            "test": test,
            "files": [{"file": CACHE_FILE, "bytes": path.stat().st_size, "status": status.split(" (")[0]}],
        })
    return rows
