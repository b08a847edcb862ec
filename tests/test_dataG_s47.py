"""Fixes of the s47 probe (many): concurrent fetches and the cache's fast copy (D4), a ``folder:`` dataset's path
with control characters in its log lines (D5), and a ``folder:`` dataset with a sub-folder 1,000 levels deep (D6)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import load_dataset, sources
from cnnlab.data.catalog import ROLES
from cnnlab.data.fastcopy import load_fast_copy
from cnnlab.data.idx import decode_idx
from cnnlab.errors import DataError
from apps_helpers import one_line
from conftest import write_idx_dataset
from test_data_hostile import make_pics, tiny_spec


def _tiny_found(tmp_path: Path):
    src = write_idx_dataset(tmp_path / "src", n_train=40, n_test=10)
    arrays = {role: decode_idx((src / base).read_bytes(), base, nd) for role, (base, nd) in ROLES.items()}
    return tiny_spec(src), sources.Found(arrays, "test")


def test_two_fetches_at_once_leave_gz_files_and_a_fast_copy_of_one_writer(tmp_path, monkeypatch):
    """D4: writer B's .gz group landed after writer A had taken the stats of its own .gz files and before A wrote
    its manifest: A's fast copy then recorded files no longer there ("changed since it was verified")."""
    spec, found = _tiny_found(tmp_path)
    home, real, others = tmp_path / "home", sources.write_fast_copy, []

    def write_fast_copy(*args):
        if threading.current_thread() is threading.main_thread() and not others:  # writer A, about to write
            others.append(threading.Thread(target=sources.cache_or_warn, args=(spec, found, home, print)))
            time.sleep(0.05)  # a later modification time for B's files
            others[0].start()
            others[0].join(timeout=1.0)  # B runs whole here without the lock; with it, B waits for A
        real(*args)

    monkeypatch.setattr(sources, "write_fast_copy", write_fast_copy)
    assert sources.cache_or_warn(spec, found, home, print) is not None
    others[0].join(timeout=30)
    assert not others[0].is_alive()
    copy = load_fast_copy(spec, sources.cache_dir(spec, home))
    assert copy.problem is None and copy.arrays is not None
    assert all(np.array_equal(copy.arrays[r], found.arrays[r]) for r in ROLES)


def test_a_load_that_read_gz_files_replaced_since_writes_no_fast_copy_of_them(tmp_path):
    """D4, the load's side: a load that verified the .gz files by MD5 while another fetch replaced them recorded the
    stats of the files it read, over the fast copy the fetch had written of its own."""
    spec, found = _tiny_found(tmp_path)
    home = tmp_path / "home"
    directory = sources.cache_or_warn(spec, found, home, print)
    read_then = {role: os.stat(directory / (ROLES[role][0] + ".gz")) for role in ROLES}  # what the slow load read
    time.sleep(0.05)
    sources.cache_or_warn(spec, found, home, print)  # another fetch: new .gz files and their fast copy
    sources.refresh_fast_copy(spec, directory, found.arrays, read_then, print)  # the slow load, done late
    copy = load_fast_copy(spec, directory)
    assert copy.problem is None and copy.arrays is not None


def test_a_folder_datasets_path_with_control_characters_is_escaped_in_every_line_it_logs(tmp_path):
    """D5: ``folder:ds<newline>FAKE: error line<ESC>[31m`` printed its "ignored", "not read", "converting" and
    "damaged" lines with the newline and the escape raw: a line ``FAKE: error line`` of its own, the terminal red."""
    root = tmp_path / "ds\nFAKE: error line\x1b[31m"
    for split in ("train", "test", "val"):
        make_pics(root / split)
    (root / "train" / "a" / "notes.txt").write_text("x")
    lines = []
    load_dataset(f"folder:{root}", log=lines.append)  # converted
    (cache,) = (tmp_path / "home" / "datasets").glob("folder-*/images.npz")
    cache.write_bytes(b"damaged")
    load_dataset(f"folder:{root}", log=lines.append)  # the damaged cache: converted again
    (root / "train" / "a" / "3.png").rename(root / "train" / "a" / "4.png")
    load_dataset(f"folder:{root}", log=lines.append)  # another folder now: converted, the earlier cache removed
    shown = f"folder:{tmp_path}/ds\\nFAKE: error line\\x1b[31m: "
    for words in ("ignored 1 file(s)", "val/ beside train/ and test/ not read", "converting 16 images",
                  "converted cache", "removed the cache of its earlier contents"):
        assert any(line.startswith(shown + words) for line in lines), (words, lines)
    assert not [line for line in lines if not line.isprintable()], lines


def nest(folder: Path, levels: int) -> Path:
    """``folder/d/d/.../d``, ``levels`` deep (made a level at a time: os.makedirs recurses)."""
    for _ in range(levels):
        folder = folder / "d"
        folder.mkdir()
    return folder


@pytest.fixture
def unnest():
    """Folders whose empty ``d/d/...`` chain is removed after the test, deepest first: pytest removes old temporary
    folders with shutil.rmtree, which recurses, and a 1,000-level tree left there is a RecursionError of a later
    run's clean-up."""
    tops = []
    yield tops.append
    for top in tops:
        chain = []
        while (top / "d").is_dir():
            top = top / "d"
            chain.append(top)
        for folder in reversed(chain):
            folder.rmdir()


def test_a_sub_folder_1000_levels_deep_is_refused_in_one_line_in_seconds(tmp_path, monkeypatch, capsys, unnest):
    """D6: ``folder:ds`` whose class a holds a sub-folder 1,000 levels deep: ``cnnlab train --out .r`` ended in a
    ``RecursionError`` traceback after 42 s (``os.walk`` recursed a level at a time; ``_read_folders`` took each
    folder's ``os.path.realpath``, a look at every folder above it)."""
    from cnnlab.cli import main

    data = make_pics(tmp_path / "ds")
    unnest(data / "a")
    nest(data / "a", 1000)
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    assert main(["train", "--model", "basic_cnn", "--dataset", "folder:ds", "--max-steps", "1", "--epochs", "1",
                 "--threads", "1", "--out", ".r"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert (f"folder:{data}: folder a/d/d/d/.../d is more than 100 folders deep below its class folder a, which no "
            "image needs; move its images up, or move it out of the dataset folder") in err
    assert time.monotonic() - started < 20
    with pytest.raises(DataError) as refused:  # the Python API: the same line
        load_dataset(f"folder:{data}")
    one_line(refused, "folder a/d/d/d/.../d is more than 100 folders deep")


def test_images_100_folders_below_their_class_folder_are_read(tmp_path):
    """D6's limit: a folder 100 levels below its class folder is walked and its images read; only one below it is
    refused."""
    data = make_pics(tmp_path / "ds")
    deep = nest(data / "a", 100)
    shutil.copy(data / "a" / "0.png", deep / "9.png")
    d = load_dataset(f"folder:{data}", log=lambda m: None)
    assert len(d.train_labels) + len(d.test_labels) == 9
    nest(deep, 1)
    with pytest.raises(DataError) as refused:
        load_dataset(f"folder:{data}", log=lambda m: None)
    one_line(refused, "folder a/d/d/d/.../d is more than 100 folders deep below its class folder a")
