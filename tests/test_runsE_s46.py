"""The defects a tester (probe fixruns, s46) found in the run side's newest fixes: another run's best.pt on other
``idx:`` data taken for the run's own and written over (D1), a colleague's checkpoint on other data refused as "your
data changed" (D2), a checkpoint of another --epochs of a one-cycle run resumed over the run (D3), hand-started
ranks with other settings never compared (D4), the advice "--resume RUN/best.pt" for a finished run's damaged last.pt
that left it damaged (D5), and a user's own PNG under a figure's name written over (D6). All on tiny runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.config import other_run
from conftest import one_line, trained_once, write_idx_dataset


@pytest.fixture(scope="module")
def run_da(tmp_path_factory) -> Path:
    """A tiny finished run (one epoch of 8 steps, --lr 0.05, --batch-size 32) on its ``tiny`` idx: data."""
    return trained_once(tmp_path_factory, "runsE-da")


def _train(*args: str) -> int:
    return main(["train", "--threads", "1", "--quiet", *args])


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _run_on(data: Path, out: Path, *args: str) -> Path:
    assert _train("--model", "basic_cnn", "--dataset", f"idx:{data}", "--batch-size", "32", "--lr", "0.05",
                  "--out", str(out), *args) == 0
    return out


# ----------------------------------------------------------------------------- D1, D2: other data, another run


def test_another_runs_best_pt_on_other_idx_data_is_the_users_and_is_not_written_over(run_da, tmp_path, monkeypatch,
                                                                                    capsys):
    """D1. A run's last.pt copied into a folder of the user's that holds their best.pt of a run on another idx:
    directory: the resume took it for the run's (any two idx: datasets counted as one moved) and wrote over it. Now
    checkpoint.same_run_as compares the records of the runs' data (data.dataset.same_data): other data, another run;
    refused before anything is written."""
    monkeypatch.chdir(tmp_path)
    theirs = _run_on(write_idx_dataset(tmp_path / "DB", seed=5), tmp_path / "theirs", "--epochs", "1")
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("best.pt", "best.pt.sha256"):
        shutil.copy(theirs / name, proj / name)
    shutil.copy(run_da / "last.pt", proj / "model.pt")
    before = _snapshot(proj)
    capsys.readouterr()
    assert _train("--resume", "proj/model.pt") == 2
    assert "proj is not a run folder (it holds 'best.pt', 'best.pt.sha256')" in one_line(capsys)
    assert _snapshot(proj) == before and sorted(p.name for p in proj.iterdir()) == sorted(before)


def test_a_colleagues_checkpoint_on_other_idx_data_is_another_run_not_changed_data(run_da, tmp_path, monkeypatch,
                                                                                  capsys):
    """D2. A colleague's checkpoint trained on another idx: directory, resumed in my run folder: "idx:DA is not the
    data the run trained on ...; put the data back as it was", though DA never changed. Now engine._check_own_checkpoint
    compares the checkpoint's record of its data with config.json's: another run, both datasets named."""
    monkeypatch.chdir(tmp_path)
    mine = Path(shutil.copytree(run_da, tmp_path / "mine"))
    colleague = _run_on(write_idx_dataset(tmp_path / "DB", seed=5), tmp_path / "colleague", "--epochs", "1")
    shutil.copy(colleague / "last.pt", mine / "from-colleague.pt")
    before = _snapshot(mine)
    capsys.readouterr()
    assert _train("--resume", "mine/from-colleague.pt") == 2
    assert one_line(capsys) == (
        f"cnnlab: error: --resume mine/from-colleague.pt: a checkpoint of another run (dataset 'idx:{tmp_path}/DB') "
        f"than the one in mine (dataset 'idx:{run_da.parent}/tiny'); resume the run itself with 'cnnlab train "
        "--resume mine', or copy the file into a folder of its own")
    assert _snapshot(mine) == before


def test_a_checkpoint_of_other_data_at_the_same_place_is_another_run(tmp_path, monkeypatch, capsys):
    """D2's neighbour: a colleague's checkpoint of the same idx: path when it held other data is another run too (not
    "the data the run trained on changed": mine's is as it was), named with what differs."""
    monkeypatch.chdir(tmp_path)
    data = write_idx_dataset(tmp_path / "D", seed=5)
    colleague = _run_on(data, tmp_path / "colleague", "--epochs", "1")
    shutil.rmtree(data)
    mine = _run_on(write_idx_dataset(data, seed=0), tmp_path / "mine", "--epochs", "1")
    shutil.copy(colleague / "last.pt", mine / "from-colleague.pt")
    capsys.readouterr()
    assert _train("--resume", "mine/from-colleague.pt") == 2
    err = one_line(capsys)
    assert (f"a checkpoint of another run (dataset 'idx:{data}' with other contents than this run's: the train images' "
            f"mean, their spread and the test images or labels differ) than the one in mine (dataset 'idx:{data}')") in err, err


def test_other_run_takes_a_directory_as_moved_only_where_the_records_of_the_data_agree():
    """D1/D2 in config.other_run: two idx: directories are one moved only where the data is known the same."""
    mine = dict(model="basic_cnn", dataset="idx:/a/D", epochs=3, batch_size=32)
    moved = {**mine, "dataset": "idx:/b/D"}
    assert other_run(mine, moved, same_data=True) == []
    assert other_run(mine, moved, same_data=False) == ["dataset"]
    assert other_run(mine, moved) == ["dataset"]  # not known: another place is another run's
    assert other_run(mine, dict(mine), same_data=False) == ["dataset"]
    assert other_run(mine, dict(mine), same_data=True) == []


# ----------------------------------------------------------------------------- D3: another --epochs


def test_a_checkpoint_of_another_length_of_a_one_cycle_run_is_another_run(tmp_path, monkeypatch, capsys):
    """D3. A colleague's 5-epoch checkpoint of a 3-epoch one-cycle run resumed over it (its checkpoints, metrics and
    config.json replaced), where the run's own `--resume mine --epochs 5` is refused. Now config.other_run counts
    epochs as config.resumed_config does (config.epochs_change)."""
    monkeypatch.chdir(tmp_path)
    data = write_idx_dataset(tmp_path / "D")
    mine = _run_on(data, tmp_path / "mine", "--schedule", "onecycle", "--epochs", "3", "--max-steps", "8")
    colleague = _run_on(data, tmp_path / "colleague", "--schedule", "onecycle", "--epochs", "5", "--max-steps", "8")
    shutil.copy(colleague / "last.pt", mine / "from-colleague.pt")
    before = _snapshot(mine)
    capsys.readouterr()
    assert _train("--resume", "mine/from-colleague.pt") == 2
    assert one_line(capsys) == (
        "cnnlab: error: --resume mine/from-colleague.pt: a checkpoint of another run (epochs 5) than the one in mine "
        "(epochs 3); resume the run itself with 'cnnlab train --resume mine', or copy the file into a folder of its own")
    assert _snapshot(mine) == before


def test_other_run_lets_a_constant_rate_run_be_lengthened_and_nothing_else():
    """D3's rule is the resume's own: another length is the same run only at a constant rate without clean epochs."""
    base = dict(model="basic_cnn", dataset="mnist", epochs=3, schedule="constant", clean_epochs=0, augment="shift")
    assert other_run(base, {**base, "epochs": 5}) == []
    assert other_run({**base, "schedule": "cosine"}, {**base, "schedule": "cosine", "epochs": 5}) == ["epochs"]
    assert other_run({**base, "clean_epochs": 1}, {**base, "clean_epochs": 1, "epochs": 5}) == ["epochs"]
