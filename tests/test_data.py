"""The strict IDX reader, finding IDX files, dataset names, the sources and the cache."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import canonical_dataset_name, dataset_kind, load_dataset, sources
from cnnlab.data.catalog import MNIST, ROLES, DatasetSpec
from cnnlab.data.files import find_idx_file, find_in_dir, find_loose
from cnnlab.data.idx import decode_idx, encode_idx
from cnnlab.errors import DataError
from conftest import write_idx_dataset


def test_idx_round_trip():
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    b = decode_idx(encode_idx(a), "x", 3)
    assert np.array_equal(a, b)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    assert np.array_equal(decode_idx(encode_idx(labels), "y", 1), labels)


@pytest.mark.parametrize(
    "mutate,fragment",
    [
        (lambda d: b"\x00\x00\x09\x03" + d[4:], "bad IDX magic"),
        (lambda d: b"\x12\x34" + d[2:], "bad IDX magic"),
        (lambda d: d[:3] + b"\x02" + d[4:], "2 dimensions, expected 3"),
        (lambda d: d[:-10], "truncated"),
        (lambda d: d + b"\x00", "trailing bytes"),
        (lambda d: d[:10], "truncated IDX header"),
        (lambda d: d[:2], "too short"),
    ],
)
def test_idx_corruptions_are_one_line_errors(mutate, fragment):
    good = encode_idx(np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(DataError) as err:
        decode_idx(mutate(good), "train-images-idx3-ubyte", 3)
    msg = str(err.value)
    assert fragment in msg and "train-images-idx3-ubyte" in msg and "\n" not in msg


def test_idx_dataset_loads_raw_and_gz(tmp_path):
    for gz in (False, True):
        d = load_dataset(f"idx:{write_idx_dataset(tmp_path / str(gz), gz=gz)}")
        assert d.train_images.shape == (256, 1, 28, 28) and d.train_images.dtype.is_floating_point is False
        assert d.test_labels.shape == (64,) and d.num_classes == 10
        assert 0 < d.mean < 1 and 0 < d.std < 1


def test_label_image_count_mismatch(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    (directory / "train-labels-idx1-ubyte").write_bytes(encode_idx(np.zeros(10, dtype=np.uint8)))
    with pytest.raises(DataError, match="256 images but 10 labels"):
        load_dataset(f"idx:{directory}")


def test_missing_idx_dir_file(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    (directory / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="no t10k-labels-idx1-ubyte"):
        load_dataset(f"idx:{directory}")


def tiny_spec(directory) -> DatasetSpec:
    """A catalog entry whose checksums are those of a generated dataset."""
    md5 = {}
    for role, (base, _) in ROLES.items():
        md5[role] = hashlib.md5((directory / base).read_bytes()).hexdigest()
    return DatasetSpec(name="tiny", md5=md5, mirrors=(), classes=tuple("0123456789"), mean=0.5, std=0.25)


def test_user_dir_checksum_mismatch_is_an_error(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    spec = tiny_spec(directory)
    (directory / "t10k-images-idx3-ubyte").write_bytes(encode_idx(np.ones((64, 28, 28), dtype=np.uint8)))
    with pytest.raises(DataError, match="checksum mismatch.*t10k-images"):
        sources.locate(spec, data_dir=directory, home=tmp_path / "home", download=False, log=lambda m: None)


def test_torchvision_raw_layout_and_caching(tmp_path):
    directory = write_idx_dataset(tmp_path / "tv" / "MNIST" / "raw", gz=True)
    spec = tiny_spec_from_gz(directory)
    found = sources.locate(spec, data_dir=tmp_path / "tv", home=tmp_path / "home", log=lambda m: None)
    assert "data dir" in found.source
    # a user directory is read in place, not copied; a download would be cached (tested below)
    assert not (tmp_path / "home" / "datasets" / "tiny").exists()


def tiny_spec_from_gz(directory) -> DatasetSpec:
    md5 = {role: hashlib.md5(gzip.decompress((directory / (base + ".gz")).read_bytes())).hexdigest()
           for role, (base, _) in ROLES.items()}
    return DatasetSpec(name="tiny", md5=md5, mirrors=(), classes=tuple("0123456789"), mean=0.5, std=0.25)


def _files(directory):
    return {role: (directory / base).read_bytes() for role, (base, _) in ROLES.items()}


def _arrays(files):
    """IDX bytes by role -> the arrays a source returns."""
    return {role: decode_idx(data, role, ROLES[role][1]) for role, data in files.items()}


def _as_files(arrays):
    """Arrays by role -> their IDX bytes (encode_idx(decode_idx(b)) == b: the reader is strict)."""
    return {role: encode_idx(a) for role, a in arrays.items()}


def test_download_is_verified_then_cached_atomically(tmp_path, monkeypatch):
    directory = write_idx_dataset(tmp_path / "src")
    spec = tiny_spec(directory)
    files = _files(directory)
    spec = DatasetSpec(**{**spec.__dict__, "extra_sources": ("fake",)})
    monkeypatch.setitem(sources.EXTRA_SOURCES, "fake", lambda s, log: sources.Found(_arrays(files), "fake"))
    home = tmp_path / "home"
    found = sources.locate(spec, home=home, log=lambda m: None)
    assert found.source == "fake"
    cached = sorted(p.name for p in (home / "datasets" / "tiny").iterdir())
    # the official .gz files, their fast copy and its manifest; no temp files left
    assert cached == sorted([base + ".gz" for base, _ in ROLES.values()] + [base + ".npy" for base, _ in ROLES.values()]
                            + ["fast-copy.json"])
    again = sources.locate(spec, home=home, download=False, log=lambda m: None)
    assert again.source.startswith("cache") and _as_files(again.arrays) == files


def test_failed_fetch_leaves_cache_as_it_was(tmp_path, monkeypatch):
    directory = write_idx_dataset(tmp_path / "src")
    spec = DatasetSpec(**{**tiny_spec(directory).__dict__, "extra_sources": ("fake",)})
    home = tmp_path / "home"
    cache = home / "datasets" / "tiny"
    cache.mkdir(parents=True)
    (cache / "train-images-idx3-ubyte.gz").write_bytes(b"old partial cache")  # damaged, incomplete cache
    bad = _files(directory)
    bad["test_labels"] = bad["test_labels"][:-1] + b"\x07"
    monkeypatch.setitem(sources.EXTRA_SOURCES, "fake", lambda s, log: sources.verify(
        s, "test_labels", hashlib.md5(bad["test_labels"]).hexdigest(), "fake") or None)
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    with pytest.raises(DataError, match="checksum mismatch"):
        sources.locate(spec, home=home, log=lambda m: None)
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before


def test_no_source_reachable(tmp_path):
    spec = DatasetSpec(name="tiny", md5=MNIST.md5, mirrors=("http://127.0.0.1:9/",), classes=(), mean=0, std=1)
    with pytest.raises(DataError) as err:
        sources.locate(spec, data_dir=tmp_path, home=tmp_path / "home", log=lambda m: None)
    msg = str(err.value)
    assert "no source reachable for tiny" in msg and "--data-dir" in msg and "\n" not in msg


def test_damaged_cache_is_refetched(tmp_path, monkeypatch):
    directory = write_idx_dataset(tmp_path / "src")
    files = _files(directory)
    spec = DatasetSpec(**{**tiny_spec(directory).__dict__, "extra_sources": ("fake",)})
    monkeypatch.setitem(sources.EXTRA_SOURCES, "fake", lambda s, log: sources.Found(_arrays(files), "fake"))
    home = tmp_path / "home"
    sources.locate(spec, home=home, log=lambda m: None)
    victim = home / "datasets" / "tiny" / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(gzip.compress(files["test_labels"][:-1] + b"\x09"))
    messages = []
    found = sources.locate(spec, home=home, log=messages.append)
    assert found.source == "fake" and any("damaged" in m for m in messages)
    assert gzip.decompress(victim.read_bytes()) == files["test_labels"]


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar'.*mnist"):
        load_dataset("cifar")


def test_corrupt_gzip(tmp_path):
    directory = write_idx_dataset(tmp_path / "d", gz=True)
    (directory / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(DataError, match="corrupt gzip"):
        load_dataset(f"idx:{directory}")


def test_mnist_pickle_conversion_is_exact():
    rng = np.random.default_rng(0)
    pairs = []
    for n in (5, 3, 4):
        u = rng.integers(0, 256, size=(n, 784)).astype(np.uint8)
        pairs.append(((u.astype(np.float32) / 256).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)))
    files = sources.mnist_pickle_to_idx(tuple(pairs))
    train = decode_idx(files["train_images"], "t", 3)
    assert train.shape == (8, 28, 28)
    assert np.array_equal(train.reshape(8, -1), np.concatenate([np.rint(p[0] * 256) for p in pairs[:2]]).astype(np.uint8))
    assert np.array_equal(decode_idx(files["test_labels"], "l", 1), pairs[2][1].astype(np.uint8))


def test_mnist_pickle_conversion_refuses_inexact_pixels():
    pairs = tuple((np.full((2, 784), 0.3, np.float32), np.zeros(2, np.int64)) for _ in range(3))
    with pytest.raises(DataError, match="not exactly uint8/256"):
        sources.mnist_pickle_to_idx(pairs)


def test_missing_data_dir_is_an_error_not_a_silent_fallback(tmp_path):
    with pytest.raises(DataError, match="--data-dir .*nope: no such directory"):
        load_dataset("mnist", data_dir=tmp_path / "nope", download=False)


# --- finding IDX files (cnnlab.data.files) ------------------------------------------------------


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("layout", ["", "raw", "MNIST/raw", "FashionMNIST/raw", "data/fashion"])
def test_official_names_are_found_in_torchvision_and_zalando_layouts(tmp_path, layout):
    where = tmp_path / layout if layout else tmp_path
    for role, (base, _) in ROLES.items():
        _touch(where / (base + ".gz"))
    for role, (base, _) in ROLES.items():
        assert find_in_dir(tmp_path, role) == where / (base + ".gz")


def test_official_names_prefer_raw_to_gz_and_accept_dotted_names(tmp_path):
    raw = _touch(tmp_path / "train-images-idx3-ubyte")
    _touch(tmp_path / "train-images-idx3-ubyte.gz")
    assert find_in_dir(tmp_path, "train_images") == raw
    dotted = _touch(tmp_path / "t10k-labels.idx1-ubyte.gz")  # as some mirrors name them
    assert find_in_dir(tmp_path, "test_labels") == dotted
    assert find_in_dir(tmp_path, "train_labels") is None


def test_loose_names_prefer_raw_to_gz(tmp_path):
    _touch(tmp_path / "emnist-digits-train-images-idx3-ubyte.gz")
    raw = _touch(tmp_path / "emnist-digits-train-images-idx3-ubyte")
    assert find_loose(tmp_path, "train_images") == raw
    test = _touch(tmp_path / "kmnist-test-imgs-idx3-ubyte.gz")  # "imgs", "test" instead of "t10k"
    assert find_loose(tmp_path, "test_images") == test
    assert find_loose(tmp_path, "test_labels") is None


def test_loose_names_refuse_ambiguous_candidates(tmp_path):
    _touch(tmp_path / "emnist-digits-test-labels-idx1-ubyte.gz")
    _touch(tmp_path / "emnist-letters-test-labels-idx1-ubyte")
    with pytest.raises(DataError, match=r"several candidates for the test labels \(emnist-digits-test-labels-idx1-ubyte, "
                                        r"emnist-letters-test-labels-idx1-ubyte\); put one dataset's") as err:
        find_loose(tmp_path, "test_labels")
    assert "\n" not in str(err.value)


def test_official_names_and_loose_ones_are_never_mixed(tmp_path):
    official = _touch(tmp_path / "train-labels-idx1-ubyte.gz")
    _touch(tmp_path / "train-labels-idx1-ubyte.gz.md5")  # the official file's companion: no loose name
    assert find_idx_file(tmp_path, "train_labels") == official
    assert find_idx_file(tmp_path, "test_labels") is None
    _touch(tmp_path / "other-train-labels-idx1-ubyte")  # two naming families: two datasets' files (ndX D1)
    with pytest.raises(DataError, match=r"two naming families, official \(train-labels-idx1-ubyte.gz\) and "
                                        r"other-\*-\*-idx\*-ubyte \(other-train-labels-idx1-ubyte\)"):
        find_idx_file(tmp_path, "train_labels")
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        _touch(tmp_path / name)  # the four official files all there: taken, a loose one beside them (a backup) left
    assert find_idx_file(tmp_path, "train_labels") == official


# --- dataset names (cnnlab.data.names) ----------------------------------------------------------


@pytest.mark.parametrize("name, kind", [
    ("mnist", "mnist"), ("fashion-mnist", "fashion-mnist"), ("idx:/data/emnist", "idx"),
    ("idx:C:/data:odd", "idx"), ("folder:pics", "folder"), ("folder:", "folder"),
])
def test_dataset_kind(name, kind):
    assert dataset_kind(name) == kind


def test_canonical_dataset_name_makes_directories_absolute(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    real = tmp_path.resolve() / "real"
    assert canonical_dataset_name("idx:real") == f"idx:{real}"
    assert canonical_dataset_name("folder:link") == f"folder:{real}"  # links resolved
    assert canonical_dataset_name("idx:~/real") == f"idx:{real}"  # ~ expanded
    assert canonical_dataset_name(f"idx:{real}") == f"idx:{real}"  # already canonical: unchanged
    for name in ("mnist", "fashion-mnist", "cifar", "idx"):
        assert canonical_dataset_name(name) == name  # not a directory name: left to load_dataset to judge


def test_a_kind_without_a_directory_is_an_unknown_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(write_idx_dataset(tmp_path / "d"))  # "idx" must not mean "idx:." here
    with pytest.raises(DataError, match="unknown dataset 'idx'"):
        load_dataset("idx")


def test_a_canonical_idx_name_loads_under_that_name(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    name = canonical_dataset_name("idx:d")
    assert load_dataset(name).name == name
