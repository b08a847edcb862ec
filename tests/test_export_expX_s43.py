"""The export defects a tester (expX) found: an EMNIST-named idx: run's input layout, the provenance of the shipped
weights' exports, a run still training exported into a folder inside it, and the check's absolute tolerance (and a
diverged run's last.pt exported)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from conftest import write_idx_dataset

from cnnlab.data import load_dataset
from cnnlab.data.idx import read_idx
from cnnlab.export import export_metadata

ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 28}


# ----------------------------------------------------------------------------- 1. EMNIST's transposed files


def emnist_named(directory: Path) -> Path:
    """The tiny dataset's four files under EMNIST's names (``emnist-digits-*``, gzip), as EMNIST ships them."""
    tmp = write_idx_dataset(directory / ".gen", n_train=50, n_test=20, seed=1)
    for official in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                     "t10k-labels-idx1-ubyte"):
        target = directory / f"emnist-digits-{official.replace('t10k-', 'test-')}.gz"
        target.write_bytes(gzip.compress((tmp / official).read_bytes()))
        (tmp / official).unlink()
    tmp.rmdir()
    return directory


def test_an_emnist_named_idx_nets_input_layout_says_to_transpose_the_files_images(tmp_path):
    """expX 1: an idx: run on files named emnist-* trained on their images transposed upright (the training line said
    so), and its exports' input_layout said "as the idx files hold them": a consumer that followed it read 55.82%,
    transposed 96.48%. Now the layout says to transpose them, and doing what it says gives the images cnnlab trained
    and evaluated on (the graph holds no transpose: the Predictor, too, takes upright images)."""
    directory = emnist_named(tmp_path / "em")
    data = load_dataset(f"idx:{directory}")
    state = {"model": {"name": "basic_cnn", "args": ARGS}, "data": data.info()}
    layout = export_metadata(state)["input_layout"]
    assert "as the idx files hold them" not in layout
    assert "transposed (its rows are the image's columns)" in layout and "images.swapaxes(-1, -2)" in layout
    assert "upright" in layout and "Predictor" in layout
    # what it says to do, done to the file's own arrays, is what cnnlab trained and evaluated on
    stored = read_idx(directory / "emnist-digits-test-images-idx3-ubyte.gz", 3)[0]
    assert np.array_equal(stored.swapaxes(-1, -2), data.test_images[:, 0].numpy())
    assert not np.array_equal(stored, data.test_images[:, 0].numpy())
    # the same files under the official names are used as they are, and said so
    official = write_idx_dataset(tmp_path / "official", n_train=50, n_test=20, seed=1)
    plain = export_metadata({"model": state["model"], "data": load_dataset(f"idx:{official}").info()})
    assert "as the idx files hold them" in plain["input_layout"] and "transpose" not in plain["input_layout"]
