"""``idx:DIR``: any directory holding the four IDX files of an MNIST-shaped dataset (KMNIST, EMNIST...)."""

from __future__ import annotations

from pathlib import Path

from cnnlab.data.catalog import ROLES
from cnnlab.data.dataset import Dataset, check_labels, check_splits, train_statistics
from cnnlab.data.files import IdxFiles, idx_files
from cnnlab.data.idx import read_idx
from cnnlab.data.tensors import arrays_to_tensors
from cnnlab.data.safefs import entry_kind
from cnnlab.errors import DataError
from cnnlab.fileio import expand_user

#: What a dataset's ``source`` (recorded in every run's data) adds when its files were named ``emnist-*`` and their
#: images transposed upright on loading: the net learned upright images, not the files' arrays as they are.
TRANSPOSED = " (EMNIST: images transposed upright)"


def transposed_on_loading(source: str) -> bool:
    """Whether a dataset of this recorded ``source`` had its images transposed on loading (EMNIST's files)."""
    return TRANSPOSED in source


def _one_dataset(directory: Path, where: str) -> IdxFiles:
    """The four files of ``idx:DIR``, all from one folder (:func:`cnnlab.data.files.idx_files`); a folder that lacks
    some of them, or several folders that each hold all four (two datasets: torchvision's ``MNIST/raw`` and
    ``FashionMNIST/raw``), is refused in one line naming the folders."""
    files = idx_files(directory, loose=True)
    shown = [str(f.relative_to(directory)) for f in files.others]
    elsewhere = f"; {', '.join(shown)} holds all four: pass idx:{files.others[0]} to read that dataset" if shown else ""
    missing = files.missing[:1] if files.folder is None else files.missing  # none found: the first, as before
    named = f"{missing[0]} file" if len(missing) == 1 else f"{', '.join(missing)} files"
    if files.folder is None or (missing and files.folder == directory):
        raise DataError(f"{where}: no {named} (raw or .gz) found; the directory needs "
                        f"train/t10k images and labels in IDX format{elsewhere}")
    if missing:
        raise DataError(f"{where}: no {named} (raw or .gz) in {files.folder}, which holds "
                        f"the other IDX files, so the four would not be one dataset"
                        f"{elsewhere or '; add the missing file there, or pass the folder that holds all four'}")
    if files.others:
        here = "." if files.folder == directory else str(files.folder.relative_to(directory))
        fix = (f"pass one of them: {' or '.join(f'idx:{f}' for f in [files.folder, *files.others])}"
               if files.folder != directory else
               f"pass idx:{files.others[0]}, or move {', '.join(shown)} out of {directory} to read the files in it")
        raise DataError(f"{where} holds {len(shown) + 1} sets of the four IDX files ({', '.join([here, *shown])}): "
                        f"datasets, or copies of one, and cnnlab does not guess which to read; {fix}")
    return files


def load_idx_dir(directory: Path) -> Dataset:
    """Any directory holding the four IDX files of an MNIST-shaped dataset (no checksums to verify).

    Official names (raw or ``.gz``, as KMNIST also uses) or names that contain them, like EMNIST's
    ``emnist-digits-train-images-idx3-ubyte.gz``: one dataset per directory. Classes are
    ``0..max label``, and each must have train images (class 0 may be unused, as in EMNIST Letters,
    labelled 1..26). EMNIST stores its images transposed (rows are the digit's columns); files
    named ``emnist-*`` are transposed back on loading, so that plots, mistakes and predictions on real,
    upright images see them the right way up.
    """
    directory = expand_user(directory)
    where = f"idx:{directory}"
    try:
        kind = entry_kind(directory)
    except DataError as err:
        raise DataError(f"idx:{err}") from None
    if kind != "a directory":
        what = "no such directory" if kind is None else f"is {'a file' if kind == 'file' else kind}, not a directory"
        raise DataError(f"{where}: {what}; pass idx:DIR with the four IDX files")
    files = _one_dataset(directory, where)
    arrays, names = {}, []
    for role, path in files.paths.items():
        arrays[role] = read_idx(path, ROLES[role][1], own=True)[0]
        names.append(path.name.lower())
    x, y, tx, ty = arrays_to_tensors(arrays, where)
    source = f"directory {files.folder}"
    if all(n.startswith("emnist") for n in names):
        x, tx = x.transpose(2, 3).contiguous(), tx.transpose(2, 3).contiguous()
        source += TRANSPOSED
    check_splits(where, (x, y), (tx, ty))  # before labels' max(): a split may be empty
    classes = tuple(str(c) for c in range(int(max(y.max(), ty.max())) + 1))
    check_labels(where, y, ty, classes)
    mean, std = train_statistics(x)
    return Dataset(where, x, y, tx, ty, classes, mean, std, source)
