"""Fixes of the s47 probe (many): concurrent fetches and the cache's fast copy (D4), a ``folder:`` dataset's path
with control characters in its log lines (D5), and a ``folder:`` dataset with a sub-folder 1,000 levels deep (D6)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from cnnlab.data import load_dataset, sources
from cnnlab.data.catalog import ROLES
from cnnlab.data.fastcopy import load_fast_copy
from cnnlab.data.idx import decode_idx
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
