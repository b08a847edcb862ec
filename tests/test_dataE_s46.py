"""Fixes of helper dataE (s46), defects D1-D9 of the "fixdata" probe: ``idx:DIR``'s naming families by their family
key, a ``folder:`` dataset seen through links (a folder read into two classes, the write refusals, the cache key),
``evaluate``'s and ``analyze``'s ``--out`` against the run's training data, and ``export-weights``' default name of a
checkpoint named ``model``. docs/reliability.md lists them."""

from __future__ import annotations

from pathlib import Path

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


def _quiet(message: str) -> None:
    pass


def _pngs(folder, n: int = 6, value: int = 0, suffix: str = ".png"):
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("L", (28, 28), value + 7 * i if suffix == ".png" else value).save(folder / f"{i:03d}{suffix}")
    return folder


def test_one_folder_reached_from_two_classes_is_refused_naming_both(tmp_path):
    """(D3) One folder reached through links from two classes was read into both (``a/batch`` and ``b/batch`` links
    to ``MORE/x``; ``DATA/c`` and ``a/more`` links to it; ``DATA/c`` a link to ``DATA/a``): ``converting 28 images``
    of 20, rc 0, no word. Now one map of the folders walked spans the whole scan (``folder._first_visit``, by
    device and inode): a folder reached again from another class is refused in one line naming both paths."""
    data, more = tmp_path / "DATA", _pngs(tmp_path / "MORE" / "x", 8, 100)
    _pngs(data / "a", 6, 10), _pngs(data / "b", 6, 60)
    cases = [([("a/batch", more), ("b/batch", more)], "a/batch and b/batch", more, "a/ and into b/",
              "a/batch or b/batch"),
             ([("c", more), ("a/more", more)], "a/more and c", more, "a/ and into c/", "a/more or c"),
             ([("c", data / "a")], "a and c", data / "a", "a/ and into c/", "c")]
    for links, both, real, into, fix in cases:
        for name, target in links:
            (data / name).symlink_to(target)
        with pytest.raises(DataError) as err:
            load_dataset(f"folder:{data}", home=tmp_path / "home", log=_quiet)
        assert str(err.value) == (f"folder:{data}: folders {both} are one folder ({real}), so its images would be "
                                  f"read twice, into {into}; remove the link {fix}")
        for name, _ in links:
            (data / name).unlink()
    (data / "a" / "batch").symlink_to(more)
    (data / "a" / "again").symlink_to(more)  # a second way in within one class: read once, as before
    d = load_dataset(f"folder:{data}", home=tmp_path / "home", log=_quiet)
    assert (len(d.train_labels) + len(d.test_labels), int((d.train_labels == 0).sum() + (d.test_labels == 0).sum())) \
        == (20, 14)


def test_a_linked_split_folder_given_by_its_real_path_counts_as_the_split(tmp_path, monkeypatch):
    """(D6) ``DATA/train -> BIG/train``: ``predict --show-input`` beside ``BIG/train/a/000.png`` wrote into class
    ``a`` and ``evaluate --out BIG/train/rep`` made a class ``rep`` (``folder._parts_below`` looked for links only
    among the class folders). Now real paths are compared, the target's and those of every folder the load reads
    (``folder._real_parts``, ``_read_folders``): ``BIG/train/a`` is ``train/a``, ``BIG/train/rep`` is ``train/rep``."""
    from cnnlab.data.folder import check_not_read, class_folder_of
    from cnnlab.predict import read_by_training_data

    _pngs(tmp_path / "BIG" / "train" / "a"), _pngs(tmp_path / "BIG" / "train" / "b", value=100)
    data = tmp_path / "DATA"
    _pngs(data / "test" / "a"), _pngs(data / "test" / "b", value=100)
    (data / "train").symlink_to(tmp_path / "BIG" / "train")
    monkeypatch.chdir(tmp_path)
    for path, cls in [("BIG/train/a", "train/a"), ("BIG/train/rep", "train/rep"), ("BIG/train/a/x/y", "train/a"),
                      ("DATA/train/a", "train/a"), ("BIG/train", None), ("BIG", None), ("BIG/train/a/.h", None),
                      ("BIG/train/.h/a", None), ("DATA/val", None)]:
        assert class_folder_of("DATA", path) == cls, path
    assert read_by_training_data(f"folder:{data}", Path("BIG/train/a")) == (data, "train/a")
    with pytest.raises(DataError, match=rf"^--out BIG/train/rep is inside folder:{data}, whose loads would take "
                                        r"train/rep/ for a class folder"):
        check_not_read(f"folder:{data}", "BIG/train/rep", "--out BIG/train/rep")


def test_a_hidden_link_into_a_class_folder_counts_as_that_class(tmp_path, monkeypatch):
    """(D7) ``ln -s b DATA/.inputs``: ``--show-input DATA/.inputs`` and ``evaluate --out DATA/.inputs/rep`` wrote into
    class ``b``, the hidden name taken at its word. Now the path's real path is asked too (``folder._real_parts``),
    and the class it leads to wins: refused as ``--show-input DATA/b`` is. A hidden folder that is no link, or one
    leading outside the dataset, is still never read."""
    from cnnlab.data.folder import check_not_read, class_folder_of
    from cnnlab.predict import read_by_training_data

    data = tmp_path / "DATA"
    _pngs(data / "a"), _pngs(data / "b", value=100)
    (data / ".inputs").symlink_to("b")
    (data / ".outside").symlink_to(tmp_path)
    (data / ".plain").mkdir()
    (data / "a" / "batch2").symlink_to(_pngs(tmp_path / "MORE" / "a2"))  # a linked sub-folder, by its real path
    monkeypatch.chdir(tmp_path)
    for path, cls in [("MORE/a2/rep", "a"), ("MORE", None), ("DATA/.inputs", "b"), ("DATA/.inputs/rep", "b"), ("DATA/.inputs/.h", None),
                      ("DATA/.plain", None), ("DATA/.plain/x", None), ("DATA/.outside/x", None)]:
        assert class_folder_of("DATA", path) == cls, path
    assert read_by_training_data(f"folder:{data}", Path("DATA/.inputs")) == (data, "b")
    with pytest.raises(DataError, match=rf"^--out DATA/.inputs/rep is inside folder:{data}, whose loads would take "
                                        r"b/ for a class folder"):
        check_not_read(f"folder:{data}", "DATA/.inputs/rep", "--out DATA/.inputs/rep")


def test_class_folders_that_swap_contents_are_converted_again(tmp_path):
    """(D9) Two class folders whose contents swapped, with equal names, sizes and times (BMPs unpacked from one
    archive): links retargeted (``ln -sfn Y DATA/a; ln -sfn X DATA/b``) or real folders renamed crosswise, and the
    next load said ``converted earlier`` with the old labels (class a's mean pixel 0 where it now leads to white
    images). Now ``folder.cache_key`` holds where each class folder leads (its real path) and each file's inode."""
    import os

    x, y = _pngs(tmp_path / "X", value=0, suffix=".bmp"), _pngs(tmp_path / "Y", value=255, suffix=".bmp")
    for path in [*x.iterdir(), *y.iterdir()]:
        os.utime(path, ns=(1_700_000_000_000_000_000,) * 2)
    data, home = tmp_path / "DATA", tmp_path / "home"
    data.mkdir()

    def class_a_mean() -> float:
        d = load_dataset(f"folder:{data}", home=home, log=_quiet)
        return float(d.train_images[d.train_labels == 0].float().mean())

    (data / "a").symlink_to(x), (data / "b").symlink_to(y)
    assert class_a_mean() == 0.0
    (data / "a").unlink(), (data / "b").unlink()
    (data / "a").symlink_to(y), (data / "b").symlink_to(x)
    assert class_a_mean() == 255.0
    (data / "a").unlink(), (data / "b").unlink()
    x.rename(data / "a"), y.rename(data / "b")
    assert class_a_mean() == 0.0
    (data / "a").rename(data / "t"), (data / "b").rename(data / "a"), (data / "t").rename(data / "b")
    assert class_a_mean() == 255.0


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """An Inception run of two steps on ``folder:DATA`` (cats, dogs), with ``OTHER`` (another folder dataset of those
    classes) beside it: ``(base, DATA, OTHER, RUN)``."""
    from cnnlab.cli import main
    from test_fixN_s44 import image_folder

    base = tmp_path_factory.mktemp("dataE_folder_run")
    data, other = image_folder(base / "DATA"), image_folder(base / "OTHER")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("CNNLAB_HOME", str(base / "home"))
        assert main(["train", "--model", "inception", "--dataset", f"folder:{data}", "--max-steps", "2", "--epochs",
                     "1", "--threads", "1", "--quiet", "--out", str(base / "RUN")]) == 0
    return base, data, other, base / "RUN"


ANALYZE = ["--train-images", "10", "--test-images", "4", "--device", "cpu"]


def test_analyze_out_inside_the_runs_own_folder_dataset_is_refused_without_dataset(folder_run, monkeypatch, capsys):
    """(D4) ``analyze branches RUN --out DATA/a/rep`` (no ``--dataset``) wrote branches.json and branches.png into
    class ``a`` of the run's own ``folder:DATA`` (``cli.analyze`` checked ``args.dataset`` only, None here), where
    ``evaluate`` refused it. Now the analysis's ``ready`` asks ``evaluation.check_not_read_by_net`` of the datasets
    the opened net is measured on and trained on."""
    from test_fixN_s44 import inside, run

    base, data, _, run_dir = folder_run
    monkeypatch.chdir(base)
    code, out, err = run(["analyze", "branches", str(run_dir), "--out", "DATA/cats/rep", *ANALYZE], capsys)
    assert (code, err.splitlines(True)[-1]) == (2, inside(data, "--out DATA/cats/rep", "cats")), err
    assert not (data / "cats" / "rep").exists()


def test_a_report_on_other_data_never_goes_into_the_nets_training_folder(folder_run, monkeypatch, capsys):
    """(D5) ``evaluate RUN --dataset folder:OTHER --out DATA/a/rep`` wrote its report into class ``a`` of the net's
    own training data (``evaluation.check_report_folder`` checked only the dataset evaluated on), and the next
    ``evaluate RUN`` said the data was not the run's; ``analyze branches`` the same. Now both datasets are checked
    (``evaluation.check_not_read_by_net``: ``Subject.trained_on``, the run's recorded dataset), in one line."""
    from test_fixN_s44 import inside, run

    base, data, other, run_dir = folder_run
    monkeypatch.chdir(base)
    for argv in (["evaluate", str(run_dir)], ["analyze", "branches", str(run_dir), *ANALYZE]):
        code, out, err = run([*argv, "--dataset", f"folder:{other}", "--out", "DATA/cats/rep"], capsys)
        assert (code, err.splitlines(True)[-1]) == (2, inside(data, "--out DATA/cats/rep", "cats")), (argv, err)
        assert not (data / "cats" / "rep").exists()
    code, out, err = run(["evaluate", str(run_dir), "--dataset", f"folder:{other}", "--out", "elsewhere"], capsys)
    assert code == 0 and (base / "elsewhere" / "summary.json").is_file(), err


def test_a_checkpoint_named_model_never_exports_over_the_runs_model_safetensors(finished, tmp_path):
    """(D8) ``cp OTHER/last.pt RUN/model`` (no suffix), ``export-weights RUN/model``: ``wrote RUN/model.safetensors``
    over the run's own export of its last.pt (stem and name both ``model``, so the ndX rule for ``model.pt`` missed
    it). Now ``export.default_weights_output`` keeps ``model.safetensors`` for last.pt alone: a ``model`` with no
    suffix gives ``model.checkpoint.safetensors``."""
    import shutil

    from cnnlab.export import default_weights_output, export_safetensors

    run = finished
    assert export_safetensors(run) == run / "model.safetensors"
    before = (run / "model.safetensors").read_bytes()
    shutil.copyfile(run / "last.pt", run / "model")
    assert export_safetensors(run / "model") == run / "model.checkpoint.safetensors"
    assert (run / "model.safetensors").read_bytes() == before
    nets = tmp_path / "nets"
    assert [default_weights_output(nets / n).name for n in ("last.pt", "model", "MODEL", "model.pt", "b", "b.pt")] == [
        "model.safetensors", "model.checkpoint.safetensors", "MODEL.checkpoint.safetensors", "model.pt.safetensors",
        "b.safetensors", "b.safetensors"]
