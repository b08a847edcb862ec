"""Fixes of the API prober's defects (s44, /work/logs/s44/probe/api_report.md): a caller's autocast, ``runs --json``,
``Predictor``'s class methods, "did you mean", a config file's values checked outside ``validate``, a run's record
with a newer key, ``load_run`` of best.pt, and a re-run whose ``idx:`` folder moved."""

from __future__ import annotations

from cnnlab.cli import main

QUIET = dict(quiet=True, threads=1, device="cpu")


def test_did_you_mean_names_the_setting_for_the_typo(tmp_path, capsys):
    """With two unknown keys it said ``(did you mean 'epochz' for 'epochs'?)``: the typo for the setting."""
    settings = tmp_path / "two.yaml"
    settings.write_text("epochz: 2\nlrr: 0.1\nmodel: resnet\n")
    assert main(["train", "--config", str(settings), "--out", str(tmp_path / "z")]) == 2
    assert "unknown settings ['epochz', 'lrr'] (did you mean 'epochs' for 'epochz'?)" in capsys.readouterr().err
