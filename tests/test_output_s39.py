"""Issue 'out' (s39): what cnnlab writes to stdout and the terminal. Every --json output is strict JSON (null for a
non-finite number); a summary.json whose accuracy is not finite is damaged; run folder names are escaped in what
train and evaluate print; --help/--version into a full disk or a closed stdout is one line; a stdout that cannot
encode a name escapes it; the runs table is aligned by display width."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unicodedata

import pytest

from cnnlab.cli import main
from cnnlab.cli.runs import format_runs
from cnnlab.runs import describe_run, find_runs


def _strict(text: str):
    """``text`` parsed as JSON, refusing Python's ``NaN``/``Infinity`` (which no other JSON parser takes)."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def _cnnlab(*args: str, **kwargs) -> subprocess.CompletedProcess:
    streams = {} if "stdout" in kwargs else {"capture_output": True}
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], text=True, timeout=120, **streams, **kwargs)


# ----------------------------------------------------------------------------- 1. strict JSON


def test_evaluate_json_of_a_net_with_nan_weights_is_strict_json(tiny_idx, tmp_path, capsys):
    import torch

    from cnnlab.models import create_model

    state = create_model("basic_cnn").state_dict()
    for key in ("fc.weight", "fc.bias"):
        state[key].fill_(float("nan"))
    weights = tmp_path / "nan.pt"
    torch.save(state, weights)
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(weights), "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}",
                 "--json", "--no-report", "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    result = _strict(line)  # was "test_loss": NaN
    assert result["test_loss"] is None and result["n"] == 64


def test_runs_json_and_table_of_an_infinite_accuracy(finished, capsys):
    summary = json.loads((finished / "summary.json").read_text())
    summary["accuracy"] = float("inf")
    (finished / "summary.json").write_text(json.dumps(summary))  # "accuracy": Infinity
    capsys.readouterr()
    assert main(["runs", "--root", str(finished.parent), "--json"]) == 0
    (row,) = _strict(capsys.readouterr().out)  # was "final_acc": Infinity
    assert row["final_acc"] is None and row["status"] == "damaged" and "accuracy is inf" in row["detail"]
    assert main(["runs", "--root", str(finished.parent)]) == 0
    table = capsys.readouterr().out
    assert "inf%" not in table and "damaged" in table


def test_a_nan_accuracy_in_summary_json_is_damage(finished):
    text = (finished / "summary.json").read_text()
    summary = json.loads(text)
    (finished / "summary.json").write_text(json.dumps({**summary, "accuracy": float("nan")}))
    row = describe_run(finished)
    assert row["final_acc"] is None and row["status"] == "damaged"


# ----------------------------------------------------------------------------- 2. names escaped


def test_train_resume_and_evaluate_print_a_run_folder_name_escaped(tiny_idx, tmp_path, capsys):
    run = tmp_path / "nr" / "ctl\x1b]0;TITLE\x07 a\nb"
    common = ["--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--batch-size", "32", "--device", "cpu"]
    capsys.readouterr()
    assert main(["train", *common, "--epochs", "1", "--out", str(run)]) == 0
    assert main(["train", *common, "--epochs", "2", "--resume", str(run)]) == 0
    assert main(["evaluate", str(run)]) == 0
    captured = capsys.readouterr()
    for text in (captured.out, captured.err):
        assert "\x1b" not in text and "\x07" not in text
    lines = captured.out.splitlines()
    escaped = "ctl\\x1b]0;TITLE\\x07 a\\nb"
    for start in (f"{run.parent.name}", "final test accuracy", "resuming", "evaluating", "wrote summary.json"):
        assert any(escaped in line for line in lines if start in line), start
    # the folder as a shell takes it back (issue out2): $'...', its escapes bash's own
    shown = f"$'{run.parent}/{escaped}'"
    assert sum(line.endswith(f"run saved in {shown}") for line in lines) == 2
    assert lines[-1].endswith(f"{escaped}/last.pt]")
    assert (run / "summary.json").is_file()  # the folder keeps its real name


# ----------------------------------------------------------------------------- 3. help into a full disk


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device whose every write is ENOSPC)")
@pytest.mark.parametrize("args", [["--help"], [], ["--version"], ["predict", "--help"], ["help", "runs"]])
def test_help_and_version_into_a_full_disk_are_one_line(args):
    with open("/dev/full", "w") as full:
        proc = _cnnlab(*args, stdout=full, stderr=subprocess.PIPE)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == ["cnnlab: error: cannot write the output (No space left on device); free some "
                                        "space where it goes, or send it elsewhere"]


def test_help_into_a_closed_stdout_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "runs", "--help"], stderr=subprocess.PIPE, text=True,
                          timeout=120, preexec_fn=lambda: os.close(1))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "standard output is closed" in proc.stderr


# ----------------------------------------------------------------------------- 4. an ASCII stdout


def test_runs_on_an_ascii_stdout_escapes_a_name_it_cannot_encode(finished):
    shutil.copytree(finished, finished.parent / "réseau")
    proc = _cnnlab("runs", "--root", str(finished.parent), env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0, proc.stderr
    # the run column is what a shell takes back ($'.../r\u00e9seau'), not stdout's own escape (r\xe9seau: one byte)
    assert "/runs/r\\u00e9seau'" in proc.stdout and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- 5. the table's columns


def test_runs_table_pads_by_display_width(finished, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = finished.parent
    nfd = unicodedata.normalize("NFD", "réseauéé")
    for name in (nfd, "网络", "r" * 50, unicodedata.normalize("NFD", "é" * 50)):
        shutil.copytree(finished, root / name)
    rows = [describe_run(run) for run in find_runs("runs")]
    lines = format_runs(rows).splitlines()

    def column(line: str, word: str) -> int:  # where ``word`` starts, in terminal columns
        head = line[:line.index(word)]
        return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
                   for ch in head)

    model = column(lines[0], "model")
    assert all(column(line, "basic_cnn") == model for line in lines[1:]), lines


def test_every_json_the_cli_prints_goes_through_the_strict_encoder():
    """predict, analyze, data info and models printed ``json.dumps`` of their results: a NaN probability of a diverged
    net printed ``NaN``, which JSON parsers refuse. Every ``--json`` goes through ``output.json_text``."""
    import math
    import pathlib
    import re

    import cnnlab.cli
    from cnnlab.output import json_text

    folder = pathlib.Path(cnnlab.cli.__file__).parent
    raw = [f"{p.name}:{i}" for p in sorted(folder.glob("*.py")) for i, line in enumerate(p.read_text().splitlines(), 1)
           if re.search(r"\bjson\.dumps\(", line)]
    assert raw == []
    assert json_text({"p": [math.nan, math.inf, 0.5]}) == '{"p": [null, null, 0.5]}'
