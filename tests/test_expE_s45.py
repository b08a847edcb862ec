"""The export defects a tester found (expE, s45): export-weights wrote every checkpoint of a folder to one
model.safetensors; the check ran all --samples images as one batch (and onnxruntime's out-of-memory was a traceback);
a missing run folder with --checkpoint best was called "a checkpoint file"; exports wrote over cnnlab's shipped
weights and manifest; a manifest field of the wrong type was a traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import tiny_config, write_idx_dataset
from safetensors import safe_open

import cnnlab.export
import cnnlab.pretrained
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.export import export_run, export_safetensors


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def checkpoint_of(path: Path) -> str:
    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata()["checkpoint"]


# ----------------------------------------------------------------------------- D1. export-weights' default name


def test_export_weights_names_its_file_after_the_checkpoint(finished, tmp_path, monkeypatch, capsys):
    """expE D1: `export-weights RUN --checkpoint best`, `export-weights RUN/teacher.pt` and `export-weights
    nets/b.pt` all wrote `model.safetensors` beside the checkpoint, replacing the run's (or a.pt's) export without a
    word: the student run's export then held its teacher. Now the default follows the checkpoint, as `export`'s does:
    a run's last.pt keeps `model.safetensors` (the documented name), any other NAME.pt gets `NAME.safetensors`."""
    run = finished
    assert (run / "best.pt").is_file()
    assert main(["export-weights", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run / 'model.safetensors'}"
    model = (run / "model.safetensors").read_bytes()
    assert main(["export-weights", str(run), "--checkpoint", "best"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run / 'best.safetensors'}"
    assert checkpoint_of(run / "best.safetensors") == "best.pt"
    shutil.copyfile(run / "last.pt", run / "teacher.pt")  # as a distilled run's copy of its teacher
    assert export_safetensors(run / "teacher.pt") == run / "teacher.safetensors"
    assert checkpoint_of(run / "teacher.safetensors") == "teacher.pt"
    assert (run / "model.safetensors").read_bytes() == model and checkpoint_of(run / "model.safetensors") == "last.pt"
    nets = tmp_path / "nets"
    nets.mkdir()
    for name in ("a.pt", "b.pt"):
        shutil.copyfile(run / "last.pt", nets / name)
        assert export_safetensors(nets / name) == nets / name.replace(".pt", ".safetensors")
    assert sorted(p.name for p in nets.iterdir()) == ["a.pt", "a.safetensors", "b.pt", "b.safetensors"]
    # an --out folder gets the checkpoint's name inside it, as export's default does
    assert export_safetensors(run, "best", f"{tmp_path / 'out'}/") == tmp_path / "out" / "best.safetensors"
    # best.safetensors is a run's own export now: another run's export may not replace it
    other = tmp_path / "runs" / "r2"
    shutil.copytree(run, other)
    with pytest.raises(CnnlabError, match="is another run's own file"):
        export_safetensors(other, "best", run / "best.safetensors")


# ----------------------------------------------------------------------------- D2. the check's memory


@pytest.fixture
def run_300(tmp_path) -> Path:
    """A tiny run whose test split holds 300 images (more than one check batch)."""
    from cnnlab.engine import train

    data = write_idx_dataset(tmp_path / "tiny300", n_train=64, n_test=300)
    run = tmp_path / "r300"
    train(tiny_config(data, max_steps=2), out=run, quiet=True, log=lambda m: None)
    return run


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_check_runs_its_samples_in_bounded_batches(run_300, fmt, monkeypatch, capsys):
    """expE D2: the check ran all --samples images as one batch, for PyTorch and for the export: 3.4 GB at
    `export --pretrained inception --samples 10000`. Now every image is still checked, with the same tolerance, in
    batches of at most export.CHECK_BATCH (256), plus the first image alone."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    runner = f"_{fmt}_run"
    real, seen = getattr(cnnlab.export, runner), []

    def spy(data, batches):
        seen.extend(len(b) for b in batches)
        return real(data, batches)

    monkeypatch.setattr(cnnlab.export, runner, spy)
    assert main(["export", str(run_300), "--format", fmt, "--samples", "300"]) == 0
    out = capsys.readouterr().out
    assert seen == [256, 44, 1]
    assert "checked on 300 test images in batches of 256, 44 and 1: max abs logit difference" in out
    res = export_run(run_300, fmt, samples=300, out=run_300 / f"again{'.onnx' if fmt == 'onnx' else '.pt'}")
    assert (res.n_checked, res.batch_sizes) == (300, (256, 44, 1))


def test_onnxruntimes_out_of_memory_is_the_command_lines_one_line(finished, monkeypatch, capsys):
    """expE D2: onnxruntime running out of memory in the check (`ulimit -v 2500000; cnnlab export --pretrained
    inception --samples 10000`) ended in a 40-line traceback of its `Fail`; TorchScript's said `cnnlab: error: out of
    memory (an allocation of 553.0 MB failed); ...`. Now onnxruntime's says the same line (export._onnxruntime_error,
    cli._out_of_memory), and any other onnxruntime failure one line naming the other format; nothing is written."""
    ort = pytest.importorskip("onnxruntime")
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph

    failures = {
        "memory": Fail("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Concat node. "
                       "Name:'/incept1/Concat' Status Message: bfc_arena.cc:359 AllocateRawInternal Failed to "
                       "allocate memory for requested buffer of size 506880000"),
        "graph": InvalidGraph("[ONNXRuntimeError] : 10 : INVALID_GRAPH : This is an invalid model."),
    }

    class Session:
        def __init__(self, data, opts, **kwargs):
            assert opts.log_severity_level == 4  # onnxruntime's own coloured log line would be a second line
            if kind == "graph":
                raise failures[kind]

        def run(self, *args, **kwargs):
            raise failures[kind]

    monkeypatch.setattr(ort, "InferenceSession", Session)
    for kind, line in (("memory", "cnnlab: error: out of memory (an allocation of 506.9 MB failed); "),
                       ("graph", "cnnlab: error: onnxruntime could not run the ONNX export to check it ([ONNXRuntime"
                                 "Error] : 10 : INVALID_GRAPH : This is an invalid model.); nothing written: try "
                                 "--format torchscript")):
        assert main(["export", str(finished), "--samples", "8"]) == 2
        assert one_line(capsys).startswith(line)
        assert not (finished / "last.onnx").exists()


# ----------------------------------------------------------------------------- D3. a missing run with --checkpoint


def test_a_missing_run_folder_with_checkpoint_best_is_no_such_checkpoint(finished, tmp_path, monkeypatch, capsys):
    """expE D3: `cnnlab export runs/r2 --checkpoint best` (a typo for r1) said `runs/r2 is a checkpoint file, and
    choosing 'best' ... give the folder (runs)`, which only led to another refusal. Now a path with nothing there is
    said as it is without --checkpoint best (checkpoint.resolve_checkpoint), by every command that takes one."""
    monkeypatch.chdir(finished.parent.parent)  # runs/r1 is here
    missing = "runs/r2: no such checkpoint; pass a run directory or a .pt file written by cnnlab"
    for argv in (["export", "runs/r2"], ["export", "runs/r2", "--checkpoint", "best"],
                 ["export-weights", "runs/r2", "--checkpoint", "best"], ["evaluate", "runs/r2", "--checkpoint", "best"],
                 ["export", "runs/r2/", "--checkpoint", "best"]):
        assert main(argv) == 2
        assert one_line(capsys) == f"cnnlab: error: {missing}", argv
    os.symlink(tmp_path / "gone", "runs/lk")  # a link to nothing: said so, as without --checkpoint best
    assert main(["export", "runs/lk", "--checkpoint", "best"]) == 2
    assert one_line(capsys) == f"cnnlab: error: runs/lk is a link to {tmp_path / 'gone'}, which does not exist: " \
                               "remount what held it, or put it back"
    assert main(["export", "runs/r1/last.pt", "--checkpoint", "best"]) == 2  # a file that is there: as before
    assert "runs/r1/last.pt is a checkpoint file, and choosing 'best'" in one_line(capsys)


# ----------------------------------------------------------------------------- D4. the shipped files


@pytest.fixture
def weights(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped weights folder, as cnnlab's own (an export that got through writes into the copy)."""
    folder = tmp_path / "site" / "weights"
    shutil.copytree(cnnlab.pretrained.WEIGHTS_DIR, folder)
    monkeypatch.setattr(cnnlab.pretrained, "WEIGHTS_DIR", folder)
    return folder


def test_exports_never_write_into_the_shipped_weights_folder(weights, finished, tmp_path, monkeypatch, capsys):
    """expE D4: `export-weights --pretrained resnet --dataset fashion-mnist --out .../weights/resnet-mnist.safetensors`
    and `export --pretrained inception --out .../weights/manifest.json` wrote over a shipped file, after which every
    --pretrained and even `cnnlab models` failed until a reinstall; and `cd weights; export-weights --pretrained
    inception` said `--out` though none was typed. Now any file in that folder is refused before anything is loaded
    (pretrained.refuse_shipped, from export.check_target), and the default output is named as such."""
    before = {p.name: p.read_bytes() for p in weights.iterdir()}
    link = tmp_path / "lk.safetensors"
    link.symlink_to(weights / "resnet-mnist.safetensors")
    attempts = [
        ["export-weights", "--pretrained", "resnet", "--dataset", "fashion-mnist", "--out",
         str(weights / "resnet-mnist.safetensors")],
        ["export-weights", "--pretrained", "resnet", "--dataset", "fashion-mnist", "--out", str(link)],
        ["export", "--pretrained", "inception", "--samples", "8", "--out", str(weights / "manifest.json")],
        ["export", str(finished), "--samples", "8", "--out", str(weights / "new.onnx")],
        ["export-weights", str(finished), "--out", str(weights) + "/"],
        ["export-weights", str(finished), "--out", str(weights / ".." / "weights" / "x.safetensors")],
    ]
    for argv in attempts:
        assert main(argv) == 2, argv
        err = one_line(capsys)
        assert err.startswith("cnnlab: error: --out ") and "is in cnnlab's shipped weights folder" in err, err
        assert err.endswith("writing there would damage the install; give an --out elsewhere"), err
    assert {p.name: p.read_bytes() for p in weights.iterdir()} == before
    assert main(["models"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(weights)  # no --out typed: said as the default output, and how to give another
    assert main(["export-weights", "--pretrained", "inception"]) == 2
    assert one_line(capsys) == ("cnnlab: error: the default output inception-mnist.safetensors is the checkpoint "
                                "being exported; give --out FILE with another name")
    assert main(["export", "--pretrained", "inception", "--samples", "8"]) == 2
    assert one_line(capsys).startswith("cnnlab: error: the default output inception-mnist.onnx is in cnnlab's "
                                       "shipped weights folder")
    assert {p.name: p.read_bytes() for p in weights.iterdir()} == before


# ----------------------------------------------------------------------------- D5. the manifest's field types


@pytest.mark.parametrize("field, value", [("test_accuracy", "99.64"), ("config", None), ("seed", True),
                                          ("parameters", 1.5), ("file", 3)])
def test_a_manifest_field_of_the_wrong_type_is_a_damaged_manifest(weights, field, value, capsys):
    """expE D5: a manifest row with `"test_accuracy": "99.64"` ended `cnnlab models` and `export --pretrained` in
    `ValueError: Unknown format code 'f'`, and `"config": null` `predict --model` and `export` in `TypeError: 'NoneType'
    object is not a mapping`, where an unknown key was one line. Now each field is checked against the type
    pretrained.Pretrained declares (__post_init__), and the manifest is said to be damaged in the same one line."""
    manifest = weights / "manifest.json"
    data = json.loads(manifest.read_text())
    data["weights"][0][field] = value
    manifest.write_text(json.dumps(data))
    damaged = f"cnnlab: error: {manifest}: the pretrained-weights manifest is damaged (TypeError); reinstall cnnlab"
    for argv in (["models"], ["export", "--pretrained", "resnet", "--samples", "8"],
                 ["predict", "--model", "resnet", os.devnull]):
        assert main(argv) == 2, argv
        assert one_line(capsys) == damaged, argv
    with pytest.raises(CnnlabError, match="manifest is damaged"):
        cnnlab.create_model("resnet", pretrained=True)
