"""A third look at weights and checkpoints (a tester's races and odd files), and translucent images."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from apps_helpers import draw_digit, tiny_checkpoint
from cnnlab import checkpoint as ckpt_module
from cnnlab.checkpoint import load_checkpoint, load_checkpoint_and_digest, sidecar
from cnnlab.cli import main


def test_a_save_landing_between_the_reads_is_read_again_not_called_damaged(tmp_path, monkeypatch):
    """Loads looped beside a run saving every 5 steps: 7 in 10,655 said "SHA-256 ... does not match last.pt.sha256;
    the file was truncated or altered: ... retrain" (the file read, then its sidecar, cut to the next save's hash);
    and 1% of exports named the next checkpoint's hash beside the weights of the one before."""
    path = tiny_checkpoint(tmp_path / "last.pt")
    good = sidecar(path).read_text()
    sidecar(path).write_text("0" * 64 + "  last.pt\n")  # the moment after a save's cut: another file's hash
    settled = []

    def settle(seconds):  # the save settles while the reader waits
        settled.append(seconds)
        sidecar(path).write_text(good)

    monkeypatch.setattr(ckpt_module.time, "sleep", settle)
    state, digest = load_checkpoint_and_digest(path)
    assert settled and digest == hashlib.sha256(path.read_bytes()).hexdigest() and "state_dict" in state
    sidecar(path).write_text("0" * 64 + "  last.pt\n")  # a damaged file stays damaged, however often it is read
    monkeypatch.setattr(ckpt_module.time, "sleep", lambda s: None)
    with pytest.raises(cnnlab.CheckpointError, match="does not match last.pt.sha256"):
        load_checkpoint(path)


def test_odd_weights_files_load_or_are_named(tmp_path, capsys):
    net = cnnlab.create_model("resnet")
    sd = net.state_dict()
    lightning = tmp_path / "lightning.ckpt"  # a LightningModule's self.model: every key under "model."
    torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3}, lightning)
    assert main(["evaluate", "--weights", str(lightning), "--model", "resnet", "--no-report", "--dataset",
                 "idx:" + str(_tiny(tmp_path))]) == 0
    scripted = tmp_path / "ts.safetensors"  # TorchScript renamed: its zip, not the suffix, says what it is
    torch.jit.save(torch.jit.script(net.eval()), str(scripted))
    plain = tmp_path / "plain.pt"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("hello.txt", "hi")
    for path, said in ((scripted, "a TorchScript export"), (plain, "a zip archive that torch.save did not write")):
        capsys.readouterr()
        assert main(["evaluate", "--weights", str(path), "--model", "resnet", "--no-report", "--dataset",
                     "idx:" + str(tmp_path / "tiny")]) != 0
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err


def test_weights_that_record_their_model_need_no_model_flag(tmp_path, capsys):
    run = tmp_path / "r"
    tiny_checkpoint(run / "last.pt", model="resnet")
    out = tmp_path / "w.safetensors"
    assert main(["export-weights", str(run / "last.pt"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(out), "--no-report", "--dataset", "idx:" + str(_tiny(tmp_path))]) == 0
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("opacity", [250, 200, 128])
def test_an_evenly_translucent_image_is_read_by_its_gray(opacity):
    """A layer exported at 98% (or 50%) opacity: "the ink is one dot or blob (280x280 px)" (its opacity, even
    everywhere, taken for ink); a digit on a clear background is still read by its opacity."""
    predict = cnnlab.predictor(model="resnet")
    digit = draw_digit(canvas=(280, 280), box=(60, 30, 220, 250))
    want = predict(digit)
    rgba = digit.convert("RGBA")
    rgba.putalpha(opacity)
    got = predict(rgba)
    assert got.label == want.label and got.probabilities == pytest.approx(want.probabilities, abs=0.02)
    clear = Image.new("RGBA", digit.size, (0, 0, 0, 0))
    clear.putalpha(Image.fromarray(255 - np.asarray(digit)))  # the strokes opaque, the rest clear
    assert predict(clear).label == want.label


def _tiny(tmp_path: Path) -> Path:
    from conftest import write_idx_dataset

    return write_idx_dataset(tmp_path / "tiny", n_train=64, n_test=16)


def test_a_weights_file_scored_on_other_classes_is_warned_like_a_run(tmp_path, capsys):
    """The shipped Fashion-MNIST file scored on digits (16.63%) said nothing, though its metadata names its classes."""
    shipped = Path(cnnlab.__file__).parent / "weights" / "resnet-fashion-mnist.safetensors"
    assert main(["evaluate", "--weights", str(shipped), "--no-report", "--dataset", "idx:" + str(_tiny(tmp_path))]) == 0
    said = capsys.readouterr()
    assert "warning: the net learned the classes of fashion-mnist (T-shirt/top" in said.out + said.err
