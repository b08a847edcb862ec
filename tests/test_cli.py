"""Smoke tests of every command, through ``main()`` and through the installed entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cnnlab.cli import main
from conftest import write_idx_dataset


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_models(capsys):
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "inception" in out and "97,298" in out and "41,514" in out


def test_train_evaluate_cycle(tiny_idx, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, _ = run(["train", "--model", "resnet", "--dataset", f"idx:{tiny_idx}", "--epochs", "1",
                        "--batch-size", "32", "--device", "cpu", "--out", str(out_dir), "--quiet"], capsys)
    assert code == 0 and "epoch   1/1" in out and "test_acc" in out and "img/s" in out
    assert (out_dir / "metrics.csv").is_file()
    code, out, _ = run(["evaluate", str(out_dir), "--json"], capsys)
    assert code == 0 and json.loads(out)["n"] == 64
    code, out, _ = run(["evaluate", str(out_dir / "best.pt")], capsys)
    assert code == 0 and "accuracy" in out


def test_resume_cli(tiny_idx, tmp_path, capsys):
    out_dir = tmp_path / "run"
    run(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--epochs", "1", "--device", "cpu",
         "--out", str(out_dir), "--quiet"], capsys)
    code, out, _ = run(["train", "--resume", str(out_dir), "--quiet"], capsys)
    assert code == 0 and "final test accuracy" in out


def test_dry_run_writes_nothing(tiny_idx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["train", "--dataset", f"idx:{tiny_idx}", "--dry-run", "--device", "cpu"], capsys)
    assert code == 0 and not (tmp_path / "runs").exists()


def test_bad_input_is_one_line_error(tmp_path, capsys):
    code, _, err = run(["train", "--model", "vgg", "--dataset", f"idx:{tmp_path}/nope"], capsys)
    assert code == 2 and err.count("\n") == 1 and "cnnlab: error:" in err
    code, _, err = run(["evaluate", str(tmp_path / "missing.pt")], capsys)
    assert code == 2 and "no such checkpoint" in err
    code, _, err = run(["train", "--model", "vgg", "--dataset", "mnist", "--dry-run"], capsys)
    assert code == 2 and "unknown model 'vgg'" in err


def test_data_fetch_with_wrong_files_and_info(tmp_path, capsys):
    directory = write_idx_dataset(tmp_path / "fake-mnist")
    code, _, err = run(["data", "fetch", "mnist", "--data-dir", str(directory)], capsys)
    assert code == 2 and "checksum mismatch" in err and err.count("\n") == 1
    code, out, _ = run(["data", "info"], capsys)
    assert code == 0 and "mnist: not cached" in out
    code, out, _ = run(["data", "info", "--json"], capsys)
    assert json.loads(out)[0]["name"] == "mnist"


@pytest.mark.parametrize("entry", [["-m", "cnnlab"], None])
def test_entry_points(entry):
    if entry is None:
        exe = os.path.join(os.path.dirname(sys.executable), "cnnlab")
        if not os.path.exists(exe):
            pytest.skip("console script not installed in this environment (run via make test)")
        cmd = [exe, "--version"]
    else:
        cmd = [sys.executable, *entry, "--version"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "cnnlab" in out.stdout


def test_compare_and_export_weights_cli(tiny_idx, tmp_path, capsys):
    out_dir = tmp_path / "cmp"
    code, out, _ = run(["compare", "--models", "basic_cnn", "--seeds", "2", "--dataset", f"idx:{tiny_idx}",
                        "--epochs", "1", "--device", "cpu", "--out", str(out_dir)], capsys)
    assert code == 0 and "| basic_cnn | 8,490 |" in out and (out_dir / "comparison.png").is_file()
    run_dir = next(p for p in out_dir.iterdir() if p.is_dir())
    code, out, _ = run(["export-weights", str(run_dir), "--format", "safetensors"], capsys)
    assert code == 0 and (run_dir / "model.safetensors").is_file()
    code, _, err = run(["compare", "--models", "nope", "--dataset", f"idx:{tiny_idx}"], capsys)
    assert code == 2 and "unknown model(s) nope" in err
