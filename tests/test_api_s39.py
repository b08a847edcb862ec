"""``Predictor.from_run`` takes what the rest of the API takes for a run: ``"latest"`` and a :class:`cnnlab.Run`."""

from __future__ import annotations

import os

import cnnlab


def test_predictor_from_run_takes_latest_and_a_run(finished, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the finished run is runs/r1 here
    latest = cnnlab.Predictor.from_run("latest", device="cpu")
    assert latest.source == str(finished.resolve() / "last.pt") or latest.source.endswith("runs/r1/last.pt")
    run = cnnlab.load_run("latest")
    assert os.fspath(run) == str(run.folder)
    assert cnnlab.Predictor.from_run(run, device="cpu").source.endswith("runs/r1/last.pt")
    assert cnnlab.Predictor.from_run(run, which="best", device="cpu").source.endswith("runs/r1/best.pt")
