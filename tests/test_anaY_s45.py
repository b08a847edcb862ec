"""The defects a tester of the analyses and reports (probe analyze, s45) found: a report or an analysis of a checkpoint
copied into a folder of the user's written over their files, the branches' baseline normalised with the wrong
mean and std, an analysis stopped between its files leaving the new JSON beside the old figures, another
checkpoint's analysis written into the run's own folder, small energies printed as 0.000, and a damaged checkpoint's
fix naming a checkpoint that is not there. Tiny runs on generated IDX data (conftest)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import cnnlab.analysis.plots as aplots
from cnnlab.analysis.branches import analyze_branches, format_branches
from cnnlab.cli import main
from cnnlab.data.idx import encode_idx
from cnnlab.evaluation import evaluate_run, open_subject
from cnnlab.runs import describe_run
from conftest import make_images, no_room_for, one_line, trained_once

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


# ----------------------------------------------------------------------------- D3: stopped between its files


def test_an_analysis_stopped_between_its_files_leaves_no_earlier_figure_beside_its_new_json(
        inception_run, tmp_path, monkeypatch, capsys):
    """D3. `analyze branches RUN` stopped after branches.json left the earlier analysis's branches.png (1,000 test
    images) beside the new branches.json (300), and its line did not say so; gradients' figures in an --out too. Now
    the earlier figures are removed the moment before the new JSON is renamed into place (cli.analyze._write, as
    write_report does for a report), and a JSON that cannot be written leaves the earlier files whole, said so."""
    run = _copy(inception_run, tmp_path)
    assert main(["analyze", "branches", str(run), *TINY]) == 0
    earlier = _snapshot(run)

    def stopped(result, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(aplots, "plot_branches", stopped)
    capsys.readouterr()
    assert main(["analyze", "branches", str(run), "--train-images", "20", "--test-images", "10",
                 "--device", "cpu"]) == 130
    assert (f"cnnlab: warning: results incomplete: wrote branches.json in {run}, not branches.png: stopped; run it "
            "again\n") in capsys.readouterr().err
    assert json.loads((run / "branches.json").read_text())["test_images"] == 10
    assert not (run / "branches.png").exists()
    # a new branches.json that the disk refuses: the earlier pair stays, and the line says so
    (run / "branches.json").write_bytes(earlier["branches.json"])
    (run / "branches.png").write_bytes(earlier["branches.png"])
    monkeypatch.undo()
    no_room_for(monkeypatch, "branches.json")
    assert main(["analyze", "branches", str(run), *TINY]) == 1
    assert (f"results incomplete: wrote nothing in {run}: branches.json, branches.png (an earlier analysis's "
            "branches.json, branches.png stay there): ") in capsys.readouterr().err
    assert _snapshot(run)["branches.png"] == earlier["branches.png"]
    # gradients' figures in an --out go with their JSON as well
    monkeypatch.undo()
    out = tmp_path / "grad"
    args = ["analyze", "gradients", "--depths", "4", "--seeds", "1", "--epochs", "0", "--batch-size", "32",
            "--dataset", json.loads((run / "config.json").read_text())["config"]["dataset"], "--device", "cpu",
            "--out", str(out)]
    assert main(args) == 0
    monkeypatch.setattr(aplots, "plot_gradients", stopped)
    assert main(args) == 130
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["gradients.json"]


# ----------------------------------------------------------------------------- D4: another checkpoint into the run


def test_another_checkpoints_or_datasets_analysis_is_refused_the_runs_own_folder_and_its_figure_names_it(
        inception_run, tmp_path, monkeypatch, capsys):
    """D4. `analyze branches RUN --checkpoint best --out RUN` (or `--dataset OTHER --out RUN`) wrote best.pt's
    analysis over the run's own branches.json and branches.png, whose title named neither best.pt nor the run;
    `evaluate` refuses the same. Now refused as evaluate refuses it (evaluation.check_not_own_folder), and
    branches.json records the weights' origin, which branches.png shows under its title."""
    run = _copy(inception_run, tmp_path)
    assert main(["analyze", "branches", str(run), *TINY]) == 0
    own = _snapshot(run)
    capsys.readouterr()
    assert main(["analyze", "branches", str(run), "--checkpoint", "best", "--out", str(run), *TINY]) == 2
    assert one_line(capsys) == (f"cnnlab: error: --out {run} is the run's own folder, and this analysis is not the "
                                 "run's result (best.pt is not the run's final weights (last.pt)); give another folder")
    other = f"idx:{_dim_copy(tmp_path / 'dim')}"
    assert main(["analyze", "branches", str(run), "--dataset", other, "--out", str(run), *TINY]) == 2
    assert f"--out {run} is the run's own folder, and this analysis is not the run's result ({other} is not" \
        in one_line(capsys)
    assert _snapshot(run) == own
    out = tmp_path / "best"
    assert main(["analyze", "branches", str(run), "--checkpoint", "best", "--out", str(out), *TINY]) == 0
    result = json.loads((out / "branches.json").read_text())
    assert result["origin"] == {"run": "run", "checkpoint": "best.pt"}
    figures = []
    monkeypatch.setattr(aplots, "save_figure", lambda fig, path: figures.append(fig) or path)
    aplots.plot_branches(result, "unused.png")
    assert figures[0]._suptitle.get_text().endswith("\nrun run · checkpoint best.pt")


# ----------------------------------------------------------------------------- D5: small energies


def test_the_branches_table_prints_a_small_energy_with_its_significant_digits_not_as_0_000():
    """D5. The table printed the shipped Fashion-MNIST net's incept2/3x3 energy 0.000266 (per class 0.00029...) as
    `0.000`, the reading of a silent branch, where branches.json and branches.png say otherwise. Now 3 significant
    digits below 0.01 (analysis.branches.energy_text), 3 decimals above as before, the columns as wide as their
    numbers."""
    rows = [{"branch": b, "channels": 24, "zero": {"accuracy": 50.0, "loss": 0.7}, "mean": {"accuracy": 50.0,
             "loss": 0.7}, "next_layer_share": 0.25, "uniform_share": 0.27, "energy": e, "energy_per_class": per}
            for b, e, per in (("pool", 0.428, [0.535, 0.24]), ("1x1", 6.628, [7.287, None]),
                              ("5x5", 0.00266, [0.0029, 0.0]), ("3x3", 0.000266, [0.00029, 2.66e-05]))]
    result = {"model": "inception", "checkpoint": "last.pt", "dataset": "fashion-mnist", "classes": ["cat", "dog"],
              "baseline": {"accuracy": 50.0, "loss": 0.7}, "test_images": 6, "mean_from_train_images": 34,
              "modules": [{"name": "incept2", "next_layer": "fc", "output_shape": [88, 4, 4], "branches": rows}]}
    lines = format_branches(result).splitlines()
    table = {line.split()[1]: line for line in lines if line.startswith("incept2") and "%" in line}
    assert table["3x3"].endswith("  0.000266") and table["5x5"].endswith("   0.00266")
    assert table["pool"].endswith("     0.428") and table["1x1"].endswith("     6.628")  # as published
    per_class = [line for line in lines if line.startswith("incept2") and "%" not in line]
    assert [line.split()[2:] for line in per_class] == [["0.535", "0.240"], ["7.287", "-"], ["0.00290", "0.000"],
                                                          ["0.000290", "2.66e-05"]]
    assert len({len(line) for line in per_class}) == 1  # aligned


# ----------------------------------------------------------------------------- D6: the fix of a damaged checkpoint


def _cut(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def test_a_damaged_checkpoints_fix_names_the_other_checkpoint_only_when_it_is_there_and_whole(
        stopped_run, inception_run, tmp_path, capsys):
    """D6. A run with no best.pt whose last.pt was cut short was told "use another checkpoint (last.pt / best.pt)";
    `--checkpoint best` then said "use --checkpoint last", and `cnnlab runs` "use the other checkpoint". Now the
    other checkpoint is named only where it is there and whole (runs.checkpoint_fix), and `--checkpoint best` of
    such a run says its last.pt is damaged too."""
    run = _copy(stopped_run, tmp_path)
    _cut(run / "last.pt")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-report", "--device", "cpu"]) == 2
    assert one_line(capsys).endswith("the file was truncated or altered: put back the run's own copy, or train it "
                                      "again")
    assert main(["analyze", "branches", str(run), "--checkpoint", "best", "--device", "cpu"]) == 2
    assert one_line(capsys) == (f"cnnlab: error: {run}: no best.pt in this run directory; its last.pt is damaged "
                                 "too: cut short (truncated or altered: its end is missing); put back the run's own "
                                 "copy, or train it again")
    assert describe_run(run)["detail"] == ("last.pt: cut short (truncated or altered: its end is missing); put back "
                                           "the run's own copy, or train it again")
    # a run with a whole best.pt: named; both cut short: neither
    both = _copy(inception_run, tmp_path, "both")
    _cut(both / "last.pt")
    assert main(["evaluate", str(both), "--no-report", "--device", "cpu"]) == 2
    assert one_line(capsys).endswith("put back the run's own copy, or use its best.pt (--checkpoint best), or "
                                      "train it again")
    _cut(both / "best.pt")
    assert main(["evaluate", str(both), "--checkpoint", "best", "--no-report", "--device", "cpu"]) == 2
    assert one_line(capsys).endswith("truncated or altered: put back the run's own copy, or train it again")
    assert "use its" not in describe_run(both)["detail"]
