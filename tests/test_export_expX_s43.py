"""The export defects a tester (expX) found: an EMNIST-named idx: run's input layout, the provenance of the shipped
weights' exports, a run still training exported into a folder inside it, and the check's absolute tolerance (and a
diverged run's last.pt exported)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from apps_helpers import tiny_checkpoint
from conftest import write_idx_dataset
from safetensors import safe_open

from cnnlab.checkpoint import TrainState, load_checkpoint, save_checkpoint
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.data import load_dataset
from cnnlab.data.idx import read_idx
from cnnlab.errors import CnnlabError
from cnnlab.export import export_metadata, export_run, export_safetensors
from cnnlab.pretrained import find_pretrained
from cnnlab.runs import RunLock, write_status

ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 28}


# ----------------------------------------------------------------------------- 1. EMNIST's transposed files


def emnist_named(directory: Path) -> Path:
    """The tiny dataset's four files under EMNIST's names (``emnist-digits-*``, gzip), as EMNIST ships them."""
    tmp = write_idx_dataset(directory / ".gen", n_train=50, n_test=20, seed=1)
    for official in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                     "t10k-labels-idx1-ubyte"):
        target = directory / f"emnist-digits-{official.replace('t10k-', 'test-')}.gz"
        target.write_bytes(gzip.compress((tmp / official).read_bytes()))
        (tmp / official).unlink()
    tmp.rmdir()
    return directory


def test_an_emnist_named_idx_nets_input_layout_says_to_transpose_the_files_images(tmp_path):
    """expX 1: an idx: run on files named emnist-* trained on their images transposed upright (the training line said
    so), and its exports' input_layout said "as the idx files hold them": a consumer that followed it read 55.82%,
    transposed 96.48%. Now the layout says to transpose them, and doing what it says gives the images cnnlab trained
    and evaluated on (the graph holds no transpose: the Predictor, too, takes upright images)."""
    directory = emnist_named(tmp_path / "em")
    data = load_dataset(f"idx:{directory}")
    state = {"model": {"name": "basic_cnn", "args": ARGS}, "data": data.info()}
    layout = export_metadata(state)["input_layout"]
    assert "as the idx files hold them" not in layout
    assert "transposed (its rows are the image's columns)" in layout and "images.swapaxes(-1, -2)" in layout
    assert "upright" in layout and "Predictor" in layout
    # what it says to do, done to the file's own arrays, is what cnnlab trained and evaluated on
    stored = read_idx(directory / "emnist-digits-test-images-idx3-ubyte.gz", 3)[0]
    assert np.array_equal(stored.swapaxes(-1, -2), data.test_images[:, 0].numpy())
    assert not np.array_equal(stored, data.test_images[:, 0].numpy())
    # the same files under the official names are used as they are, and said so
    official = write_idx_dataset(tmp_path / "official", n_train=50, n_test=20, seed=1)
    plain = export_metadata({"model": state["model"], "data": load_dataset(f"idx:{official}").info()})
    assert "as the idx files hold them" in plain["input_layout"] and "transpose" not in plain["input_layout"]


# ----------------------------------------------------------------------------- 2. the shipped weights' provenance


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_exports_of_the_shipped_weights_record_the_file_and_its_sha256(tmp_path, monkeypatch, capsys):
    """expX 2: `export --pretrained` recorded no checkpoint and no SHA-256, though --help says every export records
    the checkpoint it came from (the shipped files were rewritten once: their version matters); `export-weights
    --pretrained` was an unknown flag. Both record the shipped file's name and the manifest's SHA-256 (which the
    file was checked against before loading) and how it was made."""
    pytest.importorskip("onnxruntime")
    from cnnlab import export
    from cnnlab.export import read_onnx_metadata

    monkeypatch.setattr(export, "sample_inputs", lambda state, n, *a: torch.rand(n, 1, 28, 28))  # no MNIST needed
    entry = find_pretrained("resnet", "fashion-mnist")
    meta = read_onnx_metadata(export_run(None, "onnx", out=tmp_path / "r.onnx", samples=4, pretrained="resnet",
                                         dataset="fashion-mnist").path)
    assert (meta["checkpoint"], meta["checkpoint_sha256"]) == ("resnet-fashion-mnist.safetensors", entry.sha256)
    assert entry.command in meta["pretrained"] and "checkpoint_note" not in meta
    monkeypatch.chdir(tmp_path)
    assert main(["export-weights", "--pretrained", "inception"]) == 0
    with safe_open(str(tmp_path / "inception-mnist.safetensors"), framework="pt") as fh:
        weights = fh.metadata()
    mnist = find_pretrained("inception", "mnist")
    assert (weights["checkpoint"], weights["checkpoint_sha256"]) == ("inception-mnist.safetensors", mnist.sha256)
    assert weights["input_layout"].startswith("NCHW float32, (batch, 1, 28, 28)") and "mnist" in weights["pretrained"]
    # a run and --pretrained at once, --dataset without --pretrained, --checkpoint with it: one line each
    capsys.readouterr()
    for argv in (["export-weights", "x", "--pretrained", "resnet"], ["export-weights", "x", "--dataset", "mnist"],
                 ["export-weights", "--pretrained", "resnet", "--checkpoint", "best"]):
        assert main(argv) == 2
        assert one_line(capsys).startswith("cnnlab: error: ")
    # written over the shipped file itself: refused
    with pytest.raises(CnnlabError, match="is the checkpoint being exported"):
        export_safetensors(pretrained="resnet", out=mnist.path.with_name("resnet-mnist.safetensors"))


# ----------------------------------------------------------------------------- 3. a folder inside a training run


def run_folder(folder: Path, dataset_dir: Path, model: str = "basic_cnn", scale: float = 1.0) -> Path:
    """A run folder as training leaves it (config.json, last.pt at step 20), its weights times ``scale``."""
    ckpt = tiny_checkpoint(folder / "last.pt", model=model, dataset_dir=dataset_dir)
    state = load_checkpoint(ckpt)
    state.pop("format"), state.pop("version")
    state["train_state"] = TrainState(epoch=1, step=20).to_dict()
    for tensor in state["state_dict"].values():
        if tensor.is_floating_point():
            tensor.mul_(scale)
    save_checkpoint(ckpt, state)
    cfg = TrainConfig(model=model, dataset=f"idx:{dataset_dir}", device="cpu").to_dict()
    (folder / "config.json").write_text(json.dumps({"config": cfg, "model_args": ARGS}))
    return folder


@pytest.mark.parametrize("command", ["export", "export-weights"])
def test_a_run_still_training_is_not_exported_into_a_folder_inside_it(command, tiny_idx, tmp_path, capsys):
    """expX 3: `export RUN --out RUN/sub/x.onnx` (and export-weights `--out RUN/sub2/`) wrote into a run still
    training: only the folder right above the file was compared with the run's. Any path inside it is refused: a
    subfolder, through a link to the run, with `..`."""
    run = run_folder(tmp_path / "busy", tiny_idx)
    (tmp_path / "link").symlink_to(run)
    name = "x.onnx" if command == "export" else "x.safetensors"
    outs = [run / "sub" / name, str(run / "sub2") + "/", tmp_path / "link" / "deep" / name,
            tmp_path / "elsewhere" / ".." / "busy" / "sub3" / name]
    with RunLock(run):  # its training holds the run's lock
        for out in outs:
            assert main([command, str(run), "--out", str(out), *(["--samples", "4"] if command == "export" else [])]) != 0
            err = one_line(capsys)
            assert "still training" in err and "nothing written into it" in err, err
        assert sorted(p.name for p in run.iterdir()) == [".lock", "config.json", "last.pt", "last.pt.sha256"]
        assert main(["export-weights", str(run), "--out", str(tmp_path / "outside" / "w.safetensors")]) == 0


# ----------------------------------------------------------------------------- 4. the check's tolerance


def test_the_check_holds_the_logits_to_their_own_scale(tiny_idx, tmp_path, capsys):
    """expX 4: ONNX's logits of a net whose logits reach 1e7-1e8 differ from PyTorch's by float32's rounding (32 of
    1.8e8, 2e-7 of it), and the absolute 1e-4 refused the export blaming the exporter ("try the other --format").
    The limit is 1e-4 of the logits' largest magnitude (at least 1e-4), and a refusal says it."""
    pytest.importorskip("onnxruntime")
    run = run_folder(tmp_path / "big", tiny_idx, model="resnet", scale=20.0)  # logits of about 1e7
    res = export_run(run, "onnx", samples=64)
    assert res.path.exists() and res.limit > 100 and res.max_abs_diff <= res.limit
    assert main(["export", str(run), "--out", str(tmp_path / "b.onnx"), "--samples", "16"]) == 0
    assert "x the logits' largest magnitude" in capsys.readouterr().out

    from cnnlab.export import check_logits

    want = [np.array([[1.8e8, -3.0e7]], dtype=np.float32)]
    assert check_logits("onnx", [want[0] + 32], want) == (32.0, pytest.approx(1.8e4))
    with pytest.raises(CnnlabError, match=r"differs from PyTorch by 1\.80e\+05 in the logits, whose largest magnitude "
                                          r"is 1\.80e\+08 \(limit 0\.0001 x that, at least 0\.0001: 1\.80e\+04\)"):
        check_logits("onnx", [want[0] * np.float32(1.001)], want)
    small = [np.array([[0.5, -0.2]], dtype=np.float32)]
    with pytest.raises(CnnlabError, match=r"limit 0\.0001 x that, at least 0\.0001: 1\.00e-04"):
        check_logits("torchscript", [small[0] + 2e-4], small)
    with pytest.raises(CnnlabError, match=r"the net's own logits \(PyTorch's\) are not finite .* lower --lr"):
        check_logits("onnx", small, [np.array([[np.inf, 0.0]], dtype=np.float32)])


@pytest.mark.parametrize("command", ["export", "export-weights"])
def test_a_diverged_runs_last_checkpoint_is_not_exported(command, tiny_idx, tmp_path, capsys):
    """expX 4: the last.pt a diverged run keeps (its weights when the loss exploded: logits of 1e8 that read 10%) was
    exported by TorchScript without a word. It is refused as --teacher refuses it (runs.diverged, its status.json),
    naming its best.pt when there is one; that best.pt is exported."""
    run = run_folder(tmp_path / "nan", tiny_idx)
    write_status(run, "failed", "training diverged: the loss exploded (1.66e+06 per image, where a net that guesses "
                                "scores 2.3) at step 12 (epoch 1, batch 12); the learning rate (0.3) is the likely "
                                "cause: lower --lr (e.g. 0.03)")
    extra = ["--samples", "4", "--format", "torchscript"] if command == "export" else []
    assert main([command, str(run), "--out", str(tmp_path / "o" / "x"), *extra]) == 2
    err = one_line(capsys)
    assert err.startswith(f"cnnlab: error: {run} failed, training diverged: the loss exploded") and "lower --lr" in err
    assert "--checkpoint best" not in err and not (tmp_path / "o").exists()
    tiny_checkpoint(run / "best.pt", dataset_dir=tiny_idx)
    assert main([command, str(run / "last.pt"), *extra]) == 2
    assert f"(cnnlab {command} {run} --checkpoint best)" in one_line(capsys)
    assert main([command, str(run), "--checkpoint", "best", "--out", str(tmp_path / "ok" / "b"), *extra]) == 0
    assert os.listdir(tmp_path / "ok")
