"""A run whose loss explodes while staying finite is a diverged run, not a finished one."""

from __future__ import annotations

import json

import pytest

import cnnlab
from cnnlab.errors import Diverged
from cnnlab.trainer import EXPLODED_LOSS


def test_a_loss_exploded_to_finite_huge_values_is_divergence(tiny_idx, tmp_path):
    """Found by fuzzing train's settings: AdamW at --lr 10 reached a train loss of 3.5e17 per image (test loss 7.6e13),
    and the run ended "finished", exit 0, its exploded weights saved as the result: only NaN or inf were caught."""
    out = tmp_path / "L1"
    with pytest.raises(Diverged, match=r"training diverged: the loss (exploded \(.* per image, where a net that "
                                       r"guesses scores 2\.3\)|became NaN or infinite) .*lower lr"):
        cnnlab.train("resnet", dataset=f"idx:{tiny_idx}", out=out, epochs=2, optimizer="adamw", lr=10.0,
                     batch_size=32, quiet=True)
    assert json.loads((out / "status.json").read_text())["status"] == "failed"
    assert not (out / "summary.json").exists()


def test_the_bound_is_far_above_any_healthy_loss():
    import math

    assert EXPLODED_LOSS > 100 * math.log(1000)  # a net that guesses among 1,000 classes scores 6.9
