"""`cnnlab compare` and `cnnlab runs`: what their reports say, found by a tester: a run extended since the compare
made it, the runs' warnings, the split each accuracy was measured on, the training rate, names that are no UTF-8."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import cnnlab
from cnnlab.cli import main
from cnnlab.cli.runs import format_runs
from cnnlab.compare import compare
from cnnlab.config import TrainConfig
from cnnlab.engine import train
from cnnlab.errors import RunError
from cnnlab.runs import describe_run, read_metrics, write_metrics
from conftest import write_idx_dataset

QUIET = dict(quiet=True, log=lambda m: None)


def cfg_for(data, **kw) -> TrainConfig:
    base = dict(model="basic_cnn", dataset=f"idx:{data}", epochs=1, batch_size=32, device="cpu", threads=1)
    return TrainConfig(**{**base, **kw})


def _table(out) -> str:
    return (out / "comparison.md").read_text()


def test_a_run_extended_since_the_compare_made_it_is_refused_not_averaged(tiny_idx, tmp_path):
    """Found by a tester: `cnnlab train --resume cmp5/resnet-seed0-... --epochs 3` on a run of a 2-epoch compare, then
    the same compare: the 3-epoch run was "resumed" (nothing to train), averaged with the 2-epoch one under
    "2 epochs", and the plot crashed (`IndexError` in `_draw_series`) on every compare after. It is refused in one
    line naming the folder, what differs and the fix, before anything trains; the fix works."""
    base, out = cfg_for(tiny_idx), tmp_path / "cmp"
    compare(["basic_cnn"], 2, base, out, log=lambda m: None)
    first = sorted(out.glob("basic_cnn-seed0-*"))[0]
    table = _table(out)
    train(TrainConfig(epochs=2), resume=first, changes={"epochs": 2}, **QUIET)  # allowed: a constant-rate run
    logs = []
    with pytest.raises(RunError) as err:
        compare(["basic_cnn"], 2, base, out, log=logs.append)
    assert str(err.value) == (f"{first}: holds a run of other settings than this compare's (epochs 2 where this compare "
                              "has 1: changed since the compare made it, e.g. by 'cnnlab train --resume RUN --epochs N'); "
                              "move that run out of the folder (or delete it) to train it anew, or compare again with "
                              "another --out")
    assert logs == [] and _table(out) == table  # nothing trained, reused or written
    assert main(["compare", "--models", "basic_cnn", "--seeds", "2", "--epochs", "1", "--batch-size", "32",
                 "--dataset", f"idx:{tiny_idx}", "--device", "cpu", "--threads", "1", "--out", str(out)]) == 2
    shutil.move(first, tmp_path / "extended")  # the fix the line gives
    compare(["basic_cnn"], 2, base, out, log=logs.append)
    assert [m.split(",")[0] for m in logs] == ["basic_cnn seed 0: trained", "basic_cnn seed 1: reused"]
    assert "Recipe `lecture`: 1 epoch," in _table(out)


def test_the_comparison_plot_draws_series_of_unequal_length(tmp_path):
    """The plot's lists of one model that differ in length (more epochs than means) drew what they share, not an
    IndexError."""
    from cnnlab.plots import plot_comparison

    series = {"a": {"epochs": [1, 2, 3], "mean": [50.0, 60.0], "std": [1.0, 2.0], "n": 2},
              "b": {"epochs": [1, 2], "mean": [40.0, 55.0, 70.0], "std": [1.0, 1.0, 1.0], "n": 2}}
    assert plot_comparison(series, tmp_path / "c.png").is_file()
    many = {"a": {"epochs": list(range(1, 11)), "mean": [90.0] * 8, "std": [0.5] * 9, "n": 2}}
    assert plot_comparison(many, tmp_path / "m.png").is_file()


def test_the_runs_warnings_reach_the_user_once_per_compare(tiny_idx, tmp_path, monkeypatch):
    """Found by a tester: compare trained its runs with `log=lambda msg: None`, so `--recipe best`'s EMA warning and
    the `--threads 16` warning on a 2-CPU machine (which `compare --help` promises) never reached the user. Each
    warning is said once per compare (the runs share them: not once per run), named by the run that gave it."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)  # one CPU: --threads 2 is too many
    logs = []
    compare(["basic_cnn"], 2, cfg_for(tiny_idx, threads=2, ema=0.999), tmp_path / "cmp", log=logs.append)
    warnings = [m for m in logs if "warning:" in m]
    assert len(warnings) == 2, logs
    assert warnings[0].startswith("basic_cnn seed 0: warning: --threads 2 is more than the 1 CPU this process can use")
    assert warnings[1].startswith("basic_cnn seed 0: warning: --ema 0.999 averages over about 1,000 steps and this "
                                  "run has 8:")
    assert len(logs) == 4 and sum(": trained, final " in m for m in logs) == 2  # the runs' other lines stay quiet
    logs.clear()
    compare(["basic_cnn"], 2, cfg_for(tiny_idx, threads=2, ema=0.999), tmp_path / "cmp", log=logs.append)
    assert sum(": reused, final " in m for m in logs) == 2 and len(logs) == 2  # reused: nothing trains, nothing warns


def test_a_warning_of_one_run_is_named_by_that_run(tiny_idx):
    """A warning only one run gives (its text differs) is said for that run, named by it."""
    from cnnlab.compare import _said_once

    said, warned = [], set()
    for seed, text in ((0, "warning: a"), (1, "warning: a"), (1, "warning: b"), (2, "epoch 1/1 ..."), (2, "warning: b")):
        _said_once(cfg_for(tiny_idx, seed=seed), warned, said.append)(text)
    assert said == ["basic_cnn seed 0: warning: a", "basic_cnn seed 1: warning: b"]


def test_every_accuracy_is_named_by_the_split_it_was_measured_on(tiny_idx, tmp_path, monkeypatch, capsys):
    """Found by a tester: with --val-split, compare's "best acc" was the best validation accuracy under a header
    saying "Accuracies are test accuracy"; `cnnlab runs` showed `final 59.40% best 58.05%` and `list_runs()`'s
    `best_acc` was that validation figure, nothing saying so. The column is "best val acc", the header says what
    each figure is; a run's row names its best epoch's split (`best_split`), `best_acc` keeping its meaning (the
    best epoch's evaluation, the one best.pt was chosen by)."""
    monkeypatch.chdir(tmp_path)
    res = compare(["basic_cnn"], 1, cfg_for(tiny_idx, val_split=0.25), tmp_path / "runs" / "cmp", log=lambda m: None)
    table = _table(tmp_path / "runs" / "cmp")
    assert "| final acc | best val acc | train s | train img/s |" in table and "| best acc |" not in table
    assert ("final acc is the test accuracy of the final epoch (of the EMA weights where EMA is on); best val acc is "
            "the best epoch's accuracy on the validation split (25% of the training images, held out), not on the "
            "test set.") in table
    assert "Accuracies are test accuracy" not in table
    assert res["results"]["basic_cnn"]["best_split"] == "val"
    plain = compare(["basic_cnn"], 1, cfg_for(tiny_idx), tmp_path / "runs" / "plain", log=lambda m: None)
    assert "| final acc | best acc |" in _table(tmp_path / "runs" / "plain")
    assert "Accuracies are test accuracy in %" in _table(tmp_path / "runs" / "plain")
    assert plain["results"]["basic_cnn"]["best_split"] == "test"
    val_run, test_run = (next((tmp_path / "runs" / name).glob("basic_cnn-*")) for name in ("cmp", "plain"))
    val_row, test_row = describe_run(val_run), describe_run(test_run)
    metrics = read_metrics(val_run / "metrics.csv")
    assert val_row["best_split"] == "val" and val_row["best_acc"] == max(r["val_acc"] for r in metrics)
    assert test_row["best_split"] == "test" and test_row["best_acc"] == max(r["test_acc"] for r in metrics_of(test_run))
    lines = format_runs([val_row, test_row]).splitlines()
    assert f"{val_row['best_acc']:.2f}% val " in lines[1] and f"{test_row['best_acc']:.2f}% test " in lines[2]
    assert {r["run"]: r["best_split"] for r in cnnlab.list_runs("runs")} == {str(val_run.relative_to(tmp_path)): "val",
                                                                          str(test_run.relative_to(tmp_path)): "test"}
    assert [r["run"] for r in cnnlab.list_runs("runs", best_split="val")] == [str(val_run.relative_to(tmp_path))]
    assert main(["runs", "--json"]) == 0
    assert {r["best_split"] for r in json.loads(capsys.readouterr().out)} == {"val", "test"}
    row = {**val_row, "best_acc": None, "best_split": None}  # no epoch ended: nothing to name
    assert " - " in format_runs([row]).splitlines()[1]


def metrics_of(run):
    return read_metrics(run / "metrics.csv")


def test_the_training_rate_is_images_over_seconds_not_a_mean_of_the_epochs_rates(tiny_idx, tmp_path):
    """Found by a tester: a run whose epochs took 10.54 s and 0.62 s (1,024 images each) was 877 img/s in the table,
    the mean of its epochs' rates; it trained 2,048 images in 11.16 s: 184 img/s."""
    base, out = cfg_for(tiny_idx, epochs=2), tmp_path / "cmp"
    compare(["basic_cnn"], 1, base, out, log=lambda m: None)
    run = next(out.glob("basic_cnn-*"))
    rows = read_metrics(run / "metrics.csv")
    for row, seconds in zip(rows, (10.54, 0.62)):
        row.update(seconds=seconds, images_per_s=1024 / seconds)
    write_metrics(run / "metrics.csv", rows)
    logs = []
    compare(["basic_cnn"], 1, base, out, log=logs.append)
    assert ": reused, final " in logs[0]
    assert _table(out).splitlines()[-1].endswith("| 11 | 184 |")


def test_names_that_are_no_utf8_are_escaped_in_the_comparison_and_its_plot(tmp_path, monkeypatch):
    """Found by a tester: a dataset folder or an --out with a byte that is no UTF-8 (a legal Linux name): the
    first was a UnicodeEncodeError writing comparison.md, the second matplotlib's FT2Font traceback (comparison.png
    not written). Such names are escaped (`\\udcff`), as cnnlab's messages escape them; both files are written."""
    data = write_idx_dataset(tmp_path / "tin\udcffy")
    monkeypatch.chdir(tmp_path)
    for out in (tmp_path / "cmpu", tmp_path / "cmp\udcff"):
        compare(["basic_cnn"], 1, cfg_for(data), out, log=lambda m: None)
        table = _table(out)
        assert table.startswith(f"# idx:{tmp_path}/tin\\udcffy: basic_cnn over 1 seed")
        assert (out / "comparison.png").stat().st_size > 1000
    assert main(["compare", "--models", "basic_cnn", "--seeds", "1", "--epochs", "1", "--batch-size", "32",
                 "--dataset", f"idx:{data}", "--device", "cpu", "--threads", "1", "--out", "cmp\udcff"]) == 0


def test_a_comparison_plot_whose_title_names_a_folder_that_is_no_utf8_is_drawn(tmp_path, monkeypatch):
    """`compare --out cmp$'\\xff'`: matplotlib's FT2Font traceback on the title 'folder cmp\\udcff', comparison.png not
    written. The title and context are escaped as cnnlab's messages are."""
    from cnnlab import plots

    figs, real = [], plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kw: figs.append(fig) or real(fig, path, **kw))
    series = {"a": {"epochs": [1], "mean": [50.0], "std": [1.0], "n": 1}}
    plots.plot_comparison(series, tmp_path / "c.png", title="idx:/d/tin\udcffy", context={"folder": "cmp\udcff\nx"})
    assert figs[0].get_suptitle() == "idx:/d/tin\\udcffy: mean over seeds, error bars = ±1 std\nfolder cmp\\udcff\\nx"
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_the_comparisons_legend_hides_no_point(tmp_path, monkeypatch):
    """The legend sat in the upper right, over the best model's last point (accuracy rises to the right)."""
    from cnnlab import plots

    figures = []
    real = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kw: figures.append(fig) or real(fig, path, **kw))
    few = {"resnet": {"epochs": [1, 2], "mean": [86.5, 90.95], "std": [1.5, 0.9], "n": 2},
           "basic_cnn": {"epochs": [1, 2], "mean": [79.7, 87.7], "std": [0.3, 0.4], "n": 2}}
    many = {k: {"epochs": list(range(1, 16)), "mean": [80 + i + d for i in range(15)], "std": [0.3] * 15, "n": 3}
            for k, d in (("resnet", 0), ("basic_cnn", -3))}
    for series in (few, many):
        plots.plot_comparison(series, tmp_path / "c.png")
        fig = figures[-1]
        renderer = fig._get_renderer()  # the figure was drawn when it was saved
        (legend,) = fig.legends
        box = legend.get_window_extent(renderer)
        assert [t.get_text() for t in legend.get_texts()] == [f"{k} (n={s['n']})" for k, s in series.items()]
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), "the legend lies over a panel"
