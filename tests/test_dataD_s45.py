"""Fixes of helper dataD (s45) to the data layer: defects D1-D7 of the "cache" probe (the fast copy's manifest,
``idx:DIR``'s layouts, ``folder:``'s linked and broken sub-folders, its cache's write failures, 16-bit images, and
``predict --show-input`` beside an image of a run's ``folder:`` dataset). docs/reliability.md lists them."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import catalog, load_dataset
from cnnlab.data.catalog import ROLES, DatasetSpec
from cnnlab.data import fastcopy as fc
from cnnlab.data.status import dataset_status
from cnnlab.errors import DataError
from apps_helpers import quiet
from conftest import write_idx_dataset
from cnnlab.cli import main
from test_fixN_s44 import image_folder, run
from test_folder_own_data import write_pngs
from test_fast_copy import count_md5_reads, same, tiny  # noqa: F401  (tiny: a fixture)


@pytest.mark.parametrize("text", ["1e999", "Infinity", "-1", "2.5", '"60"'])
def test_a_manifest_shape_of_no_whole_number_is_a_fast_copy_miss(tiny, monkeypatch, text):  # noqa: F811
    """(D5) A ``1e999`` (JSON's infinity) in fast-copy.json's ``shape`` was an ``OverflowError`` traceback on every load
    and in ``data info``. Now it is a miss like any other bad manifest: a note, the MD5 path, the copy rewritten; and
    ``data info`` says it does not match (``fastcopy.read_npy`` takes only a list of whole numbers)."""
    _, home, _ = tiny
    first = load_dataset("tiny", home=home, log=quiet)
    cache = home / "datasets" / "tiny"
    manifest = json.loads((cache / fc.MANIFEST).read_text())
    manifest["files"]["test_images"]["shape"][0] = "@"
    (cache / fc.MANIFEST).write_text(json.dumps(manifest, indent=1).replace('"@"', text))
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    row = {r["name"]: r for r in dataset_status()}["tiny"]
    assert row["files"][-1]["status"] == "fast copy does not match (rewritten on the next load)"
    reads = count_md5_reads(monkeypatch)
    messages: list[str] = []
    again = load_dataset("tiny", home=home, log=messages.append)
    assert same(first, again) and len(reads) == 4
    (line,) = [m for m in messages if m.startswith("note: the fast copy of tiny")]
    assert "is not a list of whole numbers" in line and "\n" not in line, line
    reads.clear()
    assert same(first, load_dataset("tiny", home=home, log=quiet)) and reads == []  # rewritten, used again


@pytest.mark.parametrize("code, why, fix", [
    (errno.EFBIG, "file too large (over a file-size limit: ulimit -f, or the file system's largest file)",
     "raise the limit (ulimit -f unlimited)"),
    (errno.ETXTBSY, "text file busy", "check the file and try again, or set CNNLAB_HOME to another directory"),
])
def test_a_folder_cache_that_cannot_be_written_says_one_reason_and_one_fix(tmp_path, monkeypatch, code, why, fix):
    """(D6) Under ``ulimit -f 8``, ``data fetch folder:DIR`` warned ``(cannot write .../images.npz: file too large (...);
    raise the limit (ulimit -f unlimited) and run it again (...)); they will be converted again next time: set
    CNNLAB_HOME to a writable directory with free space``: the file writer's whole line, its fix inside, then a fix that
    does not help. Now the reason alone and the fix that works, as for catalog data (``sources.write_failure``)."""
    root = write_pngs(tmp_path / "pics")
    home = tmp_path / "home"

    def fails(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fails)
    messages: list[str] = []
    d = load_dataset(f"folder:{root}", home=home, log=messages.append)
    assert len(d.train_labels) + len(d.test_labels) == 12
    (warning,) = [m for m in messages if m.startswith("warning")]
    cache = next(iter(m for m in messages if "could not cache" in m)).split(" in ", 1)[1].split(" (")[0]
    assert warning == (f"warning: folder:{root}: could not cache the converted images in {cache} ({why}); they will be "
                       f"converted again next time: {fix}"), warning


def test_a_class_folder_that_is_a_broken_link_is_refused_not_dropped(tmp_path):
    """(D4) Class ``c`` a link to a disk not mounted now: the load said ``ignored 1 file(s) that are not PNG, JPEG or
    BMP``, converted the two other classes, trained a 2-class net and deleted the 3-class conversion's cache. Now one
    line naming the link and its target (``folder._class_dirs``), nothing converted or deleted; a broken link named
    like an image among the loose files is ignored as those are, and one beside train/ and test/ is no class."""
    root = write_pngs(tmp_path / "pics", classes=("a", "b"))
    write_pngs(tmp_path / "usb", classes=("c2",))
    (root / "c").symlink_to(tmp_path / "usb" / "c2")
    home = tmp_path / "home"
    assert load_dataset(f"folder:{root}", home=home, log=quiet).classes == ("a", "b", "c")
    caches = sorted((home / "datasets").iterdir())
    (tmp_path / "usb").rename(tmp_path / "usb-unmounted")
    messages: list[str] = []
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}", home=home, log=messages.append)
    assert str(err.value) == (f"folder:{root}: class folder c is a broken symbolic link (to {tmp_path / 'usb' / 'c2'}), "
                              "so its images would be left out without a word; mount or fix its target, or remove the "
                              "link")
    assert messages == [] and sorted((home / "datasets").iterdir()) == caches
    (root / "c").unlink()
    (root / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert load_dataset(f"folder:{root}", home=home, log=quiet).classes == ("a", "b")
    split = write_pngs(tmp_path / "split", splits=("train", "test"), classes=("a", "b"))
    (split / "val").symlink_to(tmp_path / "nowhere")
    assert load_dataset(f"folder:{split}", home=home, log=quiet).classes == ("a", "b")


def test_a_linked_sub_folder_of_a_class_is_read_once_and_never_into_two_classes(tmp_path):
    """(D3) ``ln -s MORE/c DATA/c/batch2``: the 8 images of the linked sub-folder were neither read nor named
    (``converting 24 images``), where a linked class folder is read. Now linked sub-folders are followed
    (``folder._image_files``, ``_subfolders``): a loop or a second link to one folder is read once; a link to the
    dataset folder, above it, or into another class or split is refused (its images would be counted twice); a
    broken one is refused as a broken class folder is."""
    root = write_pngs(tmp_path / "pics", classes=("a", "b", "c"))
    more = write_pngs(tmp_path / "more", classes=("c",), seed=1)
    (root / "c" / "batch2").symlink_to(more / "c")
    (root / "c" / "batch3").symlink_to(more / "c")  # a second way in: read once
    (more / "c" / "loop").symlink_to(more / "c")  # a loop below the link: read once
    (root / "c" / "self").symlink_to(root / "c")
    d = load_dataset(f"folder:{root}", home=tmp_path / "home", log=quiet)
    assert d.classes == ("a", "b", "c")
    assert (len(d.train_labels) + len(d.test_labels), int((d.train_labels == 2).sum() + (d.test_labels == 2).sum())) \
        == (16, 8)
    for target, what in ((root / "a", str(root / "a")), (root, "the dataset folder or a folder above it"),
                         (tmp_path, "the dataset folder or a folder above it")):
        (root / "c" / "x").symlink_to(target)
        with pytest.raises(DataError) as err:
            load_dataset(f"folder:{root}", home=tmp_path / "home", log=quiet)
        assert str(err.value) == (f"folder:{root}: folder c/x is a link to {what}, so its images would be counted "
                                  "twice; remove the link")
        (root / "c" / "x").unlink()
    (root / "c" / "x").symlink_to(tmp_path / "unmounted")
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}", home=tmp_path / "home", log=quiet)
    assert str(err.value) == (f"folder:{root}: folder c/x is a broken symbolic link (to {tmp_path / 'unmounted'}), so "
                              "its images would be left out without a word; mount or fix its target, or remove the link")


def _torchvision_root(root: Path) -> Path:
    """``root/MNIST/raw`` and ``root/FashionMNIST/raw``, two different tiny datasets as torchvision leaves them."""
    write_idx_dataset(root / "MNIST" / "raw", seed=0, gz=True)
    write_idx_dataset(root / "FashionMNIST" / "raw", seed=1, gz=True)
    return root


def test_idx_dir_takes_its_four_files_from_one_folder(tmp_path):
    """(D2) A torchvision root holding MNIST/raw (its t10k labels missing: a download cut short) and FashionMNIST/raw:
    ``idx:ROOT`` took each file from the first layout that had it, MNIST's images and FashionMNIST's test labels,
    9.66% without a word; with both whole it took MNIST quietly. Now the four files come from one folder
    (``files.idx_files``): a file missing there is named with that folder, and two whole sets are refused
    (``idxdir._one_dataset``); ``idx:ROOT/FashionMNIST/raw`` reads that one, its source naming that folder."""
    root = _torchvision_root(tmp_path / "tv")
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{root}")
    assert str(err.value) == (f"idx:{root}: no t10k-labels-idx1-ubyte file (raw or .gz) in {root / 'MNIST' / 'raw'}, "
                              "which holds the other IDX files, so the four would not be one dataset; FashionMNIST/raw "
                              f"holds all four: pass idx:{root / 'FashionMNIST' / 'raw'} to read that dataset")
    write_idx_dataset(tmp_path / "again", seed=0, gz=True)
    (tmp_path / "again" / "t10k-labels-idx1-ubyte.gz").rename(root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{root}")
    assert str(err.value) == (f"idx:{root} holds 2 sets of the four IDX files (MNIST/raw, FashionMNIST/raw): datasets, "
                              "or copies of one, and cnnlab does not guess which to read; pass one of them: "
                              f"idx:{root / 'MNIST' / 'raw'} or idx:{root / 'FashionMNIST' / 'raw'}")
    fashion = load_dataset(f"idx:{root / 'FashionMNIST' / 'raw'}")
    alone = load_dataset(f"idx:{write_idx_dataset(tmp_path / 'alone', seed=1)}")
    assert torch.equal(fashion.test_labels, alone.test_labels) and fashion.source.endswith("FashionMNIST/raw")


def test_a_catalog_dataset_reads_its_own_layout_of_a_torchvision_root(tmp_path, monkeypatch):
    """(D2) ``--dataset fashion-mnist --data-dir ROOT`` (a torchvision root holding both datasets) took MNIST/raw's
    files, the first layout, and refused them by MD5 ("use the dataset mnist"); and ``mnist --data-dir ROOT`` with one
    MNIST file missing took FashionMNIST's, then said "use the dataset fashion-mnist for these files", which fails on
    the other three. Now a catalog dataset passes over the layout named for another one (``files.LAYOUT_DATASETS``),
    and a file missing from its folder is named there."""
    root = _torchvision_root(tmp_path / "tv")
    for name, sub in (("fashion-mnist", "FashionMNIST"), ("mnist", "MNIST")):
        folder = root / sub / "raw"
        md5 = {role: hashlib.md5(gzip.decompress((folder / (base + ".gz")).read_bytes())).hexdigest()
               for role, (base, _) in ROLES.items()}
        monkeypatch.setitem(catalog.CATALOG, name, DatasetSpec(name=name, md5=md5, mirrors=(), classes=tuple("0123456789"),
                                                               mean=0.5, std=0.25))
        d = load_dataset(name, data_dir=root, home=tmp_path / "home", download=False, log=quiet)
        assert torch.equal(d.test_labels, load_dataset(f"idx:{folder}").test_labels)
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    messages: list[str] = []
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=root, home=tmp_path / "empty", download=False, log=messages.append)
    assert messages[0] == (f"data dir {root}: missing t10k-labels-idx1-ubyte in {root / 'MNIST' / 'raw'}, which holds "
                           "the other files, skipping")
    assert "checksum" not in str(err.value)


def _float64_scaling(im) -> np.ndarray:
    """How ``folder.gray_square`` scaled a 16/32-bit image to 8 bits before (D7), in float64: the bits to keep."""
    wide = np.asarray(im, dtype=np.float64)
    top = 65535.0 if im.mode.startswith("I;16") or wide.max() > 255 else 255.0
    return np.clip(np.rint(wide * (255.0 / top)), 0, 255).astype(np.uint8)


def test_a_16_bit_image_converts_in_the_memory_of_its_8_bit_result():
    """(D7) A 157 KB 9000x9000 16-bit PNG in a ``folder:`` dataset took 2.3 GB to convert (an 8-bit one 0.39 GB):
    ``gray_square`` made four float64 copies of it, 26 bytes a pixel. Now ``folder._eight_bits`` scales it in integers,
    a strip of rows at a time: under 6 bytes a pixel here (the uint8 result and one strip), to the same image."""
    from PIL import Image

    from cnnlab.data.folder import gray_square

    rng = np.random.default_rng(0)
    scan = Image.frombytes("I;16", (3000, 3000), rng.integers(0, 65536, (3000, 3000), dtype=np.uint16).tobytes())
    expected = gray_square(Image.fromarray(_float64_scaling(scan), mode="L"))
    tracemalloc.start()
    try:
        got = gray_square(scan)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(got, expected) and peak < 6 * 3000 * 3000, f"{peak / 9e6:.1f} bytes a pixel"


def test_16_and_32_bit_images_scale_to_the_bits_they_did_in_float64():
    """(D7) The integer scaling of ``folder._eight_bits`` gives the float64 scaling's bits (no dataset's conversion
    changes): every 16-bit value, and 32-bit images of values over 255 (taken as 16-bit) or not (taken as 8-bit),
    negative ones too; strips of any height."""
    from PIL import Image

    from cnnlab.data import folder

    every = Image.frombytes("I;16", (256, 256), np.arange(65536, dtype=np.uint16).tobytes())
    assert np.array_equal(folder._eight_bits(every), _float64_scaling(every))
    rng = np.random.default_rng(0)
    for values in (rng.integers(-2**31, 2**31, (300, 1000)), rng.integers(-5, 256, (700, 3)),
                   np.array([[-70000, -1, 0, 128, 129, 255, 256, 257 * 3 + 128, 257 * 3 + 129, 65535, 65536, 2**31 - 1]])):
        im = Image.fromarray(values.astype(np.int32))
        assert im.mode == "I" and np.array_equal(folder._eight_bits(im), _float64_scaling(im))
    tall = Image.frombytes("I;16", (7, 5000), rng.integers(0, 65536, (5000, 7), dtype=np.uint16).tobytes())
    assert np.array_equal(folder._eight_bits(tall), _float64_scaling(tall))  # 5000 rows: several strips


def test_show_input_never_writes_where_the_nets_folder_dataset_reads(tmp_path, monkeypatch, capsys):
    """(D1) ``cnnlab predict RUN DATA/a/000.png --show-input`` of a run trained on ``folder:DATA`` wrote
    ``000.input.png`` and ``000.input.x10.png`` into class ``a``: the next load converted 26 images, not 24, and
    ``evaluate`` said the run's data had changed. Now an image's own folder that the dataset reads is passed over for
    ``./cnnlab-inputs`` with a note (``cli.predict.InputImages``, asking ``predict.read_by_training_data``); a
    ``--show-input DIR`` inside the dataset, or a ``./cnnlab-inputs`` inside it, is refused before anything is
    predicted; a hidden folder, or an image outside the dataset, is written as before."""
    data = image_folder(tmp_path / "pets")
    run_dir = tmp_path / "r1"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"folder:{data}", "--epochs", "1", "--max-steps", "2",
                 "--threads", "1", "--quiet", "--out", str(run_dir)]) == 0
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    capsys.readouterr()
    code, out, err = run(["predict", str(run_dir), str(data / "cats" / "0.png"), str(data / "cats" / "1.png"),
                          "--show-input"], capsys)
    assert code == 0 and sorted(os.listdir("cnnlab-inputs")) == ["0.input.png", "0.input.x10.png", "1.input.png",
                                                                  "1.input.x10.png"], err
    assert err == (f"note: --show-input: {data / 'cats'} is class folder cats/ of folder:{data}, the data this net "
                   "trained on, whose next load would train on the input images written there; wrote them into "
                   "cnnlab-inputs instead\n")
    assert "wrote cnnlab-inputs/0.input.png" in out
    for where in (data / "cats" / "seen", data / "new"):
        code, out, err = run(["predict", str(run_dir), str(data / "cats" / "0.png"), "--show-input", str(where)], capsys)
        cls = where.relative_to(data).parts[0]
        assert (code, out) == (2, "") and err == (
            f"cnnlab: error: --show-input {where} is inside folder:{data}, the data this net trained on, whose loads "
            f"would read the input images written there as images of class {cls}; give --show-input a folder outside "
            f"{data}, or a hidden one (--show-input .inputs), which a folder: dataset never reads\n"), err
    monkeypatch.chdir(data)
    code, out, err = run(["predict", str(run_dir), "cats/0.png", "--show-input"], capsys)
    assert (code, out) == (2, "") and err.startswith("cnnlab: error: --show-input writes the input image of cats/0.png "
                                                     "into cnnlab-inputs, not beside it in class folder cats/ of "), err
    assert err.count("\n") == 1
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    assert run(["predict", str(run_dir), "cats/0.png", "--show-input", ".seen"], capsys)[0] == 0
    other = image_folder(tmp_path / "other", classes=("x",), n=1)
    assert run(["predict", str(run_dir), str(other / "x" / "0.png"), "--show-input"], capsys)[0] == 0
    assert (other / "x" / "0.input.png").is_file()
    assert load_dataset(f"folder:{data}", home=tmp_path / "home", log=quiet).train_labels.shape == (20,)
