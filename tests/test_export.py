"""cnnlab export: ONNX (checked with onnxruntime, dynamic batch, metadata) and TorchScript round trips."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from apps_helpers import tiny_checkpoint
from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import main
from cnnlab.checkpoint import model_from_checkpoint
from cnnlab.errors import CnnlabError
from cnnlab.export import export_run, read_onnx_metadata

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("model", ["basic_cnn", "inception"])
def test_onnx_round_trip(model, tiny_idx, tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt", model=model, dataset_dir=tiny_idx)
    res = export_run(ckpt.parent, "onnx", samples=16)
    assert res.path == tmp_path / "run" / "last.onnx" and res.max_abs_diff < 1e-4 and res.n_checked == 16
    assert not list(res.path.parent.glob(".*tmp*"))  # no temporary file left behind

    # any batch size works (dynamic batch axis) and matches PyTorch
    net = model_from_checkpoint(load_checkpoint(ckpt)).eval()
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.shape[0] == "batch" and out.shape[0] == "batch"
    for batch in (1, 7):
        x = torch.randn(batch, 1, 28, 28)
        got = sess.run(None, {inp.name: x.numpy()})[0]
        with torch.inference_mode():
            want = net(x).numpy()
        assert got.shape == (batch, 10) and np.abs(got - want).max() < 1e-4

    meta = read_onnx_metadata(res.path)
    assert float(meta["normalization_mean"]) == 0.1307 and float(meta["normalization_std"]) == 0.3081
    assert json.loads(meta["classes"]) == [str(i) for i in range(10)] and meta["model"] == model


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_round_trip(tiny_idx, tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt", model="resnet", dataset_dir=tiny_idx)
    out = tmp_path / "exported" / "net.pt"
    res = export_run(ckpt, "torchscript", out=out, samples=8)
    assert res.path == out and res.max_abs_diff < 1e-4
    extra = {"cnnlab.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["cnnlab.json"])["normalization_std"] == "0.3081"
    x = torch.randn(3, 1, 28, 28)
    net = model_from_checkpoint(load_checkpoint(ckpt)).eval()
    with torch.inference_mode():
        assert (loaded(x) - net(x)).abs().max() < 1e-4


def test_cli_prints_max_difference(tiny_idx, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt", dataset_dir=tiny_idx)
    code = main(["export", str(ckpt.parent), "--format", "onnx", "--samples", "32"])
    out, _ = capsys.readouterr()
    m = re.search(r"max abs logit difference (\S+) \(limit (\S+): 0.0001 x the logits' largest magnitude, at least "
                  r"0.0001\)", out)
    assert code == 0 and m and float(m.group(1)) <= float(m.group(2)) and "checked on 32 test images" in out
    assert float(m.group(2)) >= 1e-4


def test_export_errors(tmp_path, capsys):
    # no dataset to check on: a one-line error naming the fix, and no file written
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt", dataset_dir=tmp_path / "gone")
    code = main(["export", str(ckpt), "--format", "torchscript"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "is not there (moved or deleted?); if it moved, give its new " \
                                                   "place: add --dataset idx:NEW_DIR" in err
    assert not (tmp_path / "run" / "last.torchscript.pt").exists()
    with pytest.raises(CnnlabError, match="unknown export format"):
        export_run(ckpt, "tflite")
    with pytest.raises(SystemExit):
        main(["export", str(ckpt), "--format", "tflite"])


def test_an_out_folder_gets_the_default_name_inside_it(tiny_idx, tmp_path):
    """Found by probing: ``export-weights RUN --out newdir/`` wrote a file named ``newdir``."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt", dataset_dir=tiny_idx)
    assert main(["export-weights", str(ckpt.parent), "--out", str(tmp_path / "new") + "/"]) == 0
    assert (tmp_path / "new" / "model.safetensors").is_file()
    assert main(["export", str(ckpt), "--samples", "4", "--out", str(tmp_path / "new")]) == 0  # an existing folder
    assert (tmp_path / "new" / "last.onnx").is_file()


def test_an_out_that_is_a_symbolic_link_is_written_through(tiny_idx, tmp_path):
    """Found by probing: ``export RUN --out link.onnx`` (a link to target.onnx) renamed the export over the link:
    the user's link was gone, a regular file in its place, and its target unchanged."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt", dataset_dir=tiny_idx)
    (tmp_path / "target.onnx").write_text("keep")
    (tmp_path / "link.onnx").symlink_to("target.onnx")
    (tmp_path / "w.safetensors").symlink_to("elsewhere.safetensors")  # dangling: the target is made
    assert main(["export", str(ckpt), "--samples", "4", "--out", str(tmp_path / "link.onnx")]) == 0
    assert main(["export-weights", str(ckpt.parent), "--out", str(tmp_path / "w.safetensors")]) == 0
    assert (tmp_path / "link.onnx").is_symlink() and (tmp_path / "w.safetensors").is_symlink()
    assert (tmp_path / "target.onnx").read_bytes()[:4] != b"keep"
    assert (tmp_path / "elsewhere.safetensors").stat().st_size > 1000


def test_an_out_named_for_the_other_format_is_refused(tmp_path):
    """--format torchscript --out model.onnx wrote TorchScript into a file onnxruntime then failed on (and ONNX
    into model.pt): refused before anything is exported, naming both fixes."""
    from pathlib import Path

    from cnnlab.export import check_suffix

    with pytest.raises(CnnlabError, match=r"^--out m\.onnx names an ONNX file, and --format torchscript writes a "
                                          r"TorchScript one; give --format onnx, or an --out ending in \.pt$"):
        check_suffix(Path("m.onnx"), "torchscript")
    with pytest.raises(CnnlabError, match=r"names a TorchScript file, and --format onnx writes an ONNX one; give "
                                          r"--format torchscript, or an --out ending in \.onnx$"):
        check_suffix(Path("m.PT"), "onnx")
    for path, fmt in (("m.onnx", "onnx"), ("m.torchscript.pt", "torchscript"), ("m.pt", "torchscript"),
                      ("m.bin", "onnx"), ("m", "torchscript")):
        check_suffix(Path(path), fmt)

    from cnnlab.export import export_safetensors

    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt")
    for name in ("w.onnx", "w.pt"):
        with pytest.raises(CnnlabError, match=r"and export-weights writes safetensors; give an --out ending in "):
            export_safetensors(ckpt.parent, out=tmp_path / name)
        assert not (tmp_path / name).exists()
    assert export_safetensors(ckpt.parent, out=tmp_path / "w.st") == tmp_path / "w.st"


def test_the_wrote_line_of_a_name_with_a_newline_stays_one_line(tmp_path, capsys):
    """Found by probing: ``export --out $'new\\nline.onnx'`` printed its 'wrote' line split in two."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt")
    assert main(["export-weights", str(ckpt.parent), "--out", str(tmp_path / "new\nline.safetensors")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "new\\nline.safetensors" in out
    assert (tmp_path / "new\nline.safetensors").is_file()


def test_the_input_layout_says_how_the_nets_training_images_were_prepared(tmp_path):
    """``input_layout`` said "white ink on black, MNIST-style centred" for every net: a folder run of black letters on
    white paper, prepared so, read 9 of 48 right (47 prepared as the folder was), and Fashion-MNIST's clothes are
    trimmed and fitted, not centred as digits. Now it names the preparation of the net's own dataset kind."""
    from safetensors import safe_open

    from cnnlab.export import export_metadata, export_safetensors

    def layout(dataset: str, mean: float) -> str:
        state = load_checkpoint(tiny_checkpoint(tmp_path / f"{mean}.pt", dataset=dataset, mean=mean))
        return export_metadata(state)["input_layout"]

    digits = layout("mnist", 0.1307)
    assert digits.startswith("NCHW float32, (batch, 1, 28, 28)") and "white ink on black" in digits
    assert "centred by its centre of mass" in digits and "20 px of 28" in digits
    clothes = layout("fashion-mnist", 0.286)
    assert "trimmed to the item and fitted" in clothes and "not centred by mass" in clothes
    assert "white ink" not in clothes
    folder = layout("folder:/data/paper", 0.9)
    for words in ("grayscale, resized to 28x28", "not inverted, not centred", "light paper (the training images' mean "
                  "0.900)"):
        assert words in folder
    assert "white ink" not in folder and "centred by" not in folder
    assert "dark paper" in layout("folder:/data/mnist_png", 0.13)
    idx = layout("idx:/data/letters", 0.2)
    assert "as the idx files hold them" in idx and "dark paper" in idx and "centred by" not in idx

    run = tmp_path / "paper-run"
    tiny_checkpoint(run / "last.pt", dataset="folder:/data/paper", mean=0.9)
    with safe_open(str(export_safetensors(run)), "pt") as fh:  # what export-weights writes (and ONNX: the same dict)
        assert fh.metadata()["input_layout"] == folder


def test_the_shipped_weights_say_how_their_input_is_prepared():
    """The shipped files were written when every net's ``input_layout`` said "MNIST-style centred"; their metadata was
    rewritten (tensors unchanged): each says what ``export`` writes for its dataset now, and the manifest's SHA-256
    is the file's."""
    import json

    from safetensors import safe_open

    from cnnlab.export import input_layout
    from cnnlab.fileio import sha256_file
    from cnnlab.pretrained import weights_dir

    manifest = json.loads((weights_dir() / "manifest.json").read_text())
    assert len(manifest["weights"]) == 4
    for entry in manifest["weights"]:
        path = weights_dir() / entry["file"]
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        assert meta["input_layout"] == input_layout(json.loads(meta["data"]))
        assert ("clothing" in meta["input_layout"]) == (entry["dataset"] == "fashion-mnist")
        assert sha256_file(path) == entry["sha256"]
