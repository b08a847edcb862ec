"""The cache's fast copy (cnnlab.data.fastcopy): written once after an MD5 verification, used only when all of
it matches, bit-identical to the verified slow path, and anything that does not match falls back to the slow
path, which writes it again. ``data info`` says how it checked what it calls verified."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import catalog, load_dataset, sources
from cnnlab.data import fastcopy as fc
from cnnlab.data.catalog import ROLES, DatasetSpec
from cnnlab.data.idx import decode_idx
from cnnlab.data.status import dataset_status
from apps_helpers import quiet
from conftest import write_idx_dataset
from test_data_hostile import read_only

TENSORS = ("train_images", "train_labels", "test_images", "test_labels")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A catalog entry 'tiny' downloadable from a fake source; returns (spec, home, calls to the source)."""
    src = write_idx_dataset(tmp_path / "src", n_train=300, n_test=60, seed=5)
    md5 = {role: hashlib.md5((src / base).read_bytes()).hexdigest() for role, (base, _) in ROLES.items()}
    spec = DatasetSpec(name="tiny", md5=md5, mirrors=(), classes=tuple("0123456789"), mean=0.5, std=0.25,
                       extra_sources=("fake",))
    calls = []

    def fake(s, log):
        calls.append(1)
        return sources.Found({r: decode_idx((src / b).read_bytes(), b, n) for r, (b, n) in ROLES.items()}, "fake")

    monkeypatch.setitem(sources.EXTRA_SOURCES, "fake", fake)
    monkeypatch.setitem(catalog.CATALOG, "tiny", spec)
    return spec, tmp_path / "home", calls


def count_md5_reads(monkeypatch) -> list:
    """Record every IDX file read with its MD5 (the slow path)."""
    reads = []
    real = sources.read_idx

    def spy(path, ndim, want_md5=False):
        reads.append(Path(path).name)
        return real(path, ndim, want_md5)

    monkeypatch.setattr(sources, "read_idx", spy)
    return reads


def same(a, b) -> bool:
    return all(torch.equal(getattr(a, t), getattr(b, t)) and getattr(a, t).dtype == getattr(b, t).dtype
               for t in TENSORS)


def test_the_fast_copy_is_written_after_verification_and_used_bit_identically(tiny, monkeypatch):
    spec, home, calls = tiny
    first = load_dataset("tiny", home=home, log=quiet)  # downloaded, verified, cached with its fast copy
    cache = home / "datasets" / "tiny"
    manifest = json.loads((cache / fc.MANIFEST).read_text())
    assert manifest["format"] == 1 and {e["md5"] for e in manifest["files"].values()} == set(spec.md5.values())
    reads = count_md5_reads(monkeypatch)
    fast = load_dataset("tiny", home=home, log=quiet)
    assert reads == [] and len(calls) == 1  # neither the .gz files nor a source were read
    slow = load_dataset("tiny", home=home, log=quiet, full_check=True)
    assert len(reads) == 4
    assert same(first, fast) and same(fast, slow)
    fast.train_images[0, 0, 0, 0] = 7  # writable memory, not a read-only map of the file


@pytest.mark.parametrize("damage, note", [
    (lambda c: _flip(c / "train-images-idx3-ubyte.npy", -100), "CRC-32 of its data does not match"),
    (lambda c: _cut(c / "t10k-images-idx3-ubyte.npy"), "bytes, the manifest says 47"),
    (lambda c: (c / "train-labels-idx1-ubyte.npy").unlink(), "cannot be read (no such file or directory)"),
    (lambda c: (c / fc.MANIFEST).write_text("{not json"), "not valid JSON"),
    (lambda c: os.utime(c / "t10k-labels-idx1-ubyte.gz", ns=(1, 1)), "changed since it was verified"),
    (lambda c: _edit_manifest(c, lambda m: m["files"]["train_images"].update(shape=[10**6, 10**4, 10**4])),
     "too large"),
    (lambda c: _edit_manifest(c, lambda m: m["files"]["test_images"].update(shape=[60, 28, 29])), "for shape [60, 28, 29]"),
    (lambda c: _flip(c / "train-labels-idx1-ubyte.npy", 10), "its .npy header is not that of a uint8 array"),
])
def test_a_fast_copy_that_does_not_match_falls_back_to_md5_and_is_rewritten(tiny, monkeypatch, damage, note):
    _, home, calls = tiny
    first = load_dataset("tiny", home=home, log=quiet)
    cache = home / "datasets" / "tiny"
    damage(cache)
    reads = count_md5_reads(monkeypatch)
    messages = []
    again = load_dataset("tiny", home=home, log=messages.append)
    assert same(first, again) and len(reads) == 4 and len(calls) == 1
    (line,) = [m for m in messages if m.startswith("note: the fast copy of tiny")]
    assert note in line and "verifying the cached files by MD5 instead and writing it again" in line
    reads.clear()
    third = load_dataset("tiny", home=home, log=quiet)  # the rewritten fast copy is used again
    assert reads == [] and same(first, third)


def test_a_changed_catalog_checksum_makes_the_fast_copy_a_miss(tiny, monkeypatch):
    spec, home, _ = tiny
    load_dataset("tiny", home=home, log=quiet)
    changed = DatasetSpec(**{**spec.__dict__, "md5": {**spec.md5, "test_labels": "0" * 32}})
    copy = fc.load_fast_copy(changed, home / "datasets" / "tiny")
    assert copy.arrays is None and "verified against another checksum" in copy.problem


def test_a_cache_without_a_fast_copy_gets_one_quietly(tiny, monkeypatch):
    _, home, _ = tiny
    first = load_dataset("tiny", home=home, log=quiet)
    cache = home / "datasets" / "tiny"
    for p in cache.iterdir():
        if p.suffix in (".npy", ".json"):
            p.unlink()  # a cache written before fast copies existed
    messages = []
    again = load_dataset("tiny", home=home, log=messages.append)
    assert messages == [] and same(first, again) and (cache / fc.MANIFEST).is_file()


def test_a_fast_copy_that_cannot_be_written_is_one_warning(tiny, monkeypatch):
    _, home, _ = tiny
    first = load_dataset("tiny", home=home, log=quiet)
    cache = home / "datasets" / "tiny"
    (cache / fc.MANIFEST).unlink()
    read_only(monkeypatch, home)
    messages = []
    again = load_dataset("tiny", home=home, log=messages.append)
    assert same(first, again)
    (warning,) = messages
    assert warning.startswith(f"warning: could not write the fast copy of tiny in {cache} (read-only file system)")
    assert "CNNLAB_HOME" in warning and "\n" not in warning


def test_data_info_says_how_it_checked(tiny, monkeypatch, capsys):
    from cnnlab.cli import main

    _, home, _ = tiny
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    load_dataset("tiny", log=quiet)
    reads = count_md5_reads(monkeypatch)
    monkeypatch.setattr("cnnlab.data.status.read_idx", sources.read_idx)  # count the status's reads too
    row = {r["name"]: r for r in dataset_status()}["tiny"]
    assert reads == [] and row["status"] == "cached and verified"
    assert row["checked"].startswith("md5 when cached (") and "fast copy crc32 now" in row["checked"]
    gz = [f for f in row["files"] if f["file"].endswith(".gz")]
    assert all(f["status"].startswith("verified (md5 ok when cached, ") for f in gz)
    assert [f["status"] for f in row["files"] if f["file"].endswith(".npy")] == ["fast copy (crc32 ok now)"] * 4
    # --verify: every .gz file's MD5 now
    row = {r["name"]: r for r in dataset_status(full_check=True)}["tiny"]
    assert len(reads) == 4 and row["checked"] == "md5 now" and row["status"] == "cached and verified"
    assert all(f["status"] == "verified (md5 ok)" for f in row["files"] if f["file"].endswith(".gz"))
    # a touched .gz file: the fast copy is not trusted, the MD5 is checked now
    os.utime(home / "datasets" / "tiny" / "train-images-idx3-ubyte.gz", ns=(1, 1))
    reads.clear()
    row = {r["name"]: r for r in dataset_status()}["tiny"]
    assert len(reads) == 4 and row["checked"] == "md5 now"
    assert {"file": fc.MANIFEST, "bytes": row["files"][-1]["bytes"],
            "status": "fast copy does not match (rewritten on the next load)"} == row["files"][-1]
    assert main(["data", "info", "--verify"]) == 0
    assert "checked: md5 now" in capsys.readouterr().out


def test_data_fetch_checks_md5_now(tiny, monkeypatch, capsys):
    from cnnlab.cli import main

    _, home, _ = tiny
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    load_dataset("tiny", log=quiet)
    reads = count_md5_reads(monkeypatch)
    assert main(["data", "fetch", "tiny"]) == 0
    assert len(reads) == 4 and "verified by MD5" in capsys.readouterr().out


@pytest.mark.real_data
def test_real_mnist_fast_copy_is_bit_identical_to_the_verified_files(tmp_path):
    real = sources.cache_dir(catalog.MNIST)
    if not all((real / (base + ".gz")).is_file() for base, _ in ROLES.values()):
        pytest.skip(f"no cached MNIST in {real}")
    cache = tmp_path / "home" / "datasets" / "mnist"
    cache.mkdir(parents=True)
    for base, _ in ROLES.values():
        shutil.copy2(real / (base + ".gz"), cache / (base + ".gz"))
    home = tmp_path / "home"
    slow = load_dataset("mnist", home=home, download=False, log=quiet, full_check=True)
    assert (cache / fc.MANIFEST).is_file()
    fast = load_dataset("mnist", home=home, download=False, log=quiet)
    assert same(slow, fast) and fast.train_images.shape == (60000, 1, 28, 28)
    # and the bytes are those of the official files, unpacked
    import gzip

    raw = gzip.decompress((cache / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert np.array_equal(fast.test_images[:, 0].numpy(), np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


def _edit_manifest(cache: Path, change) -> None:
    m = json.loads((cache / fc.MANIFEST).read_text())
    change(m)
    (cache / fc.MANIFEST).write_text(json.dumps(m))


def test_errno_names_are_what_the_messages_use():
    from cnnlab.data.safefs import reason

    assert reason(OSError(errno.EROFS, "x")) == "read-only file system"
    assert reason(OSError(errno.ENOSPC, "x")) == "no space left on device"
