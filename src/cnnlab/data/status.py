"""What ``cnnlab data info`` reports: where each dataset lives and whether its files verify."""

from __future__ import annotations

from cnnlab.data.catalog import CATALOG, ROLES
from cnnlab.data.idx import md5, read_maybe_gzip
from cnnlab.data.sources import cache_dir
from cnnlab.errors import DataError


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
        rows.append({
            "name": spec.name,
            "location": str(directory),
            "status": "cached and verified" if complete else
                      (f"not cached (run: cnnlab data fetch {spec.name})" if missing else "cache damaged"),
            "train": spec.sizes.get("train"),
            "test": spec.sizes.get("test"),
            "files": files,
        })
    return rows
