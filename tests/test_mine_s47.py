"""Defects found and fixed by the lead in the session of 2026-12-08: each test fails on the code before."""

from __future__ import annotations

import json

import cnnlab
from cnnlab.cli import main
from cnnlab.runs import read_metrics


def test_metrics_measures_are_floats_even_where_a_cell_is_a_whole_number(finished, capsys):
    """numbers D1. metrics.csv writes 91.0 as "91" (``.6g``), and it was read back as the int 91: `cnnlab runs --json`
    and `list_runs()` gave best_acc 91 in one row and 88.8 in the next, Run.metrics mixed ints and floats."""
    path = finished / "metrics.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("test_acc")
    rows = [line.split(",") for line in lines[1:]]
    for cells in rows:
        cells[col] = "91"
    path.write_text("\n".join([lines[0], *(",".join(c) for c in rows)]) + "\n")
    for row in read_metrics(path):
        assert type(row["test_acc"]) is float and type(row["epoch"]) is int and type(row["step"]) is int, row
    capsys.readouterr()
    assert main(["runs", "--root", str(finished.parent), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [type(r["best_acc"]) for r in listed] == [float], listed
    assert type(cnnlab.list_runs(root=finished.parent)[0]["best_acc"]) is float
