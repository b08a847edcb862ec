"""``cnnlab train --config FILE``: settings files and runs' config.json, and the refusals that name them."""

from __future__ import annotations

import json
import shutil

import pytest

from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.distill import TEACHER_FILE
from cnnlab.engine import train

QUIET = dict(quiet=True, log=lambda m: None)


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def tiny(tiny_idx, **kw) -> TrainConfig:
    base = dict(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=1, batch_size=32, device="cpu", lr=0.05)
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def tiny_run(tiny_idx, tmp_path):
    return train(tiny(tiny_idx), out=tmp_path / "run", **QUIET).run_dir


def test_config_beside_resume_is_refused_naming_config(tiny_run, tmp_path, capsys):
    settings = tmp_path / "r.yaml"
    settings.write_text("lr: 0.5\nepochs: 3\nmodel: resnet\n")
    before = (tiny_run / "last.pt").read_bytes()
    code, _, err = run(["train", "--resume", str(tiny_run), "--config", str(settings), "--max-steps", "22",
                        "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "--resume continues a run with its own settings" in err and f"--config {settings}" in err
    assert (tiny_run / "last.pt").read_bytes() == before  # nothing trained


def test_settings_beside_a_runs_config_are_refused(tiny_run, tmp_path, capsys):
    mixed = tmp_path / "u.yaml"
    mixed.write_text("model: resnet\nconfig:\n  epochs: 1\n")
    code, _, err = run(["train", "--config", str(mixed), "--dry-run"], capsys)
    assert code == 2 and err.count("\n") == 1 and "unknown settings ['model'] beside 'config' (put them inside it)" in err
    record = json.loads((tiny_run / "config.json").read_text())
    record["model"] = "inception"
    (tiny_run / "config.json").write_text(json.dumps(record))
    code, _, err = run(["train", "--config", str(tiny_run), "--dry-run"], capsys)
    assert code == 2 and "unknown settings ['model'] beside 'config'" in err


def test_a_typo_in_a_runs_config_names_the_file_and_the_setting_it_meant(tiny_run, capsys):
    record = json.loads((tiny_run / "config.json").read_text())
    record["config"]["epochz"] = record["config"].pop("epochs")
    (tiny_run / "config.json").write_text(json.dumps(record))
    code, _, err = run(["train", "--config", str(tiny_run), "--dry-run"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert str(tiny_run / "config.json") in err and "['epochz']" in err and "did you mean 'epochs'" in err
    assert "another cnnlab version" not in err


@pytest.mark.parametrize("line, said", [
    ("batch_size: -3", "batch_size must be at least 1, got -3"),
    ("momentum: 5", "momentum must be in [0, 1), got 5"),
    ("recipe: turbo", "recipe must be one of"),
    ("threads: -1", "threads must be in 0..4096"),
])
def test_a_bad_value_in_a_settings_file_names_the_file_and_the_setting_not_a_flag(tmp_path, capsys, line, said):
    settings = tmp_path / "r.yaml"
    settings.write_text(f"model: resnet\n{line}\n")
    code, _, err = run(["train", "--config", str(settings), "--dry-run"], capsys)
    assert code == 2 and err.count("\n") == 1 and f"{settings}: {said}" in err and " --" not in err.split(":", 2)[2]


def test_a_typed_flag_over_a_settings_file_is_still_named_as_the_flag(tmp_path, capsys):
    settings = tmp_path / "r.yaml"
    settings.write_text("model: resnet\n")
    code, _, err = run(["train", "--config", str(settings), "--batch-size", "-3", "--dry-run"], capsys)
    assert code == 2 and "--batch-size must be at least 1, got -3" in err


def test_a_dry_run_checks_max_steps_as_the_run_does(capsys):
    code, out, err = run(["train", "--max-steps", "-5", "--dry-run"], capsys)
    assert code == 2 and "--max-steps must be >= 0, got -5" in err and "dry run ok" not in out


def test_a_rerun_whose_teacher_moved_names_the_config_and_the_runs_copy(tiny_idx, tmp_path, capsys):
    teacher = train(tiny(tiny_idx, seed=5), out=tmp_path / "tT", **QUIET).run_dir
    student = train(tiny(tiny_idx, teacher=str(teacher)), out=tmp_path / "tS", **QUIET).run_dir
    shutil.move(teacher, tmp_path / "moved")
    code, _, err = run(["train", "--config", str(student), "--dry-run"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"--config {student}" in err and str(teacher / "last.pt") in err and "gone" in err
    assert f"--teacher {student / TEACHER_FILE}" in err and "--teacher:" not in err
    code, out, _ = run(["train", "--config", str(student), "--teacher", str(student / TEACHER_FILE), "--dry-run"],
                       capsys)
    assert code == 0 and "dry run ok" in out  # the fix the message gives works


def test_a_refusal_of_two_settings_from_a_file_names_both_as_the_files_keys(tmp_path, capsys):
    settings = tmp_path / "r.yaml"
    settings.write_text("model: resnet\noptimizer: sgd\nweight_decay: 1.0e9\nlr: 0.01\n")
    code, _, err = run(["train", "--config", str(settings), "--dry-run"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{settings}: weight_decay 1e+09 with lr 0.01 takes" in err and "--" not in err.split("takes")[0]
    # a typed flag beside the file's setting keeps its flag's name
    code, _, err = run(["train", "--config", str(settings), "--lr", "0.02", "--dry-run"], capsys)
    assert code == 2 and f"{settings}: weight_decay 1e+09 with --lr 0.02 takes" in err
