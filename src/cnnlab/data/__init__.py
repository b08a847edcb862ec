"""Data: verified MNIST-like datasets as uint8 tensors, and batches without a DataLoader.

This package knows nothing of models. ``load_dataset`` returns whole splits as tensors;
``BatchLoader`` slices them into normalised batches on any device. Names: a catalog entry
(``mnist``, ``fashion-mnist``), ``idx:DIR`` (four IDX files) or ``folder:DIR`` (one subfolder
per class, see :mod:`cnnlab.data.folder`). Normalisation statistics always describe the train
split: the catalog's hard-coded values (computed from it; MNIST keeps the lecture's), or
:func:`train_statistics` of the train split for ``idx:`` and ``folder:``.

Where things live: :mod:`~cnnlab.data.load` (``load_dataset``), :mod:`~cnnlab.data.dataset` (``Dataset``,
``train_statistics``, ``validate_dataset``: what the nets need of any dataset), :mod:`~cnnlab.data.names`
(what a name means), :mod:`~cnnlab.data.catalog` (known datasets), :mod:`~cnnlab.data.sources` (verified
downloads and the cache), :mod:`~cnnlab.data.fastcopy` (the cache's fast copy), :mod:`~cnnlab.data.cachefiles`
(writing a group of cache files), :mod:`~cnnlab.data.files` (finding IDX files), :mod:`~cnnlab.data.idx`
(the IDX format, read as a bounded stream), :mod:`~cnnlab.data.safefs` (OS errors as one-line errors, regular
files only), :mod:`~cnnlab.data.idxdir` (``idx:DIR``), :mod:`~cnnlab.data.folder` (``folder:DIR``),
:mod:`~cnnlab.data.loader` (batches), :mod:`~cnnlab.data.tensors` (IDX arrays as tensors).
"""

from importlib import import_module

#: Where each public name lives. Imported on first use, so that a submodule that needs no torch (what
#: ``cnnlab data info`` reads: the catalog, the cache, the IDX files) can be imported without torch.
_EXPORTS = {
    "DatasetSpec": "catalog",
    "MIN_IMAGE_SIZE": "dataset", "Dataset": "dataset", "train_statistics": "dataset", "validate_dataset": "dataset",
    "split_validation": "dataset",
    "load_dataset": "load", "check_data_dir": "load",
    "BatchLoader": "loader", "epoch_permutation": "loader",
    "canonical_dataset_name": "names", "dataset_kind": "names", "dataset_names": "names", "get_spec": "names",
    "cache_dir": "sources", "cnnlab_home": "sources",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f"cnnlab.data.{_EXPORTS[name]}"), name)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module 'cnnlab.data' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "MIN_IMAGE_SIZE",
    "BatchLoader",
    "Dataset",
    "DatasetSpec",
    "cache_dir",
    "canonical_dataset_name",
    "cnnlab_home",
    "dataset_kind",
    "dataset_names",
    "epoch_permutation",
    "get_spec",
    "load_dataset",
    "split_validation",
    "train_statistics",
    "validate_dataset",
]
