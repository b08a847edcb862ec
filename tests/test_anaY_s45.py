"""The defects a tester of the analyses and reports (probe analyze, s45) found: a report or an analysis of a checkpoint
copied into a folder of the user's written over their files, the branches' baseline normalised with the wrong
mean and std, an analysis stopped between its files leaving the new JSON beside the old figures, another
checkpoint's analysis written into the run's own folder, small energies printed as 0.000, and a damaged checkpoint's
fix naming a checkpoint that is not there. Tiny runs on generated IDX data (conftest)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cnnlab.analysis.branches import analyze_branches
from cnnlab.cli import main
from cnnlab.data.idx import encode_idx
from cnnlab.evaluation import evaluate_run, open_subject
from conftest import make_images, trained_once

TINY = ["--train-images", "20", "--test-images", "20", "--device", "cpu"]


@pytest.fixture(scope="module")
def inception_run(tmp_path_factory) -> Path:
    """A tiny Inception run that finished its epoch: last.pt, best.pt, metrics.csv, summary.json."""
    return trained_once(tmp_path_factory, "anaY-inception", model="inception")


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A tiny run stopped at step 2 of its first epoch: last.pt, no best.pt, no metrics.csv."""
    return trained_once(tmp_path_factory, "anaY-stopped", max_steps=2)


def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(run, tmp_path / name))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- D1: a copy in a folder of the user's


def test_a_report_or_analysis_of_last_pt_copied_into_a_folder_of_the_users_writes_nothing_over_their_files(
        inception_run, tmp_path, monkeypatch, capsys):
    """D1. `evaluate shared/last.pt` and `analyze branches shared/last.pt`, the run's last.pt copied into a folder of
    the user's, wrote cnnlab's summary.json, figures and branches.json over theirs and left .lock and .analysis.lock
    there (the same folder as `--out` is refused). Now such a folder is no run's (runs.users_files, as a resume
    tells it: runs.check_resumed_folder): nothing is written there, and the line says why and what writes it."""
    monkeypatch.chdir(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copy(inception_run / "last.pt", shared / "last.pt")
    (shared / "notes.txt").write_text("my notes\n")
    (shared / "summary.json").write_text('{"my": "own summary"}\n')
    (shared / "branches.json").write_text('{"my": "own branches"}\n')
    before = _snapshot(shared)
    capsys.readouterr()
    assert main(["evaluate", "shared/last.pt", "--device", "cpu"]) == 0
    assert ("no report written: shared is not a run folder (it holds 'branches.json', 'notes.txt', 'summary.json'); "
            "--out DIR writes this one's\n") in capsys.readouterr().out
    assert _snapshot(shared) == before
    assert main(["analyze", "branches", "shared/last.pt", *TINY]) == 0
    assert ("nothing written into shared: shared is not a run folder (it holds 'branches.json', 'notes.txt', "
            "'summary.json'); --out DIR writes this analysis's files") in capsys.readouterr().out
    assert _snapshot(shared) == before  # no .lock, no .analysis.lock either
    # their branches.json alone beside the copy is theirs too
    for name in ("notes.txt", "summary.json"):
        (shared / name).unlink()
    assert main(["analyze", "branches", "shared/last.pt", *TINY]) == 0
    assert "shared is not a run folder (it holds 'branches.json')" in capsys.readouterr().out
    assert (shared / "branches.json").read_text() == '{"my": "own branches"}\n'
    # a folder holding nothing of the user's (the copy alone) gets its report, as a resume is taken there
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(inception_run / "last.pt", mine / "last.pt")
    assert main(["evaluate", "mine/last.pt", "--device", "cpu"]) == 0
    assert json.loads((mine / "summary.json").read_text())["checkpoint"] == "mine/last.pt"


# ----------------------------------------------------------------------------- D2: the net's own normalisation


def _dim_copy(directory: Path) -> Path:
    """An IDX dataset shaped like conftest's tiny one, its images at half the brightness (another mean and std)."""
    rng = np.random.default_rng(3)
    directory.mkdir(parents=True)
    for split, n in (("train", 128), ("t10k", 64)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        (directory / f"{split}-images-idx3-ubyte").write_bytes(encode_idx(make_images(labels, rng) // 2))
        (directory / f"{split}-labels-idx1-ubyte").write_bytes(encode_idx(labels))
    return directory


def test_the_branches_baseline_on_other_data_is_what_evaluate_measures(inception_run, tmp_path):
    """D2. `analyze branches RUN --dataset OTHER` normalised with OTHER's mean and std, not the net's recorded ones
    (what evaluate, predict and export use): its baseline (5.53% / 4.1440 on Fashion-MNIST) was not evaluate's
    (3.78% / 5.6481) for the same weights and images. Now both loaders take the subject's normalisation."""
    other = f"idx:{_dim_copy(tmp_path / 'dim')}"
    subject = open_subject(inception_run, dataset=other)
    assert subject.normalisation != (subject.data.mean, subject.data.std)  # the net's own are others
    plain, _, _ = evaluate_run(inception_run, dataset=other, device="cpu")
    result = analyze_branches(inception_run, dataset=other, train_images=20, device="cpu")
    assert result["test_images"] == plain.n == 64
    assert result["baseline"]["accuracy"] == plain.accuracy
    assert result["baseline"]["loss"] == pytest.approx(plain.loss, rel=1e-5)
