"""Defects a tester (probe docs, s47) found where the docs are a contract: a typed ``--checkpoint last`` (or the API's
``which='last'``) beside ``RUN/best.pt`` answered from best.pt without a word; ``cnnlab predict RUN --json -`` refused
its ``-`` (standard input) as an unrecognized argument; ``--show-input`` typed before the images put its image last,
and ``--show-input -`` took ``-`` for its DIR."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

import cnnlab
from apps_helpers import draw_digit
from cnnlab import CnnlabError
from cnnlab.cli import main
from cnnlab.evaluation import evaluate_run
from cnnlab.predict import Predictor
from conftest import one_line, trained_once


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished tiny run of two epochs: its last.pt and best.pt."""
    return trained_once(tmp_path_factory, "cliF", epochs=2, threads=1)


def _stdin(monkeypatch, data: bytes) -> None:
    """Standard input that holds ``data`` and is no terminal (``cnnlab predict ... - < digit.png``)."""
    stream = io.TextIOWrapper(io.BytesIO(data))
    monkeypatch.setattr(stream, "isatty", lambda: False)
    monkeypatch.setattr(sys, "stdin", stream)


# ----------------------------------------------------------------------------- D1: --checkpoint last beside best.pt


def test_a_typed_checkpoint_last_beside_best_pt_is_refused_in_the_cli_and_the_api(run, tmp_path, capsys):
    """D1: ``cnnlab evaluate r1/best.pt --checkpoint last`` measured best.pt (``[r1/best.pt]``, rc 0), ``predict`` and
    ``export-weights`` used it too (its metadata ``checkpoint``: ``best.pt``), and ``cnnlab.predictor('r1/best.pt',
    which='last')`` gave ``{'file': 'r1/best.pt', ...}``: the weights not asked for, without a word. Now refused as
    ``--checkpoint best`` beside last.pt is, naming the folder and last.pt (``checkpoint.resolve_checkpoint``)."""
    best, out = run / "best.pt", tmp_path / "w.safetensors"
    said = f"{best} is a checkpoint file, and choosing 'last' (--checkpoint last) picks a file of a run folder: " \
           f"give the folder ({run}), or the file last.pt itself"
    digit = tmp_path / "d.png"
    draw_digit().save(digit)
    for argv in (["evaluate", str(best), "--checkpoint", "last", "--no-report", "--device", "cpu"],
                 ["predict", str(best), "--checkpoint", "last", str(digit), "--device", "cpu"],
                 ["export-weights", str(best), "--checkpoint", "last", "--out", str(out)],
                 ["export", str(best), "--checkpoint", "last", "--format", "torchscript", "--out", str(tmp_path / "x.pt")],
                 ["analyze", "branches", str(best), "--checkpoint", "last"]):
        assert main(argv) == 2, argv
        assert one_line(capsys) == f"cnnlab: error: {said}", argv
    assert not out.exists() and not (tmp_path / "x.pt").exists()
    api = said.replace("(--checkpoint last)", "(which='last')")
    for call in (lambda: cnnlab.predictor(best, which="last"), lambda: cnnlab.Predictor.from_run(best, which="last")):
        with pytest.raises(CnnlabError) as caught:
            call()
        assert str(caught.value) == api
    with pytest.raises(CnnlabError, match=r"choosing 'last' \(--checkpoint last\)"):  # the library's own callers
        Predictor.from_run(best, which="last", device="cpu")
    with pytest.raises(CnnlabError, match=r"choosing 'last' \(--checkpoint last\)"):
        evaluate_run(best, which="last", device="cpu")


def test_every_default_and_matching_checkpoint_still_works(run, tmp_path, capsys):
    """D1's other side: no ``--checkpoint`` (no ``which``) takes a folder's last.pt and a file as given, and a typed one
    that names the file given (``r1/last.pt --checkpoint last``, ``r1/best.pt --checkpoint best``) is taken."""
    cases = [([str(run)], "last.pt"), ([str(run / "best.pt")], "best.pt"), ([str(run), "--checkpoint", "best"], "best.pt"),
             ([str(run / "last.pt"), "--checkpoint", "last"], "last.pt"),
             ([str(run / "best.pt"), "--checkpoint", "best"], "best.pt")]
    for given, file in cases:
        assert main(["evaluate", *given, "--no-report", "--device", "cpu"]) == 0, given
        assert capsys.readouterr().out.strip().endswith(f"[{run / file}]"), given
    assert cnnlab.predictor(run / "best.pt").checkpoint["file"] == "r1/best.pt"
    assert cnnlab.predictor(run).checkpoint["file"] == "r1/last.pt"
    assert cnnlab.predictor(run / "last.pt", which="last").checkpoint["file"] == "r1/last.pt"
    assert cnnlab.Predictor.from_run(run / "best.pt", which="best").checkpoint["file"] == "r1/best.pt"
    loaded = cnnlab.load_run(run / "best.pt")  # a Run of best.pt brings best, and which='last' its folder's last.pt
    assert cnnlab.predictor(loaded).checkpoint["file"] == "r1/best.pt"
    assert cnnlab.predictor(loaded, which="last").checkpoint["file"] == "r1/last.pt"
    assert loaded.evaluate(which="last", device="cpu").accuracy == evaluate_run(run, device="cpu")[0].accuracy
    out = tmp_path / "w.safetensors"
    assert main(["export-weights", str(run / "best.pt"), "--out", str(out)]) == 0
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        assert f.metadata()["checkpoint"] == "best.pt"


# ----------------------------------------------------------------------------- D2: '-' after an option


def test_standard_input_is_taken_after_an_option_too(run, tmp_path, capsys, monkeypatch):
    """D2: ``cnnlab predict r1 --json - < t0.png`` and ``cnnlab predict --model resnet t1.png --top-k 1 - < t0.png``
    said ``unrecognized arguments: -`` (rc 2), while ``predict r1 - < t0.png`` read it: the images typed after an
    option (``cli._take_loose_inputs``) left ``-`` out."""
    digit = tmp_path / "d.png"
    draw_digit().save(digit)
    _stdin(monkeypatch, digit.read_bytes())
    assert main(["predict", str(run), "--json", "-", "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in rows] == ["stdin"]
    _stdin(monkeypatch, digit.read_bytes())
    assert main(["predict", str(run), str(digit), "--top-k", "1", "-", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [str(digit), "stdin"] and lines[0].split()[1:] == lines[1].split()[1:]
    with pytest.raises(SystemExit) as exited:  # an unknown option is still refused, by argparse
        main(["predict", str(run), "--json", "-x", str(digit)])
    assert exited.value.code == 2 and one_line(capsys).startswith("cnnlab: error: unrecognized arguments: -x;")


# ----------------------------------------------------------------------------- D3: --show-input before the images


def test_show_input_typed_before_the_images_keeps_their_order(run, tmp_path, capsys, monkeypatch):
    """D3 (1): ``cnnlab predict --model resnet --show-input t0.png t1.png`` printed t1.png's row and ``wrote`` line
    first (and ``--json``'s array likewise): the image taken as --show-input's value was put last. Now each image
    stands where it was typed (``cli.predict.images_in_place``)."""
    monkeypatch.chdir(tmp_path)
    draw_digit().save("t0.png")
    draw_digit(box=(80, 40, 220, 260)).save("t1.png")
    cases = [(["--show-input", "t0.png", "t1.png"], ["t0.png", "t1.png"]),
             (["--show-input=t0.png", "t1.png"], ["t0.png", "t1.png"]),
             (["t1.png", "--show-input", "t0.png"], ["t1.png", "t0.png"]),
             (["t0.png", "--top-k", "1", "t1.png", "--show-input", "t0.png", "t1.png"],
              ["t0.png", "t1.png", "t0.png", "t1.png"])]
    for given, order in cases:
        assert main(["predict", str(run), *given, "--json", "--device", "cpu"]) == 0, given
        rows = json.loads(capsys.readouterr().out)
        assert [r["file"] for r in rows] == order, given
        assert all(r["input_image"] for r in rows), given
    assert main(["predict", str(run), "--show-input", "t0.png", "t1.png", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:2]] == ["t0.png", "t1.png"]
    assert out[2:] == ["wrote t0.input.png (what the net saw of t0.png)", "wrote t1.input.png (what the net saw of t1.png)"]
    Path("seen").mkdir()  # a folder stays DIR
    assert main(["predict", str(run), "--show-input", "seen", "t1.png", "--device", "cpu"]) == 0
    assert Path("seen/t1.input.png").is_file()


def test_show_input_dash_reads_standard_input(run, tmp_path, capsys, monkeypatch):
    """D3 (2): ``cnnlab predict --model resnet --show-input - < t0.png`` said ``give the images to predict`` (rc 2):
    ``-`` was taken for --show-input's DIR. Now it is the image read from standard input, as ``- --show-input`` is."""
    monkeypatch.chdir(tmp_path)
    draw_digit().save("t0.png")
    _stdin(monkeypatch, Path("t0.png").read_bytes())
    assert main(["predict", str(run), "--show-input", "-", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[0] == "stdin" and out[1] == "wrote stdin.input.png (what the net saw of stdin)"
    assert Path("stdin.input.png").is_file()
