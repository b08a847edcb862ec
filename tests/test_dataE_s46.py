"""Fixes of helper dataE (s46), defects D1-D9 of the "fixdata" probe: ``idx:DIR``'s naming families by their family
key, a ``folder:`` dataset seen through links (a folder read into two classes, the write refusals, the cache key),
``evaluate``'s and ``analyze``'s ``--out`` against the run's training data, and ``export-weights``' default name of a
checkpoint named ``model``. docs/reliability.md lists them."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data import load_dataset
from cnnlab.errors import DataError
from conftest import write_idx_dataset


def _rename(directory, old: str, new: str) -> None:
    for path in list(directory.iterdir()):
        if old in path.name:
            path.rename(directory / path.name.replace(old, new))


def test_idx_dir_official_train_names_beside_test_ones_are_one_family(tmp_path):
    """(D1) ``train-*`` files beside ``test-*`` ones (not ``t10k-*``) were refused as two naming families, official
    and others; they are one dataset. Now ``files._one_family`` compares each name's ``files.family_key`` (the name
    without its split, role and IDX-dimension words): equal, so the four are read."""
    d = write_idx_dataset(tmp_path / "d", seed=0, gz=True)
    alone = load_dataset(f"idx:{write_idx_dataset(tmp_path / 'alone', seed=0)}")
    _rename(d, "t10k-", "test-")
    got = load_dataset(f"idx:{d}")
    assert torch.equal(got.test_labels, alone.test_labels) and torch.equal(got.train_images, alone.train_images)


def test_idx_dir_two_loose_families_are_refused_naming_both(tmp_path):
    """(D2) ``emnist-digits-train-*`` beside ``emnist-mnist-test-*`` loaded as one dataset (``find_loose`` took
    each role's file on its own). Now their family keys differ and the load is refused in one line naming both."""
    d = write_idx_dataset(tmp_path / "d", seed=0, gz=True)
    _rename(d, "train-", "emnist-digits-train-")
    _rename(d, "t10k-", "emnist-mnist-test-")
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{d}")
    assert str(err.value) == (
        f"idx:{d}: holds IDX files of two naming families, emnist-digits-*-*-idx*-ubyte "
        "(emnist-digits-train-images-idx3-ubyte.gz, emnist-digits-train-labels-idx1-ubyte.gz) and "
        "emnist-mnist-*-*-idx*-ubyte (emnist-mnist-test-images-idx3-ubyte.gz, emnist-mnist-test-labels-idx1-ubyte.gz), "
        "so the four would not be one dataset; put one dataset's four IDX files in a directory of their own")
    _rename(d, "emnist-mnist-", "emnist-digits-")  # one family again: read, turned upright as EMNIST's are
    assert load_dataset(f"idx:{d}").source.endswith("(EMNIST: images transposed upright)")
