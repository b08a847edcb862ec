"""Defects a tester (probe api, s46) found in the Python API and the run finding: another tool's folder with a
config.json taken for a damaged run and for ``latest``; a ``Run`` of best.pt that became last.pt wherever it was
passed; ``None`` for a recipe setting refused as the recipe's value; ``list_runs`` comparing numbers as text; a
``Path`` for a model's name said as weights that do not exist; a divergence's advice that diverged again."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import cnnlab
from cnnlab import CnnlabError
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.errors import Diverged
from cnnlab.runs import find_runs, resolve_run
from conftest import one_line

QUIET = dict(quiet=True, threads=1, device="cpu")


def _foreign_folder(folder: Path) -> Path:
    """A Hugging Face ``save_pretrained`` folder kept among the runs, newer than every run there."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"architectures": ["BertModel"], "hidden_size": 768}')
    (folder / "model.safetensors").write_text("x")
    later = time.time() + 60
    for path in (folder / "config.json", folder / "model.safetensors"):
        os.utime(path, (later, later))
    return folder


def test_a_folder_of_another_tool_with_a_config_json_is_no_run_and_never_latest(finished, tmp_path, monkeypatch,
                                                                                  capsys):
    """D1: ``runs/bert-base`` (a config.json of another tool's, a model.safetensors) was listed as a damaged run
    ("put back the one the run wrote"), became ``latest``, and ``evaluate latest``, ``predict latest`` and
    ``load_run('latest')`` said it "stopped before its first epoch ended: train it again"."""
    monkeypatch.chdir(tmp_path)
    foreign = _foreign_folder(Path("runs") / "bert-base")
    assert [r["run"] for r in cnnlab.list_runs()] == ["runs/r1"] and find_runs("runs") == [Path("runs/r1")]
    assert resolve_run("latest") == Path("runs/r1") and cnnlab.load_run("latest").path == Path("runs/r1")
    assert main(["runs"]) == 0
    assert "bert-base" not in capsys.readouterr().out
    assert main(["evaluate", "latest", "--device", "cpu"]) == 0
    assert "runs/r1/last.pt" in capsys.readouterr().out
    assert main(["evaluate", str(foreign), "--device", "cpu"]) == 2
    err = one_line(capsys)
    assert "not a cnnlab run folder (its config.json is not the one cnnlab writes" in err and "train it" not in err
    with pytest.raises(CnnlabError, match=r"runs/bert-base: not a cnnlab run folder .*give a folder written by"):
        cnnlab.load_run(foreign)
    assert main(["runs", "--root", str(foreign)]) == 0  # the folder given as the root of runs: none there
    assert "no runs under" in capsys.readouterr().out
    # a run of cnnlab's whose config.json was edited to another tool's keeps its row (its checkpoints say it is one)
    (finished / "config.json").write_text('{"architectures": ["BertModel"]}')
    assert [(r["run"], r["status"]) for r in cnnlab.list_runs()] == [("runs/r1", "damaged")]


def test_a_run_loaded_from_best_brings_best_wherever_it_is_passed(finished, tiny_idx, tmp_path, monkeypatch):
    """D2: a ``Run`` loaded from best.pt stood for best.pt in its own methods only: ``cnnlab.predictor(run)``,
    ``Predictor.from_run(run)``, ``load_run(run)`` and ``train(teacher=run)`` took its folder's last.pt, another net,
    and its repr did not say which it was."""
    monkeypatch.chdir(tmp_path)
    run = cnnlab.load_run(finished / "best.pt")
    assert run.which == "best" and repr(run).endswith(", which='best')")
    assert "which" not in repr(cnnlab.load_run(finished))
    assert cnnlab.predictor(run).checkpoint["file"] == "r1/best.pt"
    assert cnnlab.Predictor.from_run(run, device="cpu").checkpoint["file"] == "r1/best.pt"
    # a which given picks that one, as the Run's own methods take it (run.predictor(which="last"))
    assert cnnlab.predictor(run, which="last").checkpoint["file"] == "r1/last.pt"
    assert cnnlab.Predictor.from_run(run, "last", device="cpu").checkpoint["file"] == "r1/last.pt"
    again = cnnlab.load_run(run)
    assert again.which == "best" and again.path == run.path and again.folder == run.folder
    res = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", recipe="fast", epochs=1, max_steps=1, teacher=run,
                       out=tmp_path / "taught", **QUIET)
    assert json.loads((res.run_dir / "config.json").read_text())["config"]["teacher"] == str(finished / "best.pt")


def test_none_for_a_setting_whose_default_is_none_is_not_given(tiny_idx, tmp_path):
    """D3: ``momentum=None`` (a script forwarding its own optional argument) with Adam was refused as
    "cnnlab.train(momentum=0.5) has no effect here", a value never given; so were ``evals_per_epoch=None`` and
    ``bias_decay=None``, and a resume with ``momentum=None`` was a change of the run's momentum."""
    out = tmp_path / "r"
    cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", optimizer="adam", momentum=None, evals_per_epoch=None,
                 bias_decay=None, teacher=None, epochs=1, max_steps=1, out=out, **QUIET)
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert (cfg["momentum"], cfg["evals_per_epoch"], cfg["bias_decay"]) == (0.5, 1, True)  # the lecture recipe's
    res = cnnlab.train(resume=out, momentum=None, max_steps=2, quiet=True)
    assert res.config.momentum == 0.5
    with pytest.raises(CnnlabError, match=r"seed must be int, got None"):  # a default that is not None: checked
        cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", seed=None, out=tmp_path / "s", **QUIET)
    with pytest.raises(CnnlabError, match=r"cnnlab.train\(momentum=0.9\) has no effect here"):  # a value given: checked
        cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", optimizer="adam", momentum=0.9, out=tmp_path / "m",
                     **QUIET)


def test_list_runs_compares_numbers_as_numbers_and_none_filters_nothing(tiny_idx, tmp_path, monkeypatch):
    """D4: ``list_runs`` compared values as text: ``epochs=2.0`` found no run of 2 epochs, ``final_acc=96`` none of
    96.0, ``TrainResult.best_accuracy`` not its own run (the row holds 74.5098), and ``model=None`` nothing at all."""
    monkeypatch.chdir(tmp_path)
    res = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", val_split=0.1, epochs=2, out=Path("runs") / "v",
                       **QUIET)
    [row] = cnnlab.list_runs()
    found = ["runs/v"]
    assert [r["run"] for r in cnnlab.list_runs(epochs=2.0)] == found
    assert [r["run"] for r in cnnlab.list_runs(best_acc=res.best_accuracy)] == found
    assert [r["run"] for r in cnnlab.list_runs(final_acc=row["final_acc"], train_seconds=row["train_seconds"])] == found
    assert [r["run"] for r in cnnlab.list_runs(model=None, status=None, recipe="LECTURE")] == found
    assert cnnlab.list_runs(epochs=3) == [] and cnnlab.list_runs(best_acc=res.best_accuracy + 0.01) == []
    rows = [dict(row, final_acc=96.0), dict(row, eval_limit=1234567)]
    from cnnlab.runs import matches

    assert matches(rows[0], {"final_acc": 96}) and not matches(rows[0], {"final_acc": 97})
    assert not matches(rows[1], {"eval_limit": 1234568.0})  # a whole number the row holds whole: exactly


@pytest.mark.parametrize("call", [
    lambda: cnnlab.predictor(model=Path("resnet")),
    lambda: cnnlab.Predictor.pretrained(Path("resnet")),
    lambda: cnnlab.create_model(Path("resnet"), pretrained=True),
    lambda: cnnlab.create_model(Path("resnet")),
])
def test_a_model_name_that_is_no_str_is_said_so(call):
    """D5: ``cnnlab.predictor(model=Path("resnet"))`` said "no pretrained weights for resnet on mnist (did you mean
    'resnet on mnist'?)", the weights asked for, which exist; ``create_model(Path("resnet"))`` "unknown model
    PosixPath('resnet') (did you mean 'resnet'?)"."""
    with pytest.raises(CnnlabError, match=r"^model must be a str \(a model name: .*resnet.*\), got "
                                          r"PosixPath\('resnet'\)$"):
        call()


@pytest.mark.parametrize("call", [
    lambda: cnnlab.predictor(model="resnet", dataset=Path("mnist")),
    lambda: cnnlab.create_model("resnet", pretrained=True, dataset=Path("mnist")),
])
def test_a_dataset_name_that_is_no_str_is_said_so(call):
    """D5: ``dataset=Path("mnist")`` said "no pretrained weights for resnet on mnist (did you mean ...)"."""
    with pytest.raises(CnnlabError, match=r"^dataset must be a str \(a dataset name: mnist, fashion-mnist\), got "
                                          r"PosixPath\('mnist'\)$"):
        call()


def test_the_divergence_advice_names_a_rate_that_trains(tiny_idx, tmp_path, capsys):
    """D8: ``--lr 1e6`` was told "lower --lr (e.g. 100000) or use a recipe (--recipe fast)": a tenth diverged again
    (six times before a rate that trains), and ``--recipe fast`` was named to a run that had it (a typed --lr
    replaces the recipe's)."""
    data = f"idx:{tiny_idx}"
    argv = ["train", "--model", "basic_cnn", "--dataset", data, "--lr", "1e6", "--epochs", "1", "--max-steps", "2",
            "--device", "cpu", "--threads", "1", "--quiet"]
    assert main([*argv, "--recipe", "fast", "--out", str(tmp_path / "a")]) == 2
    err = one_line(capsys)
    assert ("the learning rate (1e+06) is the likely cause: lower --lr (e.g. 0.006, the fast recipe's own, which the "
            "run takes without --lr); no checkpoint was saved") in err and "use a recipe" not in err
    with pytest.raises(Diverged, match=r"lower lr \(e\.g\. 0\.01, the lecture recipe's own, which the run takes "
                                       r"without lr\); no checkpoint"):
        cnnlab.train("basic_cnn", dataset=data, lr=1e6, epochs=1, max_steps=2, out=tmp_path / "b", **QUIET)
    assert main([*argv, "--optimizer", "nesterov", "--out", str(tmp_path / "c")]) == 2  # no recipe's rate for it
    assert "the likely cause: lower --lr; no checkpoint was saved" in one_line(capsys)
    # the rate named: the run's own recipe's for its optimizer, else the lowest of the recipes that use it
    from cnnlab.config import recipe_rate

    assert recipe_rate(TrainConfig(model="resnet", recipe="lecture", optimizer="adam").resolve()) == ("fast", 0.006)
    assert recipe_rate(TrainConfig(model="inception", recipe="best").resolve()) == ("best", 0.004)
    assert recipe_rate(TrainConfig(model="resnet", optimizer="nesterov").resolve()) is None
