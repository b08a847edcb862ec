"""``idx:DIR``: any directory holding the four IDX files of an MNIST-shaped dataset (KMNIST, EMNIST...)."""

from __future__ import annotations

from pathlib import Path

from cnnlab.data.catalog import ROLES
from cnnlab.data.dataset import Dataset, train_statistics
from cnnlab.data.files import find_idx_file
from cnnlab.data.idx import decode_splits, read_maybe_gzip
from cnnlab.errors import DataError


def load_idx_dir(directory: Path) -> Dataset:
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
        path = find_idx_file(directory, role)
        if path is None:
            raise DataError(
                f"idx:{directory}: no {ROLES[role][0]} file (raw or .gz) found; "
                "the directory needs train/t10k images and labels in IDX format"
            )
        files[role] = read_maybe_gzip(path)
        names.append(path.name.lower())
    x, y, tx, ty = decode_splits(files, f"idx:{directory}")
    source = f"directory {directory}"
    if all(n.startswith("emnist") for n in names):
        x, tx = x.transpose(2, 3).contiguous(), tx.transpose(2, 3).contiguous()
        source += " (EMNIST: images transposed upright)"
    num_classes = int(max(y.max(), ty.max())) + 1
    mean, std = train_statistics(x)
    return Dataset(f"idx:{directory}", x, y, tx, ty, tuple(str(c) for c in range(num_classes)), mean, std, source)
