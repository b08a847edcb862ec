"""Exports say which checkpoint they hold; a run still training is not exported into; weights files that are not
state_dicts are named for what they are; a run folder's checkpoint of another net is refused; --out suffixes."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from apps_helpers import tiny_checkpoint
from safetensors import safe_open

from cnnlab.checkpoint import (
    TrainState,
    load_checkpoint,
    load_state_dict_file,
    save_checkpoint,
    sidecar,
)
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.export import export_run, export_safetensors
from cnnlab.runs import RunLock

ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 28}


def run_folder(folder: Path, model: str, dataset_dir: Path, step: int = 20, epoch: int = 1) -> Path:
    """A run folder as training leaves it: config.json, and last.pt with its position (step, epoch)."""
    ckpt = tiny_checkpoint(folder / "last.pt", model=model, dataset_dir=dataset_dir)
    state = load_checkpoint(ckpt)
    state.pop("format"), state.pop("version")
    state["train_state"] = TrainState(epoch=epoch, step=step).to_dict()
    save_checkpoint(ckpt, state)
    cfg = TrainConfig(model=model, dataset=f"idx:{dataset_dir}", device="cpu").to_dict()
    (folder / "config.json").write_text(json.dumps({"config": cfg, "model_args": ARGS}))
    return folder


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- 1. which weights, and a running run


def test_every_export_records_the_checkpoint_it_came_from(tiny_idx, tmp_path):
    pytest.importorskip("onnxruntime")
    from cnnlab.export import read_onnx_metadata

    run = run_folder(tmp_path / "r1", "basic_cnn", tiny_idx, step=20, epoch=1)
    sha = sidecar(run / "last.pt").read_text().split()[0]
    meta = read_onnx_metadata(export_run(run, "onnx", samples=4).path)
    assert (meta["checkpoint"], meta["checkpoint_step"], meta["checkpoint_epochs_done"]) == ("last.pt", "20", "1")
    assert meta["checkpoint_position"] == "step 20, end of epoch 1"
    assert meta["checkpoint_sha256"] == sha and "checkpoint_note" not in meta
    with safe_open(str(export_safetensors(run)), framework="pt") as fh:
        weights = fh.metadata()
    assert (weights["checkpoint"], weights["checkpoint_step"], weights["checkpoint_sha256"]) == ("last.pt", "20", sha)


@pytest.mark.parametrize("command", ["export", "export-weights"])
def test_a_run_still_training_is_not_written_into(command, tiny_idx, tmp_path, capsys):
    run = run_folder(tmp_path / "rmid", "basic_cnn", tiny_idx)
    with RunLock(run):  # its training holds the run's lock
        assert main([command, str(run)]) != 0
        err = one_line(capsys)
        assert "still training" in err and "--out FILE" in err
        assert not {"last.onnx", "model.safetensors"} & {p.name for p in run.iterdir()}
        out = tmp_path / "elsewhere.safetensors"
        assert main(["export-weights", str(run), "--out", str(out)]) == 0
    with safe_open(str(out), framework="pt") as fh:
        assert "mid-training" in fh.metadata()["checkpoint_note"]


# ----------------------------------------------------------------------------- 2, 3. --weights files


@pytest.mark.parametrize("size", [50_000, 1_000, 100, 8, 4])
def test_a_truncated_safetensors_weights_file_is_one_line(size, tiny_idx, tmp_path, capsys):
    run = run_folder(tmp_path / "r1", "resnet", tiny_idx)
    full = export_safetensors(run, out=tmp_path / "w.safetensors").read_bytes()
    cut = tmp_path / "trunc.safetensors"
    cut.write_bytes(full[:size])
    assert main(["evaluate", "--weights", str(cut), "--model", "resnet", "--dataset", f"idx:{tiny_idx}"]) != 0
    assert "truncated or damaged" in one_line(capsys)
    assert set(load_state_dict_file(tmp_path / "w.safetensors")) == set(load_checkpoint(run / "last.pt")["state_dict"])


def _torchscript(path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), str(path))
    return path


@pytest.mark.parametrize("kind, words", [
    ("torchscript", "a TorchScript export"), ("onnx", "an ONNX model"), ("png", "a PNG image"), ("json", "JSON")])
def test_files_that_are_not_state_dicts_are_named(kind, words, tiny_idx, tmp_path, capsys):
    path = {"torchscript": lambda: _torchscript(tmp_path / "net.pt"),
            "onnx": lambda: _write(tmp_path / "net.onnx", b"\x08\x07\x12\x06pytorch" + b"\x00" * 40),
            "png": lambda: _write(tmp_path / "x.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40),
            "json": lambda: _write(tmp_path / "config.json", b'{"config": {}}')}[kind]()
    for argv in (["evaluate", "--weights", str(path), "--model", "resnet"], ["evaluate", str(path)]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch's "looks like a TorchScript archive" warning is not shown
            assert main([*argv, "--dataset", f"idx:{tiny_idx}"]) != 0
        err = one_line(capsys)
        assert words in err and "objects other than tensors" not in err and "RuntimeError" not in err, err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- 4. another net's checkpoint in a run


def test_a_run_folder_s_checkpoint_of_another_model_is_refused(tiny_idx, tmp_path, capsys):
    run_folder(tmp_path / "r1", "resnet", tiny_idx)
    run_folder(tmp_path / "ri", "inception", tiny_idx)
    mix = tmp_path / "mix"
    shutil.copytree(tmp_path / "r1", mix)
    for name in ("last.pt", "last.pt.sha256"):
        shutil.copy(tmp_path / "ri" / name, mix / name)
    with pytest.raises(CnnlabError, match="another net than its run folder's"):
        load_checkpoint(mix / "last.pt")
    for argv in (["export", str(mix), "--samples", "4"], ["evaluate", str(mix)], ["train", "--resume", str(mix)]):
        assert main(argv) != 0
        assert "another net than its run folder's" in one_line(capsys)
    assert not (mix / "last.onnx").exists() and not (mix / "summary.json").exists()
    load_checkpoint(tmp_path / "ri" / "last.pt")  # its own run's checkpoint loads


# ----------------------------------------------------------------------------- 5. --out suffixes


@pytest.mark.parametrize("fmt, out", [("onnx", "w.safetensors"), ("torchscript", "w2.safetensors")])
def test_export_refuses_a_safetensors_out(fmt, out, tiny_idx, tmp_path, capsys):
    run = run_folder(tmp_path / "r1", "basic_cnn", tiny_idx)
    assert main(["export", str(run), "--format", fmt, "--out", str(tmp_path / out), "--samples", "4"]) != 0
    assert "names a safetensors file" in one_line(capsys) and not (tmp_path / out).exists()
