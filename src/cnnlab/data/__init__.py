"""Data: verified MNIST-like datasets as uint8 tensors, and batches without a DataLoader.

This package knows nothing of models. ``load_dataset`` returns whole splits as tensors;
``BatchLoader`` slices them into normalised batches on any device. Names: a catalog entry
(``mnist``, ``fashion-mnist``), ``idx:DIR`` (four IDX files) or ``folder:DIR`` (one subfolder
per class, see :mod:`cnnlab.data.folder`). Normalisation statistics always describe the train
split: the catalog's hard-coded values (computed from it; MNIST keeps the lecture's), or
:func:`train_statistics` of the train split for ``idx:`` and ``folder:``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data.catalog import CATALOG, ROLES, DatasetSpec
from cnnlab.data.folder import load_image_folder
from cnnlab.data.idx import decode_idx, images_labels_to_tensors, read_maybe_gzip
from cnnlab.data.loader import BatchLoader, epoch_permutation
from cnnlab.data.sources import Log, _stderr, cache_dir, cnnlab_home, find_in_dir, locate
from cnnlab.errors import DataError


@dataclass
class Dataset:
    """Both splits of a dataset as tensors: images (N, C, H, W) uint8, labels (N,) int64."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    mean: float
    std: float
    source: str

    @property
    def in_channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_images.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def info(self) -> dict:
        """What a run records about its data (enough for predict/serve to normalise the same way)."""
        return {
            "name": self.name,
            "classes": list(self.classes),
            "mean": self.mean,
            "std": self.std,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "train_size": len(self.train_labels),
            "test_size": len(self.test_labels),
            "source": self.source,
        }


def _tensors(files: dict[str, bytes], where: str) -> tuple[torch.Tensor, ...]:
    arrays = {role: decode_idx(data, f"{where} {ROLES[role][0]}", ROLES[role][1]) for role, data in files.items()}
    train = images_labels_to_tensors(arrays["train_images"], arrays["train_labels"], f"{where} train split")
    test = images_labels_to_tensors(arrays["test_images"], arrays["test_labels"], f"{where} test split")
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(f"{where}: train images are {tuple(train[0].shape[1:])} but test images {tuple(test[0].shape[1:])}")
    return (*train, *test)


def train_statistics(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of a uint8 image tensor's pixels scaled to [0, 1]."""
    x = images.to(torch.float64).div_(255.0)
    return float(x.mean()), float(x.std())


def _load_idx_dir(directory: Path) -> Dataset:
    """Any directory holding the four IDX files of an MNIST-shaped dataset (no checksums to verify).

    Official names (raw or ``.gz``, as KMNIST also uses) or names that contain them, like EMNIST's
    ``emnist-digits-train-images-idx3-ubyte.gz``: one dataset per directory. Classes are
    ``0..max label``. EMNIST stores its images transposed (rows are the digit's columns); files
    named ``emnist-*`` are transposed back on loading, so that plots, mistakes and predictions on real,
    upright images see them the right way up.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise DataError(f"idx:{directory}: no such directory; pass idx:DIR with the four IDX files")
    files, names = {}, []
    for role in ROLES:
        path = find_in_dir(directory, role) or _find_loose(directory, role)
        if path is None:
            raise DataError(
                f"idx:{directory}: no {ROLES[role][0]} file (raw or .gz) found; "
                "the directory needs train/t10k images and labels in IDX format"
            )
        files[role] = read_maybe_gzip(path)
        names.append(path.name.lower())
    x, y, tx, ty = _tensors(files, f"idx:{directory}")
    source = f"directory {directory}"
    if all(n.startswith("emnist") for n in names):
        x, tx = x.transpose(2, 3).contiguous(), tx.transpose(2, 3).contiguous()
        source += " (EMNIST: images transposed upright)"
    num_classes = int(max(y.max(), ty.max())) + 1
    mean, std = train_statistics(x)
    return Dataset(f"idx:{directory}", x, y, tx, ty, tuple(str(c) for c in range(num_classes)), mean, std, source)


def _find_loose(directory: Path, role: str) -> Path | None:
    """Files named like KMNIST's or EMNIST's (``*train*images*``, ``*test*labels*``...).

    A raw file is preferred to its ``.gz`` twin; two different candidates are an error that names them.
    """
    split, kind = role.split("_")
    kinds = ("images", "imgs") if kind == "images" else ("labels",)
    splits = ("train",) if split == "train" else ("t10k", "test")
    hits = sorted(
        p for p in directory.iterdir()
        if p.is_file() and any(s in p.name for s in splits) and any(k in p.name for k in kinds)
        and "ubyte" in p.name
    )
    stems = {p.name[:-3] if p.name.endswith(".gz") else p.name for p in hits}
    if len(stems) > 1:
        raise DataError(
            f"idx:{directory}: several candidates for the {split} {kind} ({', '.join(sorted(stems))}); "
            "put one dataset's four IDX files in a directory of their own"
        )
    raw = [p for p in hits if not p.name.endswith(".gz")]
    return (raw or hits or [None])[0]


def _load_folder(directory: Path, home: Path | None, log: Log) -> Dataset:
    """An image folder with one subfolder per class, converted once and cached (see cnnlab.data.folder)."""
    got = load_image_folder(directory, home or cnnlab_home(), log)
    x = torch.from_numpy(got.train_images).unsqueeze(1)  # (N, 1, 28, 28) uint8
    tx = torch.from_numpy(got.test_images).unsqueeze(1)
    y, ty = torch.from_numpy(got.train_labels), torch.from_numpy(got.test_labels)  # (N,) int64
    mean, std = train_statistics(x)
    root = Path(directory).expanduser().resolve()
    how = "converted now" if got.converted else "converted earlier"
    return Dataset(f"folder:{root}", x, y, tx, ty, got.classes, mean, std,
                   f"image folder {root} ({how}; cached in {got.cache_dir})")


def dataset_names() -> list[str]:
    return sorted(CATALOG)


def get_spec(name: str) -> DatasetSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}, idx:DIR or folder:DIR"
        ) from None


def load_dataset(
    name: str = "mnist",
    data_dir: str | Path | None = None,
    home: str | Path | None = None,
    download: bool = True,
    log: Log = _stderr,
) -> Dataset:
    """Load a dataset by name (``mnist``, ``fashion-mnist``, ``idx:DIR``, ``folder:DIR``) as uint8 tensors.

    Catalog datasets are verified against their checksums; ``home`` is cnnlab's cache root
    (default ``$CNNLAB_HOME``), where downloads and converted image folders are kept.
    """
    if name.startswith("idx:"):
        return _load_idx_dir(Path(name[4:]))
    if name.startswith("folder:"):
        return _load_folder(Path(name[len("folder:"):]), Path(home) if home else None, log)
    spec = get_spec(name)
    found = locate(spec, Path(data_dir) if data_dir else None, Path(home) if home else None, download, log)
    x, y, tx, ty = _tensors(found.files, found.source)
    for split, labels in (("train", y), ("test", ty)):
        want = spec.sizes.get(split)
        if want is not None and len(labels) != want:
            raise DataError(f"{found.source}: {spec.name} {split} split has {len(labels)} items, expected {want}")
    return Dataset(spec.name, x, y, tx, ty, spec.classes, spec.mean, spec.std, found.source)


__all__ = [
    "BatchLoader",
    "Dataset",
    "DatasetSpec",
    "cache_dir",
    "cnnlab_home",
    "dataset_names",
    "epoch_permutation",
    "get_spec",
    "load_dataset",
    "train_statistics",
]
