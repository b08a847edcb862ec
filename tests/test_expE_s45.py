"""The export defects a tester found (expE, s45): export-weights wrote every checkpoint of a folder to one
model.safetensors; the check ran all --samples images as one batch (and onnxruntime's out-of-memory was a traceback);
a missing run folder with --checkpoint best was called "a checkpoint file"; exports wrote over cnnlab's shipped
weights and manifest; a manifest field of the wrong type was a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.export import export_safetensors


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
