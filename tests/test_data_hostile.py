"""Hostile input to the data path: each fault found by the failure sweep (docs/reliability.md), reproduced
deterministically, with what cnnlab must do instead: one line naming the path, the problem and the fix; no
traceback; no cache lost, damaged or left half-written; memory bounded by what the data declares.

The machine runs tests as root, so permission errors, read-only file systems and full disks are faked by
making the operating-system calls fail for chosen paths only (see :func:`fail_os`)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import MIN_IMAGE_SIZE, catalog, load_dataset, sources
from cnnlab.data.catalog import ROLES, DatasetSpec
from cnnlab.data.fastcopy import load_fast_copy
from cnnlab.data.idx import MAX_IDX_BYTES, decode_idx, encode_idx, read_idx
from cnnlab.data.status import dataset_status
from cnnlab.errors import DataError
from apps_helpers import deadline, one_line, peak_bytes, quiet
from conftest import make_images, write_idx_dataset

SRC = Path(__file__).resolve().parents[1] / "src"


def put(directory: Path, role: str, array: np.ndarray, gz: bool = False) -> None:
    """Replace one of a generated dataset's IDX files (raw; or .gz, removing the raw one)."""
    base = ROLES[role][0]
    if gz:
        (directory / base).unlink(missing_ok=True)
        (directory / (base + ".gz")).write_bytes(gzip.compress(encode_idx(array)))
    else:
        (directory / base).write_bytes(encode_idx(array))


def labels_of(directory: Path, role: str) -> np.ndarray:
    return decode_idx((directory / ROLES[role][0]).read_bytes(), role, 1).copy()


def fail_os(monkeypatch, name: str, under: Path, code: int, when=lambda *a, **k: True) -> None:
    """Make ``os.<name>(path, ...)`` raise ``OSError(code)`` for paths under ``under`` (when ``when`` agrees)."""
    real = getattr(os, name)
    prefix = str(under)

    def fake(*args, **kwargs):
        path = args[0] if args else kwargs.get("path", ".")
        if isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(prefix) and when(*args, **kwargs):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)


def read_only(monkeypatch, under: Path) -> None:
    """A read-only file system at ``under``: creating, replacing or deleting anything there fails (EROFS)."""
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT
    fail_os(monkeypatch, "open", under, errno.EROFS, when=lambda path, flags, *a, **k: flags & writes)
    for name in ("mkdir", "replace", "rename", "unlink", "rmdir"):
        fail_os(monkeypatch, name, under, errno.EROFS)


def gzip_bomb(zeros: int, prefix: bytes = b"") -> bytes:
    """``prefix`` then ``zeros`` zero bytes, gzip-compressed at level 9 (about 1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [packer.compress(prefix)]
    chunk = bytes(1 << 20)
    out += [packer.compress(chunk) for _ in range(zeros >> 20)]
    return b"".join(out) + packer.flush()


# --- 1. IDX dimensions, empty splits, images the nets cannot take -------------------------------------------


def test_idx_dimensions_whose_product_wraps_to_zero_are_refused(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    (directory / "train-images-idx3-ubyte").write_bytes(struct.pack(">HBB3I", 0, 8, 3, 2**31, 2**31, 2**31))
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, "train-images-idx3-ubyte", "declares dimensions [2147483648, 2147483648, 2147483648]",
             "more than an MNIST-like file can be")


def test_a_declared_size_beyond_the_limit_is_refused_before_reading_the_body(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">HBB3I", 0, 8, 3, 2_000_000, 28, 28) + bytes(1000))  # 1.6 GB declared
    peak, raised = peak_bytes(lambda: read_idx(path, 3))
    assert isinstance(raised, DataError) and "1,568,000,000 bytes" in str(raised)
    assert peak < 1 << 20
    # the limit is generous for real data: EMNIST ByClass's 697,932 train images of 28x28 fit
    assert 697_932 * 28 * 28 < MAX_IDX_BYTES


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_split_of_zero_images_is_refused(tmp_path, split):
    directory = write_idx_dataset(tmp_path / "d")
    prefix = "train" if split == "train" else "test"
    put(directory, f"{prefix}_images", np.zeros((0, 28, 28), np.uint8))
    put(directory, f"{prefix}_labels", np.zeros(0, np.uint8))
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, f"idx:{directory}", f"the {split} split has no images", f"add {split} images")


@pytest.mark.parametrize("size", [1, 5, MIN_IMAGE_SIZE - 1])
def test_images_too_small_for_the_nets_are_refused_naming_size_and_minimum(tmp_path, size):
    directory = write_idx_dataset(tmp_path / "d")
    put(directory, "train_images", np.zeros((256, size, size), np.uint8))
    put(directory, "test_images", np.zeros((64, size, size), np.uint8))
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, f"images are {size}x{size} pixels, too small", f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}", "resize")


def test_the_smallest_size_the_nets_take_loads(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    rng = np.random.default_rng(0)
    put(directory, "train_images", make_images(labels_of(directory, "train_labels"), rng, size=28)[:, :16, :16])
    put(directory, "test_images", make_images(labels_of(directory, "test_labels"), rng, size=28)[:, :16, :16])
    assert load_dataset(f"idx:{directory}").image_size == MIN_IMAGE_SIZE == 16


def test_non_square_images_are_refused(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    put(directory, "train_images", np.zeros((256, 28, 32), np.uint8))
    put(directory, "test_images", np.zeros((64, 28, 32), np.uint8))
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, "images are 28x32 (height x width)", "square")


def test_splits_of_different_image_sizes_are_refused(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    put(directory, "test_images", np.zeros((64, 32, 32), np.uint8))
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, "train images are (28, 28) but test images (32, 32)")


# --- 2. labels that leave classes empty ---------------------------------------------------------------------


def test_a_single_odd_label_is_refused_instead_of_building_251_classes(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    y = labels_of(directory, "train_labels")
    y[5] = 250
    put(directory, "train_labels", y)
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, f"idx:{directory}", "class(es) 10..249 have none", "odd label(s): 250 (1 train, 0 test images)",
             "fix or remove the items with the odd labels")


def test_a_test_label_the_train_split_lacks_is_refused(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    y = labels_of(directory, "test_labels")
    y[:3] = 12
    put(directory, "test_labels", y)
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, "class(es) 10..12 have none", "odd label(s): 12 (0 train, 3 test images)")


def test_labels_from_one_like_emnist_letters_are_accepted(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    for role in ("train_labels", "test_labels"):
        put(directory, role, labels_of(directory, role) + 1)  # 1..10, class 0 unused in both splits
    d = load_dataset(f"idx:{directory}")
    assert d.num_classes == 11 and int(d.train_labels.min()) == 1
    # but a class 0 used only by the test split is refused
    y = labels_of(directory, "test_labels")
    y[0] = 0
    put(directory, "test_labels", y)
    with pytest.raises(DataError, match=r"class\(es\) 0 have none"):
        load_dataset(f"idx:{directory}")


def test_a_labels_file_longer_than_the_images_is_refused(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    put(directory, "train_labels", np.zeros(300, np.uint8))
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, "256 images but 300 labels")


# --- 4. gzip: bombs, truncation, corruption -----------------------------------------------------------------


def test_a_gzip_bomb_is_refused_from_its_first_bytes_in_bounded_memory(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    (directory / "train-images-idx3-ubyte").unlink()
    bomb = directory / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip_bomb(128 << 20))  # 128 MB of zeros in about 130 kB
    peak, raised = peak_bytes(lambda: load_dataset(f"idx:{directory}"))
    assert isinstance(raised, DataError) and "bad IDX magic 0x00000000" in str(raised), raised
    assert peak < 16 << 20, f"peak {peak:,} bytes"


def test_a_gzip_bomb_behind_a_valid_header_inflates_no_more_than_declared(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip_bomb(128 << 20, prefix=struct.pack(">HBB3I", 0, 8, 3, 2, 28, 28)))
    peak, raised = peak_bytes(lambda: read_idx(path, 3))
    assert isinstance(raised, DataError) and "trailing bytes: more than 1568 bytes" in str(raised), raised
    assert peak < 16 << 20, f"peak {peak:,} bytes"


def test_a_gzip_file_truncated_mid_stream_is_a_one_line_error(tmp_path):
    directory = write_idx_dataset(tmp_path / "d", gz=True)
    victim = directory / "train-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, str(victim), "corrupt gzip file, it ends early", "compress the IDX file again")
    assert "fetch" not in str(err.value)  # the user's own file: there is nothing to fetch


def test_a_gzip_file_with_a_bad_crc_is_a_one_line_error(tmp_path):
    directory = write_idx_dataset(tmp_path / "d", gz=True)
    victim = directory / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(victim.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 in the gzip trailer
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, str(victim), "corrupt gzip file")


def test_the_streaming_reader_gives_the_bytes_the_whole_file_reader_gave(tmp_path):
    """Numbers are sacred: the same arrays as ``np.frombuffer(gzip.decompress(file))`` did, raw and gzip."""
    for gz in (False, True):
        directory = write_idx_dataset(tmp_path / f"gz{gz}", n_train=300, n_test=50, seed=7, gz=gz)
        d = load_dataset(f"idx:{directory}")
        for role, got in (("train_images", d.train_images[:, 0]), ("test_labels", d.test_labels)):
            raw = (directory / (ROLES[role][0] + (".gz" if gz else ""))).read_bytes()
            body = gzip.decompress(raw) if gz else raw
            header = 4 + 4 * ROLES[role][1]
            want = np.frombuffer(body, np.uint8, offset=header).reshape(got.shape)
            assert np.array_equal(got.numpy(), want.astype(got.numpy().dtype))


# --- 6. files that are no regular file ----------------------------------------------------------------------


def test_an_idx_file_that_is_a_directory_is_named(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    (directory / "train-labels-idx1-ubyte").unlink()
    (directory / "train-labels-idx1-ubyte").mkdir()
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, "train-labels-idx1-ubyte: is a directory, not an IDX file")


def test_an_idx_file_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    directory = write_idx_dataset(tmp_path / "d")
    (directory / "t10k-images-idx3-ubyte").unlink()
    os.mkfifo(directory / "t10k-images-idx3-ubyte")
    with deadline(20), pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, "t10k-images-idx3-ubyte: is a FIFO (named pipe), not an IDX file")


def test_a_file_swapped_for_a_fifo_after_the_check_is_refused_when_opened(tmp_path):
    fifo = tmp_path / "train-images-idx3-ubyte"
    os.mkfifo(fifo)
    with deadline(20), pytest.raises(DataError) as err:
        read_idx(fifo, 3)
    one_line(err, "is a FIFO (named pipe), not an IDX file")


def test_idx_and_folder_names_that_are_files_or_loops(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"idx:.*file: is a file, not a directory"):
        load_dataset(f"idx:{tmp_path / 'file'}")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for kind in ("idx", "folder"):
        with pytest.raises(DataError) as err:
            load_dataset(f"{kind}:{tmp_path / 'loop'}", log=quiet)
        one_line(err, f"{kind}:{tmp_path / 'loop'}: cannot be read (symlink loop)")


# --- 5. operating-system errors: unreadable files, read-only home, full disk -------------------------------


def test_an_unreadable_idx_file_is_named_with_the_fix(tmp_path, monkeypatch):
    directory = write_idx_dataset(tmp_path / "d")
    fail_os(monkeypatch, "open", directory / "train-labels-idx1-ubyte", errno.EACCES)
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, f"{directory / 'train-labels-idx1-ubyte'}: cannot be read (permission denied)", "chmod")


def test_an_unlistable_idx_directory_is_named(tmp_path, monkeypatch):
    directory = write_idx_dataset(tmp_path / "d")
    (directory / "train-images-idx3-ubyte").rename(directory / "kmnist-train-imgs-idx3-ubyte")  # forces a listing
    fail_os(monkeypatch, "scandir", directory, errno.EACCES)
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, f"{directory}: cannot be read (permission denied)")


def test_an_untraversable_data_dir_is_named(tmp_path, monkeypatch):
    directory = write_idx_dataset(tmp_path / "d")
    fail_os(monkeypatch, "stat", directory / "train-images-idx3-ubyte", errno.EACCES)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=directory, download=False, log=quiet)
    one_line(err, "train-images-idx3-ubyte: cannot be read (permission denied)")


def tiny_spec(directory: Path, **changes) -> DatasetSpec:
    md5 = {role: hashlib.md5((directory / base).read_bytes()).hexdigest() for role, (base, _) in ROLES.items()}
    return DatasetSpec(**{"name": "tiny", "md5": md5, "mirrors": (), "classes": tuple("0123456789"),
                          "mean": 0.5, "std": 0.25, **changes})


def served_by_fake_source(monkeypatch, directory: Path, calls: list | None = None) -> DatasetSpec:
    """A catalog entry 'tiny' whose only download source serves ``directory``'s files (verified like any)."""
    spec = tiny_spec(directory, extra_sources=("fake",))

    def fake(s, log):
        if calls is not None:
            calls.append(1)
        arrays = {role: decode_idx((directory / base).read_bytes(), base, nd) for role, (base, nd) in ROLES.items()}
        return sources.Found(arrays, "fake source")

    monkeypatch.setitem(sources.EXTRA_SOURCES, "fake", fake)
    monkeypatch.setitem(catalog.CATALOG, "tiny", spec)
    return spec


def test_a_read_only_home_keeps_the_verified_download_uncached(tmp_path, monkeypatch):
    src = write_idx_dataset(tmp_path / "src")
    served_by_fake_source(monkeypatch, src)
    home = tmp_path / "home"
    read_only(monkeypatch, home)
    messages = []
    d = load_dataset("tiny", home=home, log=messages.append)
    assert d.train_images.shape == (256, 1, 28, 28) and d.source == "fake source"
    warnings = [m for m in messages if m.startswith("warning")]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert f"could not cache tiny in {home / 'datasets' / 'tiny'} (read-only file system)" in warnings[0]
    assert "going on with the verified files, uncached" in warnings[0] and "CNNLAB_HOME" in warnings[0]
    assert not any("cached in" in m for m in messages)
    assert not home.exists()



def test_data_fetch_into_a_read_only_home_says_it_did_not_cache(tmp_path, monkeypatch, capsys):
    """'data fetch' is asked to cache: its exit says whether it did (it said 'not cached' and exited 0)."""
    from cnnlab.cli import main

    served_by_fake_source(monkeypatch, write_idx_dataset(tmp_path / "src"))
    home = tmp_path / "home"
    read_only(monkeypatch, home)
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    assert main(["data", "fetch", "tiny"]) == 2
    out, err = capsys.readouterr()
    assert "tiny: 256 train" in out and err.count("cnnlab: error:") == 1
    assert f"tiny is verified but could not be cached in {home / 'datasets' / 'tiny'}" in err
    # files given with --data-dir are verified and cached too (a later command finds them offline): not here
    assert main(["data", "fetch", "tiny", "--data-dir", str(tmp_path / "src")]) == 2
    out, err = capsys.readouterr()
    assert f"from data dir {tmp_path / 'src'}" in out and "could not be cached" in err


def test_a_full_disk_while_caching_leaves_the_old_cache_whole(tmp_path, monkeypatch):
    src = write_idx_dataset(tmp_path / "src")
    spec = served_by_fake_source(monkeypatch, src)
    home = tmp_path / "home"
    cache = home / "datasets" / "tiny"
    cache.mkdir(parents=True)
    (cache / "t10k-labels-idx1-ubyte.gz").write_bytes(b"an old, damaged cache file")
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    written = []
    real_fsync = os.fsync

    def fsync(fd):  # the third file written under the home fills the disk
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(home)):
            written.append(fd)
            if len(written) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    messages = []
    d = load_dataset("tiny", home=home, log=messages.append)
    assert len(d.train_labels) == 256
    assert any("could not cache tiny" in m and "no space left on device" in m and "free some space" in m
               for m in messages)
    assert not any("cached in" in m for m in messages)
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before  # nothing replaced, no temp files
    assert spec.name == "tiny"


def test_an_unreadable_cache_is_one_line_and_never_fetched_again_over(tmp_path, monkeypatch):
    """Every file of the cache unreadable (EACCES): it was fetched again and replaced, though the files may be whole
    (another user's, a disk that failed a read); now one line naming the file and the fix, nothing fetched or
    written (since the fltF sweep: a read error is not damage)."""
    src = write_idx_dataset(tmp_path / "src")
    calls = []
    served_by_fake_source(monkeypatch, src, calls)
    home = tmp_path / "home"
    load_dataset("tiny", home=home, log=quiet)
    victim = home / "datasets" / "tiny"  # every file in it (the .gz files and their fast copy) unreadable
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in victim.iterdir()}
    with monkeypatch.context() as m:
        fail_os(m, "open", victim, errno.EACCES, when=lambda path, flags, *a, **k: not flags & os.O_CREAT)
        messages = []
        with pytest.raises(DataError, match=r"tiny/train-images-idx3-ubyte\.gz: cannot be read \(permission denied\); "
                                            r"fix its permissions .*; or set CNNLAB_HOME to another directory \(the "
                                            r"cache is left as it is\)$"):
            load_dataset("tiny", home=home, log=messages.append)
    assert len(calls) == 1 and not any("fetching again" in m for m in messages)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in victim.iterdir()} == before
    assert load_dataset("tiny", home=home, download=False, log=quiet).source.startswith("cache")


def test_data_info_on_an_unreadable_cache_reports_it(tmp_path, monkeypatch, capsys):
    from cnnlab.cli import main

    src = write_idx_dataset(tmp_path / "src")
    served_by_fake_source(monkeypatch, src)
    home = Path(os.environ["CNNLAB_HOME"])
    load_dataset("tiny", log=quiet)
    fail_os(monkeypatch, "stat", home / "datasets", errno.EACCES)
    fail_os(monkeypatch, "scandir", home / "datasets", errno.EACCES)
    fail_os(monkeypatch, "open", home / "datasets", errno.EACCES)
    rows = {r["name"]: r for r in dataset_status()}
    assert rows["tiny"]["status"].startswith("cache unreadable")
    assert all("cannot be read (permission denied)" in f["status"] for f in rows["tiny"]["files"])
    assert rows["folder:*"]["status"].startswith("cache unreadable")
    assert main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert "tiny: cache unreadable" in out and "Traceback" not in out


def test_a_failed_download_cache_write_after_a_verified_download_is_not_logged_as_cached(tmp_path, monkeypatch):
    src = write_idx_dataset(tmp_path / "src")
    served_by_fake_source(monkeypatch, src)
    home = tmp_path / "home-is-a-file"
    home.write_text("not a directory")
    messages = []
    d = load_dataset("tiny", home=home, log=messages.append)
    assert len(d.test_labels) == 64
    assert sum(m.startswith("warning: could not cache tiny") for m in messages) == 1
    assert not any("cached in" in m for m in messages)
    assert home.read_text() == "not a directory"


# --- 6. the cache under concurrent writers ------------------------------------------------------------------


WRITER = """
import sys
import numpy as np
from pathlib import Path
from cnnlab.data import sources
from cnnlab.data.catalog import ROLES, DatasetSpec
from cnnlab.data.fastcopy import load_fast_copy
from cnnlab.data.idx import decode_idx, md5

src, home, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
files = {role: (src / base).read_bytes() for role, (base, _) in ROLES.items()}
spec = DatasetSpec(name="tiny", md5={r: md5(b) for r, b in files.items()}, mirrors=(), classes=tuple("0123456789"),
                   mean=0.5, std=0.25)
arrays = {r: decode_idx(b, r, ROLES[r][1]) for r, b in files.items()}
for _ in range(rounds):
    sources.write_cache(spec, arrays, home)
    found = sources.from_cache(spec, home, print)
    assert found is not None and all(np.array_equal(found.arrays[r], arrays[r]) for r in ROLES)
print("ok")
"""


def test_concurrent_fetches_leave_a_valid_cache(tmp_path):
    src = write_idx_dataset(tmp_path / "src")
    home = tmp_path / "home"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(src), str(home), "15"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 and out.strip().endswith("ok") for p, out in zip(procs, outs)), outs
    spec = tiny_spec(src)
    found = sources.from_cache(spec, home, quiet)  # verified by MD5 or from a matching fast copy
    assert found is not None
    cache = home / "datasets" / "tiny"
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".")]  # no staging folders or temp files
    copy = load_fast_copy(spec, cache)  # the fast copy the writers left matches, or was just rewritten
    assert copy.arrays is not None, copy.problem
    assert all(np.array_equal(copy.arrays[r], found.arrays[r]) for r in ROLES)


def test_stale_staging_folders_of_killed_writers_are_removed(tmp_path):
    src = write_idx_dataset(tmp_path / "src")
    spec = tiny_spec(src)
    cache = tmp_path / "home" / "datasets" / "tiny"
    stale, fresh = cache / ".incoming-1-dead", cache / ".incoming-2-live"
    for d in (stale, fresh):
        d.mkdir(parents=True)
        (d / "x.gz").write_bytes(b"partial")
    os.utime(stale, (0, 0))
    arrays = {role: decode_idx((src / base).read_bytes(), base, nd) for role, (base, nd) in ROLES.items()}
    sources.write_cache(spec, arrays, tmp_path / "home")
    assert not stale.exists() and fresh.exists()  # a live writer's folder is left alone


# --- 3 and 6. folder: links, permissions, FIFOs, huge files, many files ------------------------------------


def make_pics(root: Path, classes=("a", "b"), n: int = 4) -> Path:
    from PIL import Image

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((28, 28), 30 * c + 5 * i, np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_symlink_loop_among_a_class_folders_images_is_skipped_and_named(tmp_path):
    root = make_pics(tmp_path / "pics")
    (root / "a" / "loop.png").symlink_to(root / "a" / "loop.png")
    messages = []
    d = load_dataset(f"folder:{root}", log=messages.append)
    assert len(d.train_labels) + len(d.test_labels) == 8
    (warning,) = [m for m in messages if m.startswith("warning")]
    assert "a/loop.png: cannot be read (symlink loop)" in warning


def test_a_symlink_loop_where_a_class_folder_would_be_is_named(tmp_path):
    root = make_pics(tmp_path / "pics")
    (root / "c").symlink_to(root / "c")
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}", log=quiet)
    one_line(err, f"{root / 'c'} cannot be read (symlink loop)", "remove the symbolic link")


def test_a_class_folder_linking_to_the_dataset_folder_is_refused(tmp_path):
    root = make_pics(tmp_path / "pics")
    (root / "c").symlink_to(root)
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}", log=quiet)
    one_line(err, "class folder c is a link to the dataset folder itself", "remove the link")


def test_a_class_folder_without_permission_is_named_not_called_empty(tmp_path, monkeypatch):
    root = make_pics(tmp_path / "pics")
    fail_os(monkeypatch, "scandir", root / "b", errno.EACCES)
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}", log=quiet)
    msg = one_line(err, "folder b cannot be read (permission denied)", "chmod")
    assert "has no PNG" not in msg


def test_an_unreadable_image_file_is_skipped_and_named(tmp_path, monkeypatch):
    root = make_pics(tmp_path / "pics")
    fail_os(monkeypatch, "open", root / "a" / "2.png", errno.EACCES)
    messages = []
    d = load_dataset(f"folder:{root}", log=messages.append)
    assert len(d.train_labels) + len(d.test_labels) == 7
    assert any("a/2.png: cannot be read (permission denied)" in m for m in messages if m.startswith("warning"))


def test_a_fifo_named_like_an_image_is_skipped_without_blocking(tmp_path):
    root = make_pics(tmp_path / "pics")
    os.mkfifo(root / "a" / "pipe.png")
    messages = []
    with deadline(20):
        load_dataset(f"folder:{root}", log=messages.append)
    assert any("a/pipe.png: is a FIFO (named pipe), not an image file" in m for m in messages)


def test_a_huge_file_named_like_an_image_is_skipped_unread(tmp_path):
    root = make_pics(tmp_path / "pics")
    with open(root / "b" / "huge.png", "wb") as fh:  # sparse: 2 GB that take no disk
        fh.truncate(2 << 30)
    messages = []
    peak, raised = peak_bytes(lambda: load_dataset(f"folder:{root}", log=messages.append))
    assert raised is None and peak < 64 << 20
    assert any("b/huge.png: 2,147,483,648 bytes, larger than an image" in m for m in messages)


def test_a_class_with_images_only_in_test_is_refused(tmp_path):
    root = tmp_path / "pics"
    make_pics(root / "train", classes=("a", "b"))
    make_pics(root / "test", classes=("a", "b"))
    for p in (root / "train" / "a").iterdir():
        p.write_bytes(b"")  # every train image of class a unreadable
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}", log=quiet)
    one_line(err, "class(es) a have none")


def test_many_tiny_files_convert_in_bounded_memory_with_one_short_warning(tmp_path):
    """Thousands of files, most of them unreadable: one warning of at most 50 names, the rest in skipped.txt."""
    root = make_pics(tmp_path / "pics", n=3)
    for name in ("a", "b"):
        for i in range(2500):
            (root / name / f"junk{i:05d}.png").write_bytes(b"\x89PNG")
    messages = []
    peak, raised = peak_bytes(lambda: load_dataset(f"folder:{root}", log=messages.append))
    assert raised is None, raised
    (warning,) = [m for m in messages if m.startswith("warning")]
    assert "skipped 5000 unreadable" in warning and "... and 4950 more" in warning
    assert len(warning.splitlines()) == 52
    assert peak < 64 << 20, f"peak {peak:,} bytes"


# --- the engine's entry point ----------------------------------------------------------------------------


def test_validate_dataset_is_what_load_dataset_checks(tmp_path):
    from cnnlab.data import Dataset, validate_dataset

    x = torch.zeros((4, 1, 8, 8), dtype=torch.uint8)
    y = torch.tensor([0, 1, 0, 1])
    with pytest.raises(DataError, match="images are 8x8 pixels, too small"):
        validate_dataset(Dataset("mine", x, y, x, y, ("0", "1"), 0.0, 1.0, "test"))
    big = torch.zeros((4, 1, 28, 28), dtype=torch.uint8)
    validate_dataset(Dataset("mine", big, y, big, y, ("0", "1"), 0.0, 1.0, "test"))


def test_downloads_are_read_in_bounded_chunks_and_refused_past_the_limit():
    from cnnlab.data.safefs import read_bounded

    assert read_bounded(io.BytesIO(b"x" * 3000), 3000, "url") == b"x" * 3000
    with pytest.raises(DataError, match="url: more than 2,999 bytes"):
        read_bounded(io.BytesIO(b"x" * 3000), 2999, "url")


def test_a_mirror_serving_a_bomb_is_skipped_for_the_next_source(tmp_path, monkeypatch):
    src = write_idx_dataset(tmp_path / "src")
    spec = served_by_fake_source(monkeypatch, src)
    monkeypatch.setitem(catalog.CATALOG, "tiny", DatasetSpec(**{**spec.__dict__, "mirrors": ("http://bad.invalid/",)}))
    monkeypatch.delenv("CNNLAB_MIRRORS")
    monkeypatch.setattr(sources, "_open", lambda url, timeout: io.BytesIO(gzip_bomb(64 << 20)))
    messages = []
    peak, raised = peak_bytes(lambda: load_dataset("tiny", log=messages.append))
    assert raised is None and peak < 64 << 20
    assert any(m.startswith("mirror http://bad.invalid/: ") and "bad IDX magic" in m for m in messages)


def test_a_class_folder_name_with_a_newline_is_refused(tmp_path):
    root = make_pics(tmp_path / "pics", classes=("a", "b\nc"))
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}", log=quiet)
    one_line(err, "class folder 'b\\nc' has a control character", "rename it")


@pytest.mark.parametrize("name", ["\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian, a ZWNJ inside
                                  "\U0001F468\u200d\U0001F469\u200d\U0001F467",  # an emoji family joined by ZWJ
                                  "\u2764\ufe0f", "a\xa0b", "\u65e5\u672c\u3000\u8a9e", "\ue000", "\U0001FAE9"])
def test_class_folder_names_that_are_words_or_emoji_are_accepted(tmp_path, name):
    """A Persian word with ZWNJ, the emoji family 👨‍👩‍👧 (ZWJ) and ❤️ (VS16) were refused as "a control character (a
    newline?)" (str.isprintable is False for format characters); so were a no-break space, an ideographic space, a
    private-use character and one newer than Python's Unicode tables (U+1FAE9, Unicode 16)."""
    root = make_pics(tmp_path / "pics", classes=("a", name))
    assert name in load_dataset(f"folder:{root}", log=quiet).classes


@pytest.mark.parametrize("name, char, looks", [
    ("b\u200bc", "U+200B (ZERO WIDTH SPACE)", ": it would look like 'bc' in every message"),
    ("\ufeffb", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)", ": it would look like 'b' in every message"),
    ("so\xadft", "U+00AD (SOFT HYPHEN)", ": it would look like 'soft' in every message"),
    ("b\u2060c", "U+2060 (WORD JOINER)", ": it would look like 'bc' in every message"),
    ("b\u202ec", "U+202E (RIGHT-TO-LEFT OVERRIDE)", ", a bidirectional control: in every message, table and plot the "
     "characters around it could show in another order than they have"),
    ("\u2067b", "U+2067 (RIGHT-TO-LEFT ISOLATE)", ", a bidirectional control"),
])
def test_an_invisible_character_in_a_class_folder_name_is_refused_by_its_name(tmp_path, name, char, looks):
    """A zero-width space, a BOM, a soft hyphen, bidi controls: refused, as before, but named (they were "a control
    character (a newline?)")."""
    root = make_pics(tmp_path / "pics", classes=("a", name))
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}", log=quiet)
    one_line(err, f"class folder {name!r} has an invisible {char} in its name{looks}", "; rename it")


def test_a_class_folder_name_that_is_not_utf8_is_refused_as_such(tmp_path):
    """A Latin-1 'café' folder (byte 0xE9, read as the surrogate \\udce9) was "a control character (a newline?)"."""
    root = make_pics(tmp_path / "pics", classes=("cat", os.fsdecode(b"caf\xe9")))
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}", log=quiet)
    one_line(err, "class folder $'caf\\xe9' is not UTF-8 (byte 0xE9 at offset 3 of its name; in Latin-1 it reads "
                  "'caf\xe9'): run records and exported nets could keep it only as 'caf\\udce9'", "rename it in UTF-8")


def test_a_line_separator_in_a_class_folder_name_is_a_line_break(tmp_path):
    root = make_pics(tmp_path / "pics", classes=("a", "b\u2028c"))
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}", log=quiet)
    one_line(err, "class folder 'b\\u2028c' has a line break, U+2028 (LINE SEPARATOR), in its name", "rename it")


@pytest.mark.parametrize("names, shown, how", [
    (("e\u0301", "\xe9", "z"), "'e\u0301' ('e\\u0301') and '\xe9' ('\\xe9')",
     "their Unicode form (one is decomposed, NFD, as macOS writes names)"),
    (("x", "x ", "y"), "'x' and 'x '", "the white space around one"),
    (("a b", "a\xa0b"), "'a b' and 'a\\xa0b'",  # a no-break space, now accepted, is not a look-alike of ' '
     "the kind of space in them (U+00A0 (NO-BREAK SPACE) for ' ')"),
    ((" \xe9", "e\u0301"), "' \xe9' (' \\xe9') and 'e\u0301' ('e\\u0301')", "their Unicode form (one is decomposed, NFD, as macOS "
     "writes names) and in the white space around one"),
])
def test_class_folders_whose_names_read_the_same_are_refused_naming_both(tmp_path, names, shown, how):
    """Folders 'é' (NFC) and 'é' (NFD, as copied from macOS), or 'x' and 'x ', became two classes without a word:
    evaluate printed two 'é' rows, predict 'x 36.6% é 33.0% é 16.8% x 13.6%'. Refused as a zero-width space is (and,
    now that a no-break space is accepted, 'a b' beside 'a<no-break space>b')."""
    root = make_pics(tmp_path / "pics", classes=names)
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}", log=quiet)
    one_line(err, f"class folders {shown} read as one name, differing only in {how}: they would be two classes that "
                  "look the same in every message, table and plot; rename one of them")


def test_a_test_class_folder_that_is_a_train_one_written_another_way_is_named_so(tmp_path):
    make_pics(tmp_path / "pics" / "train", classes=("\xe9", "b"))
    make_pics(tmp_path / "pics" / "test", classes=("e\u0301", "b"))
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{tmp_path / 'pics'}", log=quiet)
    one_line(err, "test/ has class folders that train/ lacks", "'e\u0301' ('e\\u0301') is '\xe9' ('\\xe9') written another way")


def test_a_folder_dataset_in_a_read_only_home_converts_uncached_with_one_warning(tmp_path, monkeypatch):
    root = make_pics(tmp_path / "pics")
    home = tmp_path / "home"
    read_only(monkeypatch, home)
    messages = []
    d = load_dataset(f"folder:{root}", home=home, log=messages.append)
    assert len(d.train_labels) + len(d.test_labels) == 8 and "converted now" in d.source
    (warning,) = [m for m in messages if m.startswith("warning")]
    assert "could not cache the converted images" in warning and "(read-only file system)" in warning
    assert "\n" not in warning and not home.exists()
    assert not any("cached in" in m for m in messages) and "cached in" not in d.source
