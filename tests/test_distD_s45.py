"""distD (s45): torchrun groups whose ranks loaded other data, a second join in one process, a stop's evaluation
counted as training time, a CLI note said by every rank, and commands that do not run in a group."""

from __future__ import annotations

import json
import time

from cnnlab.checkpoint import load_checkpoint
from cnnlab.runs import read_metrics
from conftest import tiny_config


def test_a_stops_evaluation_is_not_counted_as_training_time(tiny_idx, tmp_path, monkeypatch):
    """D3: a run stopped by --max-steps recorded its stop's evaluation in the epoch's seconds (last.pt's elapsed,
    summary.json's train_seconds), and the resumed epoch said 14.1 s and 427 img/s for what takes 1.7 s; the
    weights and losses were right, and stay bit for bit so."""
    import cnnlab.trainer
    from cnnlab.engine import train

    real, pause = cnnlab.trainer.evaluate, 2.0

    def slow(*args, **kwargs):  # an evaluation of a large split: seconds, and none of it training
        time.sleep(pause)
        return real(*args, **kwargs)

    cfg = dict(max_steps=0, threads=1, eval_limit=0)
    train(tiny_config(tiny_idx, **cfg), out=tmp_path / "u", quiet=True, log=lambda m: None)
    monkeypatch.setattr(cnnlab.trainer, "evaluate", slow)
    train(tiny_config(tiny_idx, **{**cfg, "max_steps": 3}), out=tmp_path / "s", quiet=True, log=lambda m: None)
    state = load_checkpoint(tmp_path / "s" / "last.pt")["train_state"]
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert state["step"] == 3 and 0 < state["elapsed"] < pause, state["elapsed"]
    assert summary["train_seconds"] == state["elapsed"]
    monkeypatch.setattr(cnnlab.trainer, "evaluate", real)
    train(tiny_config(tiny_idx), resume=tmp_path / "s", quiet=True, log=lambda m: None)
    (whole,), (resumed,) = read_metrics(tmp_path / "u" / "metrics.csv"), read_metrics(tmp_path / "s" / "metrics.csv")
    assert resumed["seconds"] < pause, resumed
    assert {k: v for k, v in resumed.items() if k not in ("seconds", "images_per_s")} == \
        {k: v for k, v in whole.items() if k not in ("seconds", "images_per_s")}
    a, b = (load_checkpoint(tmp_path / r / "last.pt")["state_dict"] for r in ("u", "s"))
    assert all((a[k] == b[k]).all() for k in a)
