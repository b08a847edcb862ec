"""The user's own data (``folder:``/``idx:``): split-folder layouts, a changed dataset under ``evaluate`` and
``train --config``, a damaged conversion cache, IDX files that are not unsigned bytes, a CNNLAB_HOME that is a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import load_dataset
from cnnlab.errors import DataError


def write_pngs(root: Path, splits=("",), classes=("0", "1", "2"), n: int = 4, seed: int = 0) -> Path:
    """``root/[split/]class/i.png``: small random 28x28 grayscale PNGs of four grey levels (they deflate)."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for c in classes:
            d = root / split / c if split else root / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray((rng.integers(0, 4, (28, 28)) * 60).astype(np.uint8)).save(d / f"{i}.png")
    return root


def test_training_testing_folders_are_the_train_and_test_splits(tmp_path):
    root = write_pngs(tmp_path / "mnist_png", splits=("training", "testing"), n=4)
    d = load_dataset(f"folder:{root}", log=lambda m: None)
    assert d.classes == ("0", "1", "2")
    assert (len(d.train_labels), len(d.test_labels)) == (12, 12)


@pytest.mark.parametrize("splits, fix", [
    (("train", "val"), "rename val/ to test/"),
    (("train", "valid"), "rename valid/ to test/"),
    (("train", "validation"), "rename validation/ to test/"),
    (("train",), "pass folder:DIR/train for an automatic split"),
    (("test",), "add a train/ folder"),
    (("training",), "pass folder:DIR/training"),
])
def test_split_like_top_folders_are_refused_naming_the_layout(tmp_path, splits, fix):
    root = write_pngs(tmp_path / "pics", splits=splits)
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}", log=lambda m: None)
    message = str(err.value)
    assert "\n" not in message and "are splits, not classes" in message
    assert "DIR/train/CLASS/<image> + DIR/test/CLASS/<image>" in message and fix in message


def test_top_folders_holding_class_folders_are_refused(tmp_path):
    root = write_pngs(tmp_path / "pics", splits=("mnist_train", "mnist_test"))
    with pytest.raises(DataError, match=r"mnist_test/, mnist_train/ are splits, not classes.*rename the folders to "
                                        r"train/ and test/"):
        load_dataset(f"folder:{root}", log=lambda m: None)


def test_a_folder_one_level_above_the_dataset_is_named(tmp_path):
    write_pngs(tmp_path / "outer" / "mnist_png", splits=("training", "testing"))
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{tmp_path / 'outer'}", log=lambda m: None)
    assert f"pass folder:{tmp_path / 'outer'}/mnist_png" in str(err.value)
    assert "add a folder of images for each other class" not in str(err.value)


def test_class_folders_with_images_in_subfolders_still_load(tmp_path):
    root = tmp_path / "pics"
    write_pngs(root / "cat", splits=("2019",), classes=("a",))
    write_pngs(root / "dog", splits=("2020",), classes=("b",))
    d = load_dataset(f"folder:{root}", log=lambda m: None)
    assert d.classes == ("cat", "dog")
    # class folders that each hold the same subfolders (a year each) are classes, not splits
    other = tmp_path / "years"
    for animal in ("cat", "dog"):
        write_pngs(other / animal, splits=("2019", "2020"), classes=("a",))
    assert load_dataset(f"folder:{other}", log=lambda m: None).classes == ("cat", "dog")


def _flip_to_zlib_error(npz: Path) -> None:
    """Flip one bit inside ``npz``'s deflated train images where reading it raises zlib.error."""
    import zipfile
    import zlib

    with zipfile.ZipFile(npz) as zf:
        info = zf.getinfo("train_images.npy")
    start = info.header_offset + 30 + len(info.filename.encode()) + 64  # past the local header and its extra
    original = npz.read_bytes()
    for i in range(start, start + info.compress_size - 64):
        damaged = bytearray(original)
        damaged[i] ^= 0x10
        npz.write_bytes(bytes(damaged))
        try:
            with np.load(npz, allow_pickle=False) as z:
                z["train_images"]
        except zlib.error:
            return
        except Exception:
            pass
    pytest.fail("no single-bit flip gave a zlib.error")


def test_a_flipped_byte_in_the_folder_cache_is_damaged_and_converted_again(tmp_path):
    from cnnlab.data.status import dataset_status

    root = write_pngs(tmp_path / "pics", n=6)
    first = load_dataset(f"folder:{root}", log=lambda m: None)
    npz = next((tmp_path / "home" / "datasets").glob("folder-*/images.npz"))
    _flip_to_zlib_error(npz)
    row = next(r for r in dataset_status(full_check=True) if r["name"].startswith("folder:"))
    assert row["status"].startswith("cache damaged"), row
    messages = []
    again = load_dataset(f"folder:{root}", log=messages.append)
    assert any("is damaged" in m and "converting again" in m for m in messages), messages
    assert again.train_images.equal(first.train_images) and again.test_labels.equal(first.test_labels)


def _train(capsys, dataset: str | None, out: Path, *more: str) -> str:
    from cnnlab.cli import main

    given = ["--model", "basic_cnn", "--dataset", dataset, "--epochs", "1", "--max-steps", "2",
             "--batch-size", "8"] if dataset else []
    code = main(["train", *given, "--device", "cpu", "--out", str(out), "--quiet", *more])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out + captured.err


def test_evaluate_on_a_changed_folder_writes_nothing_into_the_run(tmp_path, capsys):
    from cnnlab.cli import main

    root = write_pngs(tmp_path / "pics", n=7)
    run = tmp_path / "run"
    _train(capsys, f"folder:{root}", run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    write_pngs(tmp_path / "more", n=3, seed=5)
    for png in (tmp_path / "more" / "1").iterdir():
        png.rename(root / "1" / f"new-{png.name}")
    code = main(["evaluate", str(run), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0 and "accuracy" in out
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before
    said = out + err
    assert f"folder:{root.resolve()} is not the data the run trained on (" in said and "the number of train images" in said
    assert "the test images may include the run's training images" in said


def test_evaluate_on_rewritten_idx_files_writes_nothing_into_the_run(tmp_path, capsys):
    from cnnlab.cli import main
    from conftest import write_idx_dataset

    data = write_idx_dataset(tmp_path / "tiny", n_train=64, n_test=16)
    run = tmp_path / "run"
    _train(capsys, f"idx:{data}", run)
    summary = (run / "summary.json").read_bytes()
    write_idx_dataset(data, n_train=64, n_test=16, seed=3)
    code = main(["evaluate", str(run), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0 and (run / "summary.json").read_bytes() == summary
    assert "is not the data the run trained on (" in out + err
    assert "may include the run's training images" not in out + err


def test_train_config_of_a_run_on_changed_data_warns_once(tmp_path, capsys):
    root = write_pngs(tmp_path / "pics", n=7)
    run = tmp_path / "run"
    _train(capsys, f"folder:{root}", run)
    said = _train(capsys, None, tmp_path / "same", "--config", str(run))
    assert "is not the data that run trained on" not in said
    write_pngs(tmp_path / "more", n=3, seed=5)
    for png in (tmp_path / "more" / "1").iterdir():
        png.rename(root / "1" / f"new-{png.name}")
    said = _train(capsys, None, tmp_path / "again", "--config", str(run))
    warnings = [line for line in said.splitlines() if "is not the data that run trained on" in line]
    assert len(warnings) == 1 and "the number of train images" in warnings[0] and "18 train / 3 test images then, 21 / 3 now" in warnings[0]


def _idx_with(tmp_path: Path, name: str, data: bytes) -> Path:
    from conftest import write_idx_dataset

    directory = write_idx_dataset(tmp_path / "own", n_train=32, n_test=8)
    (directory / name).write_bytes(data)
    return directory


def _labels(code: int, values: np.ndarray) -> bytes:
    import struct

    return struct.pack(">HBB", 0, code, 1) + struct.pack(">I", len(values)) + values.tobytes()


@pytest.mark.parametrize("code, dtype, fix", [
    (0x0B, ">i2", "16-bit integers (int16)"),
    (0x0C, ">i4", "32-bit integers (int32)"),
    (0x09, "i1", "signed bytes (int8)"),
])
def test_own_idx_labels_of_another_type_say_to_write_uint8(tmp_path, code, dtype, fix):
    data = _idx_with(tmp_path, "train-labels-idx1-ubyte", _labels(code, np.arange(32).astype(dtype) % 10))
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{data}")
    message = str(err.value)
    assert fix in message and "labels must be unsigned bytes (IDX type 0x08): write them as uint8" in message
    assert "fetch" not in message and "\n" not in message


def test_own_idx_float_images_say_to_write_uint8(tmp_path):
    import struct

    images = np.zeros((32, 28, 28), dtype=">f4")
    raw = struct.pack(">HBB", 0, 0x0D, 3) + struct.pack(">3I", 32, 28, 28) + images.tobytes()
    data = _idx_with(tmp_path, "train-images-idx3-ubyte", raw)
    with pytest.raises(DataError, match=r"32-bit floats \(float32\), and images must be unsigned bytes"):
        load_dataset(f"idx:{data}")


def test_own_idx_little_endian_dimensions_are_named(tmp_path):
    import struct

    images = np.zeros((32, 28, 28), dtype=np.uint8)
    raw = struct.pack(">HBB", 0, 0x08, 3) + struct.pack("<3I", 32, 28, 28) + images.tobytes()
    data = _idx_with(tmp_path, "train-images-idx3-ubyte", raw)
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{data}")
    assert "look little-endian, and IDX headers are big-endian" in str(err.value)
    assert "fetch" not in str(err.value)


def test_own_idx_trailing_bytes_say_what_to_write(tmp_path):
    data = _idx_with(tmp_path, "train-labels-idx1-ubyte", _labels(0x08, np.arange(32).astype(np.uint8) % 10) + b"xx")
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{data}")
    assert "trailing bytes" in str(err.value) and "fetch" not in str(err.value)
    assert "more bytes than its header declares" in str(err.value)


def test_a_folder_cache_on_a_full_disk_leaves_no_folder_behind(tmp_path, monkeypatch):
    import errno
    import os

    root = write_pngs(tmp_path / "pics")
    (tmp_path / "home").mkdir()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    messages = []
    d = load_dataset(f"folder:{root}", log=messages.append)
    assert len(d.train_labels) + len(d.test_labels) == 12
    assert any("could not cache the converted images" in m for m in messages)
    assert list((tmp_path / "home").iterdir()) == []


def test_a_cnnlab_home_that_is_a_file_is_named_as_for_catalog_data(tmp_path, monkeypatch):
    root = write_pngs(tmp_path / "pics")
    (tmp_path / "homefile").write_text("")
    monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / "homefile"))
    messages = []
    load_dataset(f"folder:{root}", log=messages.append)
    warning = next(m for m in messages if "could not cache" in m)
    assert f"CNNLAB_HOME {tmp_path / 'homefile'} is a file, not a folder" in warning
    assert "set CNNLAB_HOME to a folder, or remove what is in the way" in warning


def test_split_named_folders_of_images_are_refused_and_classes_that_merely_look_so_load(tmp_path):
    """A second tester's attack on the split rule: mnist_train/ + mnist_test/ holding images directly trained a
    2-class "train vs test" net; classes named oval/ and square/ (each with small/ and large/) were refused as
    splits ("val" in "oval"), and a class named train/ beside bus/ and car/ could not be kept."""
    flat = write_pngs(tmp_path / "flat", splits=("",), classes=("mnist_train", "mnist_test"))
    with pytest.raises(DataError, match=r"are splits, not classes; .*they hold images, not class folders"):
        load_dataset(f"folder:{flat}", log=lambda m: None)
    shapes = tmp_path / "shapes"
    for shape in ("oval", "square"):
        write_pngs(shapes / shape, splits=("small", "large"), classes=("x",))
    assert load_dataset(f"folder:{shapes}", log=lambda m: None).classes == ("oval", "square")
    vehicles = write_pngs(tmp_path / "vehicles", classes=("bus", "car", "train"))
    assert load_dataset(f"folder:{vehicles}", log=lambda m: None).classes == ("bus", "car", "train")


def test_a_dataset_wrapped_two_levels_deep_names_the_path_to_pass(tmp_path):
    write_pngs(tmp_path / "d" / "w1" / "w2", classes=("a", "b"))
    with pytest.raises(DataError, match=r"pass folder:.*/d/w1/w2$"):
        load_dataset(f"folder:{tmp_path / 'd'}", log=lambda m: None)


def test_a_val_folder_beside_train_and_test_is_said_to_be_unread(tmp_path):
    root = write_pngs(tmp_path / "pics", splits=("train", "test", "val"))
    said = []
    d = load_dataset(f"folder:{root}", log=said.append)
    assert len(d.train_labels) == 12 and any("val/ beside train/ and test/ not read" in m for m in said)


def test_evaluate_on_idx_test_files_replaced_by_others_of_the_same_size_writes_nothing(tmp_path, capsys):
    """Sizes, mean and std (the train split's) did not see a test set replaced by another of the same size: the
    run's result was overwritten (25.00% became 22.50%). The test split's CRC-32 is recorded and compared."""
    import shutil

    from cnnlab.cli import main
    from conftest import write_idx_dataset

    data = write_idx_dataset(tmp_path / "tiny", n_train=64, n_test=16)
    run = tmp_path / "run"
    _train(capsys, f"idx:{data}", run)
    summary = (run / "summary.json").read_bytes()
    other = write_idx_dataset(tmp_path / "other", n_train=64, n_test=16, seed=5)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(other / name, data / name)
    code = main(["evaluate", str(run), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0 and (run / "summary.json").read_bytes() == summary
    assert "is not the data the run trained on (the test images or labels differ)" in out + err


def test_a_changed_datasets_message_names_what_changed_in_words_not_record_keys():
    """Messages said `(test_crc32 differ)` and `(train_size, ... differ)`: a record's keys, not a user's words."""
    from cnnlab.data.dataset import Dataset
    img = torch.zeros(4, 1, 16, 16, dtype=torch.uint8)
    data = Dataset("idx:d", img, torch.tensor([0, 1, 0, 1]), img[:2], torch.tensor([0, 1]), ("0", "1"), 0.5, 0.25, "here")
    rec = data.info()
    assert data.describe_changes(rec) == ""
    assert data.describe_changes({**rec, "test_crc32": 1}) == "the test images or labels differ"
    assert data.describe_changes({**rec, "image_size": 28}) == "the image size differs"
    assert data.describe_changes({**rec, "std": 0.3}) == "the train images' spread differs"
    assert data.describe_changes({**rec, "train_size": 9, "mean": 0.1, "std": 0.3}) == \
        "the number of train images, the train images' mean and their spread differ"
