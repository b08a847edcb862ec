"""Fixes of helper ndX (s45), defects D1-D3 of the "newdata" probe: ``idx:DIR``'s naming families, a linked class
folder of a ``folder:`` dataset written into, and ``export-weights``' default name of a ``model.pt``.
docs/reliability.md lists them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.data import load_dataset
from cnnlab.errors import DataError
from conftest import write_idx_dataset


def test_idx_dir_takes_its_four_files_from_one_naming_family(tmp_path):
    """(D1) Three official MNIST files and another set's ``emnist-*`` test labels in one folder: ``idx:DIR`` filled
    the missing official file from the ``emnist-*`` one, one role at a time, and loaded without a word. Now the four
    files come from one naming family (``files._one_family``): a folder holding both where the official four are not
    all there is refused in one line naming both; the official four, all there, are taken as before."""
    d = write_idx_dataset(tmp_path / "d", seed=0, gz=True)
    other = write_idx_dataset(tmp_path / "other", seed=1, gz=True)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    (other / "t10k-labels-idx1-ubyte.gz").rename(d / "emnist-mnist-test-labels-idx1-ubyte.gz")
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{d}")
    assert str(err.value) == (
        f"idx:{d}: holds IDX files of two naming families, official (t10k-images-idx3-ubyte.gz, "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz) and emnist-mnist-*-*-idx*-ubyte "
        "(emnist-mnist-test-labels-idx1-ubyte.gz), "
        "so the four would not be one dataset; put one dataset's four IDX files in a directory of their own")
    write_idx_dataset(tmp_path / "again", seed=0, gz=True)
    (tmp_path / "again" / "t10k-labels-idx1-ubyte.gz").rename(d / "t10k-labels-idx1-ubyte.gz")
    alone = load_dataset(f"idx:{write_idx_dataset(tmp_path / 'alone', seed=0)}")
    # the official four all there: taken, as before, whatever else lies beside them (nothing of another family)
    assert torch.equal(load_dataset(f"idx:{d}").test_labels, alone.test_labels)
    (d / "emnist-mnist-test-labels-idx1-ubyte.gz").unlink()
    (d / "t10k-labels-idx1-ubyte.gz.md5").write_text("0" * 32)  # an official file's companion is no family
    assert torch.equal(load_dataset(f"idx:{d}").test_labels, alone.test_labels)
    for name in [p.name for p in d.iterdir() if p.name.endswith("ubyte.gz")]:  # all four loose: read as before
        (d / name).rename(d / f"emnist-mnist-{name.replace('t10k-', 'test-')}")
    assert load_dataset(f"idx:{d}").source.endswith("(EMNIST: images transposed upright)")


def test_a_folder_the_load_reads_through_a_link_counts_as_its_class_folder(tmp_path, monkeypatch):
    """(D2) ``DATA/c`` a link to ``ELSE/c`` (a linked class folder, which the load reads): ``predict --show-input``
    beside ``DATA/c/000.png``, ``--show-input DATA/c`` and ``evaluate --out DATA/c/rep`` wrote into it, since
    ``folder.class_folder_of`` resolved the path (``ELSE/c``) and found it outside ``DATA``; a linked sub-folder of a
    class likewise. Now the path is taken below its longest prefix that is the dataset folder, as the load reaches it
    (``folder._parts_below``), else its real path, also below a linked class folder's target (``ELSE/c/rep``)."""
    from cnnlab.data.folder import check_not_read, class_folder_of
    from cnnlab.predict import read_by_training_data
    from test_fixN_s44 import image_folder

    data = image_folder(tmp_path / "DATA")
    image_folder(tmp_path / "ELSE", classes=("birds",))
    image_folder(tmp_path / "MORE", classes=("batch",))
    (data / "birds").symlink_to(tmp_path / "ELSE" / "birds")
    (data / "cats" / "batch2").symlink_to(tmp_path / "MORE" / "batch")
    (tmp_path / "alias").symlink_to(data)
    monkeypatch.chdir(tmp_path)
    for path, cls in [("DATA/birds", "birds"), ("DATA/birds/rep", "birds"), (tmp_path / "DATA/birds/x/y", "birds"),
                      ("ELSE/birds/rep", "birds"), ("DATA/cats/batch2", "cats"), ("alias/birds", "birds"),
                      ("DATA/dogs", "dogs"), ("DATA/birds/../dogs", None), ("DATA/cats/../dogs", "dogs"),
                      ("DATA/birds/.hidden", None), ("ELSE", None), ("DATA", None)]:
        assert class_folder_of("DATA", path) == cls, path
    assert read_by_training_data(f"folder:{data}", Path("DATA/birds")) == (data, "birds")
    with pytest.raises(DataError, match=rf"^--out DATA/birds/rep is inside folder:{data}, whose loads would take "
                                        r"birds/ for a class folder"):
        check_not_read(f"folder:{data}", "DATA/birds/rep", "--out DATA/birds/rep")


def test_a_checkpoint_named_model_pt_never_exports_over_the_runs_model_safetensors(finished, tmp_path):
    """(D3) ``export-weights RUN/model.pt`` (another net's checkpoint copied into the run) wrote
    ``RUN/model.safetensors``, replacing the run's export of its last.pt without a word; in a plain folder
    ``nets/last.pt`` and ``nets/model.pt`` wrote one file, the later winning. Now ``export.default_weights_output``
    gives a ``model.pt`` (any case) ``model.pt.safetensors``: ``model.safetensors`` stays last.pt's."""
    import shutil

    from safetensors import safe_open

    from cnnlab.export import default_weights_output, export_safetensors

    run = finished
    assert export_safetensors(run) == run / "model.safetensors"
    before = (run / "model.safetensors").read_bytes()
    shutil.copyfile(run / "last.pt", run / "model.pt")
    assert export_safetensors(run / "model.pt") == run / "model.pt.safetensors"
    assert (run / "model.safetensors").read_bytes() == before
    with safe_open(str(run / "model.pt.safetensors"), framework="pt") as fh:
        assert fh.metadata()["checkpoint"] == "model.pt"
    nets = tmp_path / "nets"
    assert [default_weights_output(nets / n).name for n in ("last.pt", "model.pt", "Model.pt", "b.pt")] == [
        "model.safetensors", "model.pt.safetensors", "Model.pt.safetensors", "b.safetensors"]
