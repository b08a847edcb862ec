"""Fixes of helper dataF (s47), defects of the "fixdata" probe. docs/reliability.md lists them."""

from __future__ import annotations

import torch

from cnnlab.data import load_dataset
from conftest import write_idx_dataset


def test_idx_dir_names_with_underscores_are_one_family(tmp_path):
    """(D1) ``train_images_idx3_ubyte.gz`` and its three fellows (words joined by ``_``) were refused as two naming
    families, ``*_*_idx3_ubyte`` and ``*_*_idx1_ubyte`` (``files.family_key`` blanked the IDX dimension only after
    ``.`` or ``-``), with a fix that did nothing. Now the dimension is blanked after any separator: one family, read
    as the official names are; the dotted official names stay in the official family."""
    from cnnlab.data.files import family_key

    alone = load_dataset(f"idx:{write_idx_dataset(tmp_path / 'alone', seed=0)}")
    d = write_idx_dataset(tmp_path / "u", seed=0, gz=True)
    for path in list(d.iterdir()):
        path.rename(d / path.name.replace("t10k", "test").replace("-", "_"))
    got = load_dataset(f"idx:{d}")
    assert torch.equal(got.train_images, alone.train_images) and torch.equal(got.test_labels, alone.test_labels)
    assert family_key("train_images_idx3_ubyte.gz", "train_images") == "*_*_idx*_ubyte"
    assert family_key("test_labels_idx1_ubyte", "test_labels") == "*_*_idx*_ubyte"
    assert family_key("t10k-labels.idx1-ubyte", "test_labels") == family_key("train-images-idx3-ubyte",
                                                                            "train_images") == "*-*-idx*-ubyte"
