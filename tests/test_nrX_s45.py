"""The defects a tester (probe newruns, s45) found in the run side's newest fixes: the run's own best.pt refused as
another run's after a resume took its data moved (D3). All on tiny runs.
"""

from __future__ import annotations

from cnnlab.cli import main
from conftest import write_idx_dataset


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def _train(*args: str) -> int:
    return main(["train", "--threads", "1", "--quiet", *args])


# ----------------------------------------------------------------------------- D3: the run's best.pt, data moved


def test_the_runs_own_best_pt_resumes_after_a_resume_took_its_data_moved(tmp_path, capsys):
    """D3. A run whose best.pt was saved before its data moved, resumed since with ``--dataset`` at the new place:
    ``train --resume RUN/best.pt`` said "a checkpoint of another run (dataset ...D1) than the one in RUN (...D2)".
    Now config.other_run takes the data moved as the same run's, and the resume continues at the run's new place
    (engine._saved_config)."""
    old = write_idx_dataset(tmp_path / "D1")
    run = tmp_path / "r"
    assert _train("--model", "basic_cnn", "--dataset", f"idx:{old}", "--epochs", "3", "--batch-size", "32",
                  "--max-steps", "9", "--out", str(run)) == 0  # epoch 1 ended: best.pt names D1
    new = old.rename(tmp_path / "D2")
    assert _train("--resume", str(run), "--dataset", f"idx:{new}", "--max-steps", "10") == 0
    capsys.readouterr()
    assert _train("--resume", str(run / "best.pt"), "--max-steps", "10") == 0, _one_line(capsys)
    assert f"idx:{new}" in (run / "config.json").read_text()
