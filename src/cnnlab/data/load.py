""":func:`load_dataset`: a dataset name -> a :class:`~cnnlab.data.dataset.Dataset`, whatever its kind.

Catalog entries come verified from :mod:`cnnlab.data.sources`, ``idx:DIR`` from
:mod:`cnnlab.data.idxdir`, ``folder:DIR`` from :mod:`cnnlab.data.folder` (converted once, cached).
"""

from __future__ import annotations

from pathlib import Path

import torch

from cnnlab.data.dataset import Dataset, train_statistics, validate_dataset
from cnnlab.data.folder import load_image_folder
from cnnlab.data.tensors import arrays_to_tensors
from cnnlab.data.idxdir import load_idx_dir
from cnnlab.data.names import directory_of, get_spec
from cnnlab.data.sources import Log, _stderr, check_data_dir_there, cnnlab_home, expand_home, locate
from cnnlab.errors import DataError
from cnnlab.fileio import expand_user, resolved


def load_dataset(
    name: str = "mnist",
    data_dir: str | Path | None = None,
    home: str | Path | None = None,
    download: bool = True,
    log: Log = _stderr,
    full_check: bool = False,
    cache_data_dir: bool = False,
) -> Dataset:
    """Load a dataset by name (``mnist``, ``fashion-mnist``, ``idx:DIR``, ``folder:DIR``) as uint8 tensors.

    Catalog datasets are verified against their checksums; ``home`` is cnnlab's cache root
    (default ``$CNNLAB_HOME``), where downloads and converted image folders are kept. Whatever the kind,
    the dataset is checked with :func:`~cnnlab.data.dataset.validate_dataset` (both splits hold images
    of a size the nets take, and labels leave no class empty) before it is returned. A cached catalog
    dataset comes from the cache's fast copy when it matches (:mod:`cnnlab.data.fastcopy`: MD5-verified
    when written, CRC-32 checked on every load); ``full_check`` checks the cached files' MD5s now instead.
    ``data_dir`` is where a catalog dataset's files are looked for first (an ``idx:``/``folder:`` dataset is
    its own directory: ``data_dir`` is refused with it); with ``cache_data_dir`` they are also cached.
    """
    home = expand_home(home) if home else None
    check_data_dir(name, data_dir)
    directory = directory_of(name)
    if directory is not None:
        kind, path = directory
        data = load_idx_dir(path) if kind == "idx" else _load_folder(path, home, log)
    else:
        data = _load_catalog(name, data_dir, home, download, log, full_check, cache_data_dir)
    validate_dataset(data)
    return data


def check_data_dir(name: str, data_dir: str | Path | None) -> None:
    """A ``data_dir`` given with the dataset ``name``, refused as :func:`load_dataset` refuses it, without loading
    anything: beside an ``idx:``/``folder:`` dataset (it changed nothing, silently), or no directory."""
    if not data_dir:
        return
    directory = directory_of(name)
    if directory is not None:
        kind, path = directory
        raise DataError(f"--data-dir {data_dir} does nothing for the dataset {kind}:{path}, which is read from "
                        f"that directory; leave --data-dir out (it is where the files of a catalog dataset such "
                        "as mnist are looked for)")
    check_data_dir_there(data_dir)


def _load_catalog(name: str, data_dir, home: Path | None, download: bool, log: Log, full_check: bool,
                  cache_data_dir: bool = False) -> Dataset:
    spec = get_spec(name)
    found = locate(spec, Path(data_dir) if data_dir else None, home, download, log, fast=not full_check,
                   cache_data_dir=cache_data_dir)
    x, y, tx, ty = arrays_to_tensors(found.arrays, found.source)
    for split, labels in (("train", y), ("test", ty)):
        want = spec.sizes.get(split)
        if want is not None and len(labels) != want:
            raise DataError(f"{found.source}: {spec.name} {split} split has {len(labels)} items, expected {want}")
    return Dataset(spec.name, x, y, tx, ty, spec.classes, spec.mean, spec.std, found.source)


def _load_folder(directory: Path, home: Path | None, log: Log) -> Dataset:
    """An image folder with one subfolder per class, converted once and cached (see cnnlab.data.folder)."""
    got = load_image_folder(directory, home or cnnlab_home(), log)
    x = torch.from_numpy(got.train_images).unsqueeze(1)  # (N, 1, 28, 28) uint8
    tx = torch.from_numpy(got.test_images).unsqueeze(1)
    y, ty = torch.from_numpy(got.train_labels), torch.from_numpy(got.test_labels)  # (N,) int64
    mean, std = train_statistics(x)
    root = resolved(expand_user(directory))
    how = "converted now" if got.converted else "converted earlier"
    kept = f"cached in {got.cache_dir}" if got.cached else "not cached"
    return Dataset(f"folder:{root}", x, y, tx, ty, got.classes, mean, std, f"image folder {root} ({how}; {kept})")
