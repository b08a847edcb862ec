"""Faults of the data package found by a tester: slow, cut-off and hostile mirrors (served by 127.0.0.1 servers the
tests start, each bounded in time), a one-class ``idx:`` dataset, ``~`` in ``CNNLAB_HOME``, ``--data-dir`` with
``idx:``/``folder:``, ``data fetch --data-dir`` caching, and messages that named the wrong thing."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from cnnlab.data import catalog, load_dataset, sources
from cnnlab.data.catalog import ROLES, DatasetSpec
from cnnlab.data.fastcopy import MANIFEST
from cnnlab.data.idx import decode_idx, encode_idx
from cnnlab.data.safefs import reason
from cnnlab.data.status import dataset_status
from cnnlab.errors import DataError
from apps_helpers import deadline, one_line, peak_bytes, quiet
from conftest import make_images, write_idx_dataset

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def tiny(monkeypatch, directory: Path, name: str = "tiny", seed: int = 0, served: bool = False) -> DatasetSpec:
    """A catalog entry ``name`` for a generated dataset written (raw) to ``directory``, its sizes known; with
    ``served``, its last source (after the mirrors) serves ``directory``'s files, as a download would."""
    write_idx_dataset(directory, seed=seed)
    files = {role: (directory / base).read_bytes() for role, (base, _) in ROLES.items()}
    spec = DatasetSpec(name=name, md5={r: hashlib.md5(b).hexdigest() for r, b in files.items()}, mirrors=(),
                       classes=tuple("0123456789"), mean=0.5, std=0.25,
                       unpacked_bytes={r: len(b) for r, b in files.items()},
                       extra_sources=(f"fake-{name}",) if served else ())
    if served:
        arrays = {role: decode_idx(files[role], role, ROLES[role][1]) for role in ROLES}
        monkeypatch.setitem(sources.EXTRA_SOURCES, f"fake-{name}", lambda s, log: sources.Found(arrays, "fake"))
    monkeypatch.setitem(catalog.CATALOG, name, spec)
    return spec


def gz_files(directory: Path) -> dict[str, bytes]:
    """``/<official name>.gz`` -> the gzip of the file in ``directory``: what a mirror serves."""
    return {f"/{base}.gz": gzip.compress((directory / base).read_bytes()) for base, _ in ROLES.values()}


# --- a mirror on 127.0.0.1 ----------------------------------------------------------------------------------

Route = Callable[[BaseHTTPRequestHandler, threading.Event], None]


def body(data: bytes, announce: bool = True) -> Route:
    """200 with ``data`` (and its Content-Length when ``announce``; else the end is the connection's close)."""
    def send(h, _stop):
        h.send_response(200)
        if announce:
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
    return send


def announced(length: int, data: bytes) -> Route:
    """200 announcing ``length`` bytes, then only ``data`` and the connection closed."""
    def send(h, _stop):
        h.send_response(200)
        h.send_header("Content-Length", str(length))
        h.end_headers()
        h.wfile.write(data)
    return send


def trickle(data: bytes, every_s: float, for_s: float) -> Route:
    """200, then ``data`` one byte every ``every_s`` seconds for ``for_s`` seconds, then the connection closed."""
    def send(h, stop):
        h.send_response(200)
        h.end_headers()
        end = time.monotonic() + for_s
        for i in range(len(data)):
            if time.monotonic() >= end or stop.is_set():
                break
            h.wfile.write(data[i:i + 1])
            h.wfile.flush()
            stop.wait(every_s)
    return send


def stream(chunk: bytes, total: int, head: bytes = b"") -> Route:
    """200 without a length: ``head``, then ``chunk`` again and again up to ``total`` bytes, then the close."""
    def send(h, stop):
        h.send_response(200)
        h.end_headers()
        h.wfile.write(head)
        sent = len(head)
        while sent < total and not stop.is_set():
            h.wfile.write(chunk)
            sent += len(chunk)
    return send


def redirect_to_itself(h, _stop) -> None:
    h.send_response(302)
    h.send_header("Location", h.path)
    h.send_header("Content-Length", "0")
    h.end_headers()


@contextlib.contextmanager
def mirror(routes: dict[str, Route]):
    """A mirror on 127.0.0.1 serving ``routes`` (path -> how), 404 for the rest; its base URL ends with ``/``."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # http.server's name
            route = routes.get(self.path)
            try:
                if route is None:
                    self.send_error(404)
                else:
                    route(self, stop)
            except OSError:  # the client gave up on us: what the tests want of it
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


# --- A. a slow mirror; a cut-off download ---------------------------------------------------------------------


def test_a_slow_mirror_is_given_up_on_for_the_next_one(tmp_path, monkeypatch):
    """One byte every 0.2 s (never tripping the 5 s socket timeout) stalled a fetch for as long as the mirror
    liked, then was called a corrupt gzip file to delete: now given up on once too slow, then the next mirror."""
    src = tmp_path / "src"
    tiny(monkeypatch, src)
    # raising=False: on code without these settings the test fails on what it measures, not on an AttributeError
    monkeypatch.setattr(sources, "MIRROR_GRACE_S", 1.0, raising=False)
    monkeypatch.setattr(sources, "MIRROR_MIN_RATE", 1000, raising=False)
    slow = {path: trickle(data, 0.2, 8.0) for path, data in gz_files(src).items()}
    good = {path: body(data) for path, data in gz_files(src).items()}
    messages = []
    with mirror(slow) as slow_url, mirror(good) as good_url, deadline(30):
        monkeypatch.setenv("CNNLAB_MIRRORS", f"{slow_url},{good_url}")
        start = time.monotonic()
        d = load_dataset("tiny", log=messages.append)
        took = time.monotonic() - start
    assert d.source == f"mirror {good_url}" and len(d.train_labels) == 256
    assert took < 5, f"stalled {took:.1f} s on the slow mirror"
    (said,) = [m for m in messages if m.startswith(f"mirror {slow_url}: ")]
    assert "too slow" in said and "train-images-idx3-ubyte.gz" in said and "\n" not in said
    assert "delete it" not in said and "corrupt gzip" not in said
    assert any(m.startswith("tiny: downloading from") for m in messages)  # a word before any wait


def what_the_mirror_said(routes: dict, monkeypatch) -> str:
    """``load_dataset("tiny")`` from a mirror serving ``routes``: refused, and the one line it said of the mirror."""
    messages = []
    with mirror(routes) as url, deadline(30):
        monkeypatch.setenv("CNNLAB_MIRRORS", url)
        with pytest.raises(DataError):
            load_dataset("tiny", log=messages.append)
    (said,) = [m for m in messages if m.startswith(f"mirror {url}: ")]
    return said


@pytest.mark.parametrize("announce", [True, False], ids=["with-length", "without-length"])
def test_a_cut_off_download_is_named_as_such_not_a_file_to_delete(tmp_path, monkeypatch, announce):
    src = tmp_path / "src"
    tiny(monkeypatch, src)
    files = gz_files(src)
    routes = {path: (announced(len(data), data[: len(data) // 2]) if announce else body(data[: len(data) // 2], False))
              for path, data in files.items()}
    said = what_the_mirror_said(routes, monkeypatch)
    assert "cut off" in said and "train-images-idx3-ubyte.gz" in said, said
    assert "delete it" not in said and "\n" not in said


# --- B. a hostile mirror: bounded memory, a cap from the file's known size ------------------------------------


def test_a_mirror_sending_zeros_without_a_length_is_refused_in_bounded_memory(tmp_path, monkeypatch):
    """64 MB of zeros without a Content-Length (the tester sent 1.2 GB: 1.3 GB held before the refusal)."""
    src = tmp_path / "src"
    tiny(monkeypatch, src)
    routes = {path: stream(bytes(1 << 20), 64 << 20) for path in gz_files(src)}
    messages = []
    with mirror(routes) as url, deadline(60):
        monkeypatch.setenv("CNNLAB_MIRRORS", url)
        peak, raised = peak_bytes(lambda: load_dataset("tiny", log=messages.append))
    assert isinstance(raised, DataError) and "no source reachable for tiny" in str(raised)
    assert peak < 8 << 20, f"peak {peak:,} bytes"
    (said,) = [m for m in messages if m.startswith(f"mirror {url}: ")]
    assert "bad IDX magic" in said and "\n" not in said


def test_a_download_is_capped_by_the_files_known_size(tmp_path, monkeypatch):
    """A gzip stream that never ends yet inflates to nothing (empty stored blocks, 5 bytes each): only a cap
    stops it; the catalog knows the file's size, so the cap is that, with a margin, not 1 GiB."""
    src = tmp_path / "src"
    spec = tiny(monkeypatch, src)
    gzip_head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    empty_stored_blocks = b"\x00\x00\x00\xff\xff" * (1 << 16)
    routes = {path: stream(empty_stored_blocks, 32 << 20, gzip_head) for path in gz_files(src)}
    messages = []
    with mirror(routes) as url, deadline(60):
        monkeypatch.setenv("CNNLAB_MIRRORS", url)
        peak, raised = peak_bytes(lambda: load_dataset("tiny", log=messages.append))
    assert isinstance(raised, DataError)
    (said,) = [m for m in messages if m.startswith(f"mirror {url}: ")]
    assert "bytes, far larger than the file can be" in said and "\n" not in said, said
    assert peak < 8 << 20, f"peak {peak:,} bytes"
    from cnnlab.data.download import download_cap

    assert f"more than {download_cap(spec.unpacked_bytes['train_images']):,} bytes" in said


def test_a_download_announcing_more_than_the_file_can_be_is_refused_unread(tmp_path, monkeypatch):
    src = tmp_path / "src"
    tiny(monkeypatch, src)
    routes = {path: announced(10 << 30, b"\x1f\x8b") for path in gz_files(src)}
    said = what_the_mirror_said(routes, monkeypatch)
    assert f"announces {10 << 30:,} bytes" in said and "\n" not in said, said


def test_the_catalogs_caps_fit_the_real_files():
    """Every catalog file's unpacked size is that of its sizes and 28x28 images; the caps hold the real .gz files
    (Fashion-MNIST's train images are 26,421,880 bytes) and stay far below the 1 GiB of an unknown file."""
    from cnnlab.data.download import download_cap

    for spec in catalog.CATALOG.values():
        per_image = {"train_images": 28 * 28, "test_images": 28 * 28, "train_labels": 1, "test_labels": 1}
        for role, (_, ndim) in ROLES.items():
            split = role.split("_")[0]
            assert spec.unpacked_bytes[role] == 4 + 4 * ndim + spec.sizes[split] * per_image[role]
            assert spec.unpacked_bytes[role] < download_cap(spec.unpacked_bytes[role]) < 50 << 20
    assert download_cap(catalog.FASHION_MNIST.unpacked_bytes["train_images"]) > 26_421_880


# --- C. an idx: dataset of one class --------------------------------------------------------------------------


@pytest.mark.parametrize("label", [0, 1], ids=["class-0", "class-1-of-0..1"])
def test_an_idx_dataset_of_one_class_is_refused_like_a_folder_of_one(tmp_path, label):
    """All labels 0: a 1-output net that 'scores' 100%; all labels 1: class 0 unused (allowed, as in EMNIST
    Letters), so again one class learnt. ``folder:`` refuses one class folder; ``idx:`` now the same."""
    directory = write_idx_dataset(tmp_path / "one")
    rng = np.random.default_rng(0)
    for role, n in (("train", 256), ("t10k", 64)):
        labels = np.full(n, label, dtype=np.uint8)
        (directory / f"{role}-labels-idx1-ubyte").write_bytes(encode_idx(labels))
        (directory / f"{role}-images-idx3-ubyte").write_bytes(encode_idx(make_images(labels, rng)))
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{directory}")
    one_line(err, f"idx:{directory}: the labels hold one class ({label}: 256 train, 64 test images)",
             "a classifier needs at least two")


# --- D. ~ in CNNLAB_HOME --------------------------------------------------------------------------------------


def test_a_tilde_in_cnnlab_home_is_expanded(tmp_path, monkeypatch):
    tiny(monkeypatch, tmp_path / "src", served=True)
    user_home, cwd = tmp_path / "user", tmp_path / "cwd"
    user_home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.setenv("CNNLAB_HOME", "~/cnnlab-data")
    monkeypatch.chdir(cwd)
    assert sources.cnnlab_home() == user_home / "cnnlab-data"
    load_dataset("tiny", log=quiet)
    assert (user_home / "cnnlab-data" / "datasets" / "tiny" / "train-images-idx3-ubyte.gz").is_file()
    assert not (cwd / "~").exists()
    assert {r["name"]: r for r in dataset_status()}["tiny"]["cached"]


# --- E. --data-dir with idx: or folder: -----------------------------------------------------------------------


def test_data_dir_with_an_idx_or_folder_dataset_is_refused(tmp_path, monkeypatch, capsys):
    from cnnlab.cli import main

    idx = write_idx_dataset(tmp_path / "idx")
    pics = tmp_path / "pics"
    for cls in ("a", "b"):
        (pics / cls).mkdir(parents=True)
    other = tmp_path / "other"
    other.mkdir()
    for name in (f"idx:{idx}", f"folder:{pics}"):
        with pytest.raises(DataError) as err:
            load_dataset(name, data_dir=other, log=quiet)
        one_line(err, f"--data-dir {other} does nothing for the dataset {name}", "leave --data-dir out")
    assert main(["data", "fetch", f"idx:{idx}", "--data-dir", str(other)]) == 2
    assert "does nothing for the dataset" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--dataset", f"idx:{idx}", "--data-dir", str(other)]) == 2
    assert "does nothing for the dataset" in capsys.readouterr().err
    assert load_dataset(f"idx:{idx}").num_classes == 10  # without it, as before


# --- F. data fetch --data-dir caches --------------------------------------------------------------------------


def test_data_fetch_from_a_data_dir_verifies_and_caches(tmp_path, monkeypatch, capsys):
    """It exited 0 and cached nothing: an offline machine's next command then found no source for the data."""
    from cnnlab.cli import main

    src = tmp_path / "src"
    tiny(monkeypatch, src)
    assert main(["data", "fetch", "tiny", "--data-dir", str(src)]) == 0
    err = capsys.readouterr().err
    home = Path(os.environ["CNNLAB_HOME"])
    assert f"tiny: verified 4 files from data dir {src}; cached in {home / 'datasets' / 'tiny'}" in err
    assert {r["name"]: r for r in dataset_status()}["tiny"]["status"] == "cached and verified"
    for f in src.iterdir():  # the user's copy gone: the cache has it
        f.unlink()
    d = load_dataset("tiny", download=False, log=quiet)
    assert d.source.startswith("cache ") and len(d.train_labels) == 256
    # training with --data-dir still reads the files where they are and leaves the cache alone
    other = tmp_path / "other"
    tiny(monkeypatch, other, name="tiny-other", seed=1)
    load_dataset("tiny-other", data_dir=other, log=quiet)
    assert not (home / "datasets" / "tiny-other").exists()


# --- G. messages that named the wrong thing -------------------------------------------------------------------


def test_a_fifo_at_the_fast_copy_manifest_is_named_with_its_path_as_it_is(tmp_path, monkeypatch):
    tiny(monkeypatch, tmp_path / "src", served=True)
    home = tmp_path / "Home-With-Capitals"
    cache = home / "datasets" / "tiny"
    cache.mkdir(parents=True)
    os.mkfifo(cache / MANIFEST)
    messages = []
    with deadline(30):
        load_dataset("tiny", home=home, log=messages.append)
    (warning,) = [m for m in messages if m.startswith("warning")]
    assert f"({cache / MANIFEST} is a FIFO (named pipe), not a file)" in warning, warning
    assert warning.endswith(": remove it (cnnlab writes its own file there)") and "writable" not in warning


def test_reason_keeps_a_paths_case():
    err = OSError(17, "cannot write /Data/Home/fast-copy.json: it is a FIFO (named pipe)")
    assert reason(err) == "cannot write /Data/Home/fast-copy.json: it is a FIFO (named pipe)"
    assert reason(OSError(999, "Connection refused")) == "connection refused"


def test_a_cnnlab_home_too_long_for_the_file_system_says_so(tmp_path, monkeypatch, capsys):
    from cnnlab.cli import main

    tiny(monkeypatch, tmp_path / "src", served=True)
    home = tmp_path / ("h" * 300)
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    messages = []
    load_dataset("tiny", log=messages.append)
    (warning,) = [m for m in messages if m.startswith("warning")]
    assert "a folder name of 300 bytes" in warning and warning.endswith("set CNNLAB_HOME to a shorter path")
    assert "writable" not in warning
    assert main(["data", "info"]) == 2
    err = capsys.readouterr().err
    assert f"CNNLAB_HOME {home} is too long" in err and err.count("\n") == 1


def test_a_cnnlab_home_that_is_a_file_is_named(tmp_path, monkeypatch, capsys):
    from cnnlab.cli import main

    tiny(monkeypatch, tmp_path / "src", served=True)
    home = tmp_path / "home-is-a-file"
    home.write_text("not a folder")
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    assert main(["data", "info"]) == 2
    err = capsys.readouterr().err
    assert f"CNNLAB_HOME {home} is a file, not a folder" in err and err.count("\n") == 1
    assert main(["data", "fetch", "tiny"]) == 2
    err = capsys.readouterr().err
    (warning,) = [line for line in err.splitlines() if line.startswith("warning")]
    assert f"(CNNLAB_HOME {home} is a file, not a folder)" in warning and "writable" not in warning
    assert home.read_text() == "not a folder"


def test_another_catalog_datasets_files_are_named_and_never_to_be_deleted(tmp_path, monkeypatch):
    """--dataset fashion-mnist --data-dir <MNIST's files>: 'the file is corrupt or not the official release:
    delete it', of a valid file that is the user's own."""
    tiny(monkeypatch, tmp_path / "a", name="tiny-a", seed=1)
    tiny(monkeypatch, tmp_path / "b", name="tiny-b", seed=2)
    with pytest.raises(DataError) as err:
        load_dataset("tiny-b", data_dir=tmp_path / "a", download=False, log=quiet)
    msg = one_line(err, "checksum mismatch for tiny-b train-images-idx3-ubyte",
                   "it is tiny-a's train-images-idx3-ubyte, not tiny-b's", "use the dataset tiny-a for these files")
    assert "delete" not in msg and "corrupt" not in msg
    (tmp_path / "a" / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03" + b"\0\0\0\0" * 3)  # nobody's
    with pytest.raises(DataError) as err:
        load_dataset("tiny-b", data_dir=tmp_path / "a", download=False, log=quiet)
    msg = one_line(err, "checksum mismatch", "not the official release of tiny-b",
                   "pass --data-dir a directory holding tiny-b's official files")
    assert "delete" not in msg


@pytest.mark.skipif(not FASHION_SYSTEM_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_the_real_fashion_mnist_given_as_mnist_is_named(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=FASHION_SYSTEM_DIR, download=False, log=quiet)
    msg = one_line(err, "it is fashion-mnist's train-images-idx3-ubyte, not mnist's")
    assert "delete" not in msg


def test_with_cnnlab_mirrors_set_the_final_error_names_them(tmp_path, monkeypatch):
    tiny(monkeypatch, tmp_path / "src")
    with mirror({}) as url, deadline(30):  # every file 404
        monkeypatch.setenv("CNNLAB_MIRRORS", url)
        with pytest.raises(DataError) as err:
            load_dataset("tiny", log=quiet)
    msg = one_line(err, f"CNNLAB_MIRRORS ({url})", "unset CNNLAB_MIRRORS to try the official mirrors")
    assert "official mirrors," not in msg
    monkeypatch.setenv("CNNLAB_MIRRORS", "")
    with pytest.raises(DataError) as err:
        load_dataset("tiny", log=quiet)
    one_line(err, "no mirror (CNNLAB_MIRRORS is set, and empty)")


def test_a_redirect_loop_is_one_line(tmp_path, monkeypatch):
    src = tmp_path / "src"
    tiny(monkeypatch, src)
    messages = []
    with mirror({path: redirect_to_itself for path in gz_files(src)}) as url, deadline(30):
        monkeypatch.setenv("CNNLAB_MIRRORS", url)
        with pytest.raises(DataError):
            load_dataset("tiny", log=messages.append)
    (said,) = [m for m in messages if m.startswith(f"mirror {url}: ")]
    assert "unreachable (a redirect loop, HTTP 302)" in said and "\n" not in said, said


def test_a_system_package_copy_of_another_version_is_not_called_the_users_to_delete(tmp_path, monkeypatch):
    system = tmp_path / "system"
    spec = tiny(monkeypatch, tmp_path / "src")
    write_idx_dataset(system, seed=5)
    monkeypatch.setitem(catalog.CATALOG, "tiny", dataclasses.replace(spec, system_dirs=(str(system),)))
    with pytest.raises(DataError) as err:
        load_dataset("tiny", download=False, log=quiet)
    one_line(err, "checksum mismatch for tiny", "reinstall the system package")
