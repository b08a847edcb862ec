"""What a run reports as "best", and which weights best.pt holds (s39).

1. With a validation split the final line's best figure is the validation split's: the line names the split
   (``(best epoch 91.41% val)``), and ``TrainResult.best_split`` says it too.
2. A run stopped by --target-accuracy inside an epoch: the check that reached the target evaluated the final weights
   on the split the best is chosen on; it counts for the best (best.pt written from those weights, the final line and
   curves.png say it), and a run resumed in parts decides it as one trained straight.
"""

from __future__ import annotations

import json

import torch

from cnnlab import plots
from cnnlab.checkpoint import load_checkpoint
from cnnlab.config import TrainConfig
from cnnlab.engine import train


def cfg_for(tiny_idx, **kw) -> TrainConfig:
    base = dict(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=2, batch_size=32, device="cpu", lr=0.05,
                threads=1)
    return TrainConfig(**{**base, **kw})


def _final_line(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("final test accuracy"))


def test_the_final_line_names_the_split_of_the_best_epoch(tiny_idx, tmp_path):
    lines: list[str] = []
    res = train(cfg_for(tiny_idx, val_split=0.25), out=tmp_path / "val", quiet=True, log=lines.append)
    assert f"(best epoch {max(r['val_acc'] for r in res.history):.2f}% val)" in _final_line(lines), lines
    assert res.best_split == "val" and res.best_accuracy == max(r["val_acc"] for r in res.history)
    lines.clear()
    res = train(cfg_for(tiny_idx), write=False, quiet=True, log=lines.append)
    assert f"(best epoch {res.best_accuracy:.2f}% test)" in _final_line(lines), lines
    assert res.best_split == "test"


#: A tiny run that reaches 80% at its second epoch's first check (1.25), after a first epoch below it (79.69%).
TARGET = dict(epochs=30, lr=0.01, target_accuracy=80.0, evals_per_epoch=4)


def _same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_check_that_reached_the_target_counts_for_best(tiny_idx, tmp_path, monkeypatch):
    drawn = []
    real_chart = plots.chart
    monkeypatch.setattr(plots, "chart", lambda panels, *a, **k: drawn.append(panels) or real_chart(panels, *a, **k))
    lines: list[str] = []
    run = tmp_path / "r"
    res = train(cfg_for(tiny_idx, **TARGET), out=run, quiet=True, log=lines.append)
    tg = res.target
    epochs_best = max(r["test_acc"] for r in res.history)
    assert tg is not None and tg["epoch"] % 1 and tg["epoch"] > 1 and tg["accuracy"] > epochs_best  # the case
    assert res.best_accuracy == tg["accuracy"] and res.best_split == "test"
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert best["train_state"]["step"] == last["train_state"]["step"] == tg["step"]
    assert best["train_state"]["best"] == tg["accuracy"] == last["train_state"]["best"]
    assert _same_weights(best["state_dict"], last["state_dict"])
    assert f"(best {tg['accuracy']:.2f}% test at epoch {tg['epoch']:.2f})" in _final_line(lines), lines
    # curves.png: the check is a point of the accuracy line at its fractional epoch, and the title's best
    accuracy = drawn[-1][1]
    assert accuracy.series[0].x[-1] == tg["epoch"] and accuracy.series[0].y[-1] == tg["accuracy"]
    assert f"best test accuracy {tg['accuracy']:.2f}%" in accuracy.title
    # resumed: nothing to train, the same best
    again = train(TrainConfig(), resume=run, quiet=True, log=lambda m: None)
    assert again.best_accuracy == tg["accuracy"] and again.best_split == "test"


def test_with_a_validation_split_the_target_and_the_best_are_the_validation_splits(tiny_idx, tmp_path):
    lines: list[str] = []
    run = tmp_path / "v"
    res = train(cfg_for(tiny_idx, epochs=30, lr=0.005, target_accuracy=80.0, evals_per_epoch=4, val_split=0.25),
                out=run, quiet=True, log=lines.append)
    tg = res.target
    assert tg is not None and tg["epoch"] % 1 and tg["accuracy"] > max(r["val_acc"] for r in res.history)  # the case
    assert res.best_accuracy == tg["accuracy"] and res.best_split == "val" == tg["split"]
    assert json.loads((run / "summary.json").read_text())["target"]["split"] == "val"  # for `cnnlab runs`
    assert any(line.startswith(f"stopped at step {tg['step']} ") and f"val_acc {tg['accuracy']:.2f}%" in line
               for line in lines), lines  # the target was checked on the validation split, as the best is chosen
    assert f"(best {tg['accuracy']:.2f}% val at epoch {tg['epoch']:.2f})" in _final_line(lines), lines
    assert load_checkpoint(run / "best.pt")["train_state"]["step"] == tg["step"]


def test_a_run_resumed_in_parts_decides_best_as_one_trained_straight(tiny_idx, tmp_path):
    straight = train(cfg_for(tiny_idx, **TARGET), out=tmp_path / "straight", quiet=True, log=lambda m: None)
    parts = tmp_path / "parts"
    first = train(cfg_for(tiny_idx, **TARGET, max_steps=5), out=parts, quiet=True, log=lambda m: None)
    assert first.stopped == "step limit" and first.best_accuracy is None  # a step limit's evaluation does not count
    rest = train(TrainConfig(), resume=parts, changes={"max_steps": 0}, quiet=True, log=lambda m: None)
    assert rest.target["step"] == straight.target["step"] and rest.best_accuracy == straight.best_accuracy
    a, b = (load_checkpoint(r / "best.pt") for r in (tmp_path / "straight", parts))
    assert a["train_state"]["step"] == b["train_state"]["step"] == straight.target["step"]
    assert a["train_state"]["best"] == b["train_state"]["best"] == straight.target["accuracy"]
    # best.pt holds the final weights in both (a resume across --max-steps inside an epoch already differed from a
    # straight run by float rounding, ~1e-8, before this change: the weights are compared within each run)
    assert _same_weights(b["state_dict"], load_checkpoint(parts / "last.pt")["state_dict"])


def test_a_target_stop_whose_best_pt_was_lost_writes_it_again_on_resume(tiny_idx, tmp_path):
    """A kill between the stop's two saves (last.pt, then best.pt): the resume finds last.pt at the best, and writes
    best.pt from it, as for an epoch's end (not 'has no best.pt', nor best.pt of an earlier epoch kept)."""
    run = tmp_path / "r"
    res = train(cfg_for(tiny_idx, **TARGET), out=run, quiet=True, log=lambda m: None)
    (run / "best.pt").unlink()
    lines: list[str] = []
    again = train(TrainConfig(), resume=run, quiet=True, log=lines.append)
    assert not any("has no best.pt" in line for line in lines), lines
    assert again.best_accuracy == res.target["accuracy"]
    assert load_checkpoint(run / "best.pt")["train_state"]["step"] == res.target["step"]


def test_curves_draw_a_target_point_only_inside_an_epoch(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "chart", lambda panels, *a, **k: drawn.append(panels) or plots.Image.new("RGB", (8, 8)))
    monkeypatch.setattr(plots, "save_png", lambda image, path: path)
    history = [{"epoch": 1, "step": 8, "train_loss": 1.0, "train_acc": 50.0, "test_loss": 1.0, "test_acc": 65.6}]
    plots.plot_curves(history, tmp_path / "c.png", target={"epoch": 1.5, "step": 12, "accuracy": 82.4})
    acc = drawn[-1][1]
    assert acc.series[0].x == [1, 1.5] and acc.series[0].y == [65.6, 82.4]
    assert "best test accuracy 82.40%" in acc.title and "1.50" in acc.title
    plots.plot_curves(history, tmp_path / "c.png", target={"epoch": 1.0, "step": 8, "accuracy": 65.6})
    assert drawn[-1][1].series[0].x == [1] and drawn[-1][1].title == "best test accuracy 65.60%"
    plots.plot_curves(history, tmp_path / "c.png", target=None)
    assert drawn[-1][1].series[0].x == [1]


def test_cnnlab_runs_lists_the_best_that_best_pt_holds_after_a_target_stop(tiny_idx, tmp_path):
    from cnnlab.runs import describe_run

    run = tmp_path / "listed"
    res = train(cfg_for(tiny_idx, **TARGET), out=run, quiet=True, log=lambda m: None)
    row = describe_run(run)
    assert row["best_acc"] == res.target["accuracy"] == res.best_accuracy and row["best_split"] == "test"
    summary = json.loads((run / "summary.json").read_text())
    del summary["target"]["split"]  # a run written before the check counted for best.pt: its row keeps the epochs'
    (run / "summary.json").write_text(json.dumps(summary))
    assert describe_run(run)["best_acc"] == max(r["test_acc"] for r in res.history)
