"""The defects a tester (probe fixes, s45) found in the newest fixes: a resume of a checkpoint copied into a folder
of the user's that wrote over their best.pt, curves.png and status.json (D1), a caller's float32 matmul precision
that reached the training and evaluation (D2), every run JSON read reserving the 256 MB limit (D3), a colleague's
checkpoint resumed inside a run folder that replaced the run (D4), and the empty folders a refused ``--out
new/sub/../run`` left (D6). All on tiny runs.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

import cnnlab
from cnnlab import imageio
from cnnlab.cli import main
from cnnlab.fileio import read_json
from cnnlab.runs import first_missing
from conftest import tiny_config, trained_once


@pytest.fixture(scope="module")
def run_seed0(tmp_path_factory) -> Path:
    """A tiny finished run (one epoch of 8 steps, --lr 0.05, --batch-size 32, seed 0)."""
    return trained_once(tmp_path_factory, "trstF-seed0")


def _other_run(run: Path, out: Path, **changes) -> Path:
    """A tiny run on ``run``'s data with ``changes``: another run."""
    from cnnlab.engine import train

    train(tiny_config(run.parent / "tiny", **changes), out=out, quiet=True, log=lambda m: None)
    return out


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# ----------------------------------------------------------------------------- D3: reads that reserved the limit


def test_a_small_file_read_under_a_large_limit_costs_its_size_not_the_limit(run_seed0, tmp_path):
    """D3. read_small_text read `fh.read(limit + 1)`: CPython allocates the whole limit first, 256 MB for each run
    JSON (RUN_FILE_LIMIT), which a data-segment limit refused (`ulimit -d 400000; cnnlab evaluate RUN` of a tiny run:
    "out of memory"); imageio's two reads the same with the image limit. Read in chunks (fileio.read_at_most)."""
    image = tmp_path / "d.png"
    from PIL import Image
    Image.new("L", (28, 28), 0).save(image)
    read_json(run_seed0 / "config.json", "config.json")  # the imports and caches, before memory is measured
    for read in (lambda: read_json(run_seed0 / "config.json", "config.json"),
                 lambda: imageio.open_image(image),
                 lambda: imageio.open_image(open(image, "rb"))):
        tracemalloc.start()
        try:
            read()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, peak  # 256 MB, or the image limit, before
    # the limits and their lines are as they were
    big = tmp_path / "big.json"
    big.write_bytes(b" " * ((1 << 20) + 1))
    with pytest.raises(cnnlab.CnnlabError, match="larger than 1 MB"):
        cnnlab.TrainConfig.from_file(big)


# ----------------------------------------------------------------------------- D6: folders made before a `..`


def test_a_refused_start_removes_the_folders_its_out_made_before_a_dotdot(tmp_path, monkeypatch, capsys):
    """D6. `train --dataset idx:/nonexistent --out new/sub/../run`: refused, and the empty new/ and new/sub/ it made
    left (first_missing stopped at the `..`, where mkdir -p makes the folders before it). Now they go; a folder
    that was there before (`keep/../new/run`, `new/../keep/run`) stays."""
    monkeypatch.chdir(tmp_path)
    assert first_missing("new/sub/../run") == Path("new")
    (tmp_path / "keep").mkdir()
    for out in ("new/sub/../run", "a/b/../../c", "keep/../new/run", "new/../keep/run"):
        assert main(["train", "--model", "basic_cnn", "--dataset", "idx:/nonexistent", "--out", out]) == 2
        assert "idx:/nonexistent: no such directory" in _one_line(capsys)
        assert sorted(os.listdir(tmp_path)) == ["keep"] and os.listdir(tmp_path / "keep") == [], out
