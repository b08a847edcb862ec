"""Test-time augmentation (``cnnlab.tta``, ``cnnlab evaluate --tta``) and evaluating a run's own validation
split (``--split val``): the views, the averaged prediction, and that neither changes a run's result."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.data import BatchLoader
from cnnlab.engine import train
from cnnlab.errors import CnnlabError
from cnnlab.evaluation import evaluate
from cnnlab.runs import read_metrics
from cnnlab.tta import parse_tta

FILL = -0.5


def batch(b=3, h=8, w=8, channels_last=False):
    x = torch.randn(b, 1, h, w, generator=torch.Generator().manual_seed(0))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def test_shift_views_are_the_image_and_its_four_one_pixel_moves():
    x = batch()
    views = parse_tta("shift").views(x, FILL)
    assert len(views) == 5 and torch.equal(views[0], x)
    up, down, left, right = views[1:]
    assert torch.equal(up[..., :-1, :], x[..., 1:, :]) and (up[..., -1, :] == FILL).all()
    assert torch.equal(down[..., 1:, :], x[..., :-1, :]) and (down[..., 0, :] == FILL).all()
    assert torch.equal(left[..., :, :-1], x[..., :, 1:]) and (left[..., :, -1] == FILL).all()
    assert torch.equal(right[..., :, 1:], x[..., :, :-1]) and (right[..., :, 0] == FILL).all()
    two = parse_tta("shift:px=2").views(x, FILL)
    assert torch.equal(two[2][..., 2:, :], x[..., :-2, :]) and (two[2][..., :2, :] == FILL).all()


def test_rotate_views_turn_the_image_both_ways_and_flip_mirrors_it():
    x = batch()
    _, minus, plus = parse_tta("rotate:deg=90").views(x, FILL)
    turned = {k: torch.rot90(x, k=k, dims=(2, 3)) for k in (1, -1)}
    assert torch.allclose(plus, turned[1], atol=1e-5) and torch.allclose(minus, turned[-1], atol=1e-5)
    small = parse_tta("rotate:deg=10").views(x, FILL)
    assert not torch.allclose(small[1], x) and not torch.allclose(small[1], small[2])
    same, mirrored = parse_tta("flip").views(x, FILL)
    assert torch.equal(same, x) and torch.equal(mirrored, x.flip(3))


@pytest.mark.parametrize("channels_last", [False, True])
def test_views_combine_and_keep_the_memory_format(channels_last):
    x = batch(channels_last=channels_last)
    tta = parse_tta("shift+rotate+flip")
    views = tta.views(x, FILL)
    assert tta.count == len(views) == 30 and torch.equal(views[0], x)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert all(v.is_contiguous(memory_format=fmt) and v.shape == x.shape for v in views)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 30  # no two views alike
    # the parts compose: shift then flip is the flip of the shifted image
    flips = parse_tta("shift+flip").views(x, FILL)
    assert torch.equal(flips[3], parse_tta("shift").views(x, FILL)[1].flip(3))


def test_the_spec_is_canonical_and_bad_specs_name_the_fix():
    assert parse_tta("none") is None and parse_tta(None) is None  # "" is refused (an unset $VIEWS: fixN D5)
    assert parse_tta(" shift + rotate ").spec == "shift:px=1+rotate:deg=10"
    assert parse_tta("rotate:deg=7.5+flip").spec == "rotate:deg=7.5+flip"
    for spec, words in [("jitter", "unknown view 'jitter'"), ("shift:pad=2", "shift takes one setting, px=NUMBER"),
                        ("shift:px=1.5", "must be a whole number"), ("rotate:deg=200", "out of range; use 0.1 to 90"),
                        ("shift+shift", "may appear once"), ("none+flip", "'none' cannot be combined with other parts"),
                        ("flip:p=1", "flip takes no settings"), ("shift++flip", "empty part"),
                        ("", "--tta is empty (an unset variable?)"), (" ", "--tta is empty")]:
        with pytest.raises(CnnlabError, match=re.escape(words)):
            parse_tta(spec)


class Blur(nn.Module):
    """A tiny fixed net whose answer depends on where the ink is (so views change its output)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        torch.nn.init.normal_(self.fc.weight, generator=torch.Generator().manual_seed(1))

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


def test_the_averaged_prediction_is_the_mean_of_the_views_probabilities():
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (50,), generator=g)
    loader = BatchLoader(images, labels, 20, mean=0.5, std=0.25, shuffle=False, device=torch.device("cpu"))
    model, tta = Blur(), parse_tta("shift+flip")
    got = evaluate(model, loader, tta=tta, keep_outputs=True)
    x = loader.normalise(images)
    with torch.no_grad():
        probs = torch.stack([model(v).softmax(1) for v in tta.views(x, loader.shift)]).mean(0)
    assert torch.allclose(got.confidences, probs.max(1).values, atol=1e-6)  # each prediction's averaged probability
    assert got.correct == int((probs.argmax(1) == labels).sum())
    assert got.loss == pytest.approx(float(F.nll_loss(probs.log(), labels)), rel=1e-5)
    plain = evaluate(model, loader)
    assert (plain.loss, plain.correct) != (got.loss, got.correct)  # the views did change the answer


def tiny_run(tiny_idx, tmp_path, **kw):
    cfg = TrainConfig(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=1, batch_size=32, device="cpu", lr=0.05,
                      **kw)
    run = tmp_path / "run"
    train(cfg, out=run, quiet=True, log=lambda m: None)
    return run


def test_evaluate_reports_tta_beside_the_runs_result_never_instead(tiny_idx, tmp_path, capsys):
    run = tiny_run(tiny_idx, tmp_path)
    before = json.loads((run / "summary.json").read_text())
    assert main(["evaluate", str(run), "--tta", "shift+rotate:deg=5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "with test-time augmentation (shift:px=1+rotate:deg=5: 15 views)" in lines[-2]
    assert " test set (64 images): loss " in lines[-1] and "augmentation" not in lines[-1]  # the headline: plain
    after = json.loads((run / "summary.json").read_text())
    assert after["accuracy"] == before["accuracy"] and after["loss"] == before["loss"]  # the run's result
    assert after["tta"]["views"] == "shift:px=1+rotate:deg=5" and after["tta"]["count"] == 15
    assert 0 <= after["tta"]["accuracy"] <= 100
    assert main(["evaluate", str(run), "--tta", "flip", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["test_acc"] == before["accuracy"] and out["tta"]["count"] == 2 and out["split"] == "test"
    assert main(["evaluate", str(run), "--tta", "wobble"]) == 2
    assert "unknown view 'wobble'" in capsys.readouterr().err


def test_split_val_evaluates_the_runs_own_validation_split_and_writes_nothing(tiny_idx, tmp_path, capsys):
    run = tiny_run(tiny_idx, tmp_path, val_split=0.25)
    summary = (run / "summary.json").read_text()
    last_val = float(read_metrics(run / "metrics.csv")[-1]["val_acc"])
    assert main(["evaluate", str(run), "--split", "val", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "val" and out["n"] == 64 and out["test_acc"] == pytest.approx(last_val, abs=0.01)
    assert (run / "summary.json").read_text() == summary  # the run's result is its test set's
    assert main(["evaluate", str(run), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "on the " in out and "validation split" in out and "no report written: it is the validation split" in out
    plain = tiny_run(tiny_idx, tmp_path / "plain")
    assert main(["evaluate", str(plain), "--split", "val"]) == 2
    assert "trained without --val-split" in capsys.readouterr().err
    assert main(["evaluate", "--pretrained", "resnet", "--split", "val"]) == 2
    assert "give a run trained with --val-split" in capsys.readouterr().err


def test_the_python_api_takes_the_split_and_the_views(tiny_idx, tmp_path):
    import cnnlab

    run = cnnlab.load_run(tiny_run(tiny_idx, tmp_path, val_split=0.25))
    plain, views = run.evaluate(device="cpu"), run.evaluate(device="cpu", tta="flip")
    assert plain.accuracy == run.final_accuracy and plain.n == views.n == 64
    val = run.evaluate(device="cpu", split="val")
    assert val.accuracy == pytest.approx(float(run.metrics[-1]["val_acc"]), abs=0.01)
    with pytest.raises(CnnlabError, match="unknown view"):
        run.evaluate(tta="wobble")
