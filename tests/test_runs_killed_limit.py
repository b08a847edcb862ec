"""A run killed while it trained under ``--max-steps`` is listed with the command that continues it to that limit:
the listing said "it resumes from last.pt", and that plain resume trained past the limit the run was given."""

from __future__ import annotations

from cnnlab.engine import train
from cnnlab.runs import describe_run
from tests.conftest import tiny_config


def test_a_killed_step_limited_run_is_listed_with_its_limit(tiny_idx, tmp_path):
    run = tmp_path / "runs" / "k1"
    train(tiny_config(tiny_idx, epochs=3, max_steps=5), out=run, quiet=True, log=lambda m: None)
    (run / "status.json").unlink()  # as after a SIGKILL: the process said nothing
    row = describe_run(run)
    assert row["status"] == "stopped"
    assert row["detail"].endswith(f"(continue with: cnnlab train --resume {run} --max-steps 5)")


def test_a_killed_run_without_a_limit_keeps_the_plain_detail(tiny_idx, tmp_path):
    run = tmp_path / "runs" / "k2"
    train(tiny_config(tiny_idx, epochs=3, max_steps=5), out=run, quiet=True, log=lambda m: None)
    (run / "status.json").unlink()
    cfg = (run / "config.json").read_text().replace('"max_steps": 5', '"max_steps": 0')
    (run / "config.json").write_text(cfg)
    row = describe_run(run)
    assert row["status"] == "stopped" and row["detail"] == "killed, or interrupted without saying so: it resumes from last.pt"


def test_train_refuses_more_epochs_than_a_run_may_record(tiny_idx, tmp_path):
    """A run of 10**30 epochs trained, then its own listing called it damaged (``runs`` allows 1 to 1e9)."""
    import pytest

    from cnnlab.errors import CnnlabError

    with pytest.raises(CnnlabError, match="--epochs must be 1 to 1,000,000,000, got 1000000001"):
        train(tiny_config(tiny_idx, epochs=1_000_000_001, max_steps=1), out=tmp_path / "big", quiet=True, log=lambda m: None)
    assert not (tmp_path / "big").exists()
