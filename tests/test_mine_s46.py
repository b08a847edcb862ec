"""Defects found and fixed by the lead in the session of 2026-12-07 (night): each test fails on the code before."""

from __future__ import annotations

import json

from cnnlab.cli import main

from conftest import write_idx_dataset


def test_a_resume_that_trains_nothing_under_a_lower_max_steps_keeps_the_runs_own_limit(tmp_path, capsys):
    """api D6. `train --resume r --max-steps 5` of a run stopped at its --max-steps 12 trained nothing and wrote
    status.json "--max-steps 5: resume to go on" (its config.json still said 12, and `cnnlab runs` showed the 5)."""
    data = write_idx_dataset(tmp_path / "d")
    run = tmp_path / "r"
    common = ["--threads", "1", "--quiet", "--device", "cpu"]
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{data}", "--batch-size", "32", "--max-steps", "6",
                 "--out", str(run), *common]) == 0
    assert main(["train", "--resume", str(run), "--max-steps", "3", *common]) == 0
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "stopped" and status["detail"] == "--max-steps 6: resume to go on", status
    assert json.loads((run / "config.json").read_text())["config"]["max_steps"] == 6
    assert main(["train", "--resume", str(run), "--max-steps", "7", *common]) == 0  # one that trains: its own limit
    assert json.loads((run / "status.json").read_text())["detail"] == "--max-steps 7: resume to go on"
