"""Found by a tester of the analyses, evaluate's reports and their figures (anaN, session 42)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import no_room_for, tiny_config

import cnnlab.plots
from cnnlab.cli import main
from cnnlab.engine import train
from cnnlab.errors import WriteError

QUIET = dict(quiet=True, log=lambda m: None)
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def two_runs(tiny_idx, tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    train(tiny_config(tiny_idx, max_steps=3), out=a, **QUIET)
    train(tiny_config(tiny_idx, max_steps=3, seed=7, lr=0.2), out=b, **QUIET)
    return a, b


#: A drawing of confusion.png that stops its own process with a signal (at once: while the drawing thread starts;
#: after 0.5 s: while the command waits for it), then draws (the signal is taken meanwhile).
STOPPED_WHILE_DRAWING = """
import os, signal, sys, time
import cnnlab.plots
from cnnlab.cli import main
real = cnnlab.plots.plot_confusion
def stopping(*args, **kwargs):
    time.sleep(float(sys.argv[2]))
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(1.0)
    return real(*args, **kwargs)
cnnlab.plots.plot_confusion = stopping
print("exit", main(sys.argv[3:]), flush=True)
"""


@pytest.mark.parametrize("signal_name, delay, code", [("SIGTERM", 0, 143), ("SIGINT", 0, 130), ("SIGHUP", 0.5, 129)])
def test_an_evaluation_stopped_after_its_summary_says_so_and_leaves_no_other_reports_figures(two_runs, tmp_path,
                                                                                            signal_name, delay, code):
    """`evaluate B --out DIR` stopped (SIGTERM, SIGHUP, Ctrl-C) after summary.json, over DIR holding run A's report:
    exit 143 and not a word (Ctrl-C: `interrupted`), B's summary beside A's confusion.png and mistakes.png. Now evaluate
    takes SIGTERM and SIGHUP as a stop, A's figures go the moment B's summary replaces A's, the figure being drawn is
    finished, and the line names what was written and what not (a wait for the drawing thread that the signal
    interrupted is not taken for its end: Thread.join, so interrupted, returned at once next time)."""
    if signal_name == "SIGHUP" and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        pytest.skip("SIGHUP is ignored here (nohup), and so in the evaluate it starts, as it should be")
    a, b = two_runs
    out = tmp_path / "report"
    assert main(["evaluate", str(a), "--out", str(out)]) == 0
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", STOPPED_WHILE_DRAWING, signal_name, str(delay), "evaluate", str(b),
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert f"exit {code}" in done.stdout, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    assert (f"cnnlab: warning: report incomplete: wrote summary.json, confusion.png in {out}, not mistakes.png: "
            "stopped; run it again") in done.stderr, done.stderr
    assert json.loads((out / "summary.json").read_text())["checkpoint"] == str(b / "last.pt")
    assert not (out / "mistakes.png").exists()  # A's: gone with A's summary
    assert (out / "confusion.png").stat().st_mtime >= (out / "summary.json").stat().st_mtime  # B's


def test_a_reports_other_figures_go_the_moment_its_summary_is_replaced(two_runs, tmp_path, monkeypatch, capsys):
    """A SIGKILL after summary.json (nothing can say so then) left the last report's figures beside it; now they are
    removed the moment before the new summary.json is renamed into place. A summary.json that cannot be written (a
    full disk) leaves the old report whole."""
    from cnnlab.evaluation import evaluate_subject, open_subject, report_run

    a, b = two_runs
    out = tmp_path / "report"
    assert main(["evaluate", str(a), "--out", str(out)]) == 0
    old = {name: (out / name).read_bytes() for name in ("summary.json", "confusion.png", "mistakes.png")}

    subject = open_subject(b)
    res = evaluate_subject(subject, device="cpu", keep_outputs=True)
    no_room_for(monkeypatch, "summary.json")  # no room for the new summary.json
    with pytest.raises(WriteError):
        report_run(out, subject.model, subject.data, torch.device("cpu"), history=[], result=res,
                   extra={"checkpoint": subject.source})
    assert {name: (out / name).read_bytes() for name in old} == old

    monkeypatch.undo()  # room again
    held = threading.Event()
    monkeypatch.setattr(cnnlab.plots, "plot_confusion", lambda *args, **kwargs: held.wait(30))
    monkeypatch.setattr(cnnlab.plots, "plot_mistakes", lambda *args, **kwargs: held.wait(30))
    _, figures = report_run(out, subject.model, subject.data, torch.device("cpu"), history=[], result=res,
                            extra={"checkpoint": subject.source}, wait=False)
    try:  # where a SIGKILL now leaves the folder: the new summary alone
        assert json.loads((out / "summary.json").read_text())["checkpoint"] == str(b / "last.pt")
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["summary.json"]
    finally:
        held.set()
        figures.wait()


def _folder(root: Path, classes: tuple[str, ...]) -> Path:
    """A ``folder:`` dataset of 28x28 grey PNGs, 8 per class (a bright row per class)."""
    from PIL import Image

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = bytearray(28 * 28)
            pixels[(4 + 6 * c) * 28:(6 + 6 * c) * 28] = b"\xff" * 56
            Image.frombytes("L", (28, 28), bytes(pixels)).save(root / name / f"{i}.png")
    return root


def test_analyze_branches_of_a_net_on_another_datasets_classes_warns_as_evaluate_does(tmp_path, capsys):
    """`analyze branches RUN --dataset OTHER`: a net scored on another dataset's classes (its outputs read as the
    other's names in the table and branches.png) without a word, where `evaluate` warns."""
    pets, fruit = _folder(tmp_path / "pets", ("cat", "dog")), _folder(tmp_path / "fruit", ("apple", "pear"))
    run = tmp_path / "inc"
    assert main(["train", "--model", "inception", "--dataset", f"folder:{pets}", "--max-steps", "2", "--device", "cpu",
                 "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    warning = ("cnnlab: warning: the net learned the classes of folder:" + str(pets) + " (cat, dog), and folder:"
               + str(fruit) + "'s are others (apple, pear): its output i is scored as folder:" + str(fruit)
               + "'s class i\n")
    assert main(["evaluate", str(run), "--dataset", f"folder:{fruit}", "--no-report", "--device", "cpu"]) == 0
    assert warning in capsys.readouterr().err
    for json_flag in ([], ["--json"]):
        assert main(["analyze", "branches", str(run), "--dataset", f"folder:{fruit}", "--device", "cpu",
                     "--out", str(tmp_path / f"br{len(json_flag)}"), *json_flag]) == 0
        assert capsys.readouterr().err == warning
    assert main(["analyze", "branches", str(run), "--device", "cpu", "--out", str(tmp_path / "own")]) == 0
    assert capsys.readouterr().err == ""  # its own classes: nothing to say


def _depth_figure(result: dict, monkeypatch):
    """plot_depth's figure (drawn, not saved) and its accuracy axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    import cnnlab.analysis.plots as aplots

    figures = []
    monkeypatch.setattr(aplots, "save_figure", lambda fig, path: figures.append(fig) or path)
    aplots.plot_depth(result, "unused.png")
    FigureCanvasAgg(figures[0]).draw()
    return figures[0].axes[0]


def _two_class_gradients(tmp_path) -> dict:
    from cnnlab.analysis.gradients import analyze_gradients

    pets = _folder(tmp_path / "pets", ("cat", "dog"))
    return analyze_gradients([2, 4], seeds=1, batch_size=8, train_images=16, test_images=16, dataset=f"folder:{pets}",
                             device="cpu")


def test_depth_png_draws_chance_for_the_datasets_number_of_classes(tmp_path, monkeypatch):
    """depth.png drew "chance (10 classes)" at 10% on a 2-class dataset (50%) and a 5-class one (20%)."""
    result = _two_class_gradients(tmp_path)
    assert result["num_classes"] == 2
    ax = _depth_figure(result, monkeypatch)
    chance = [line for line in ax.get_lines() if line.get_label().startswith("chance")]
    assert [line.get_label() for line in chance] == ["chance (2 classes)"] and list(chance[0].get_ydata()) == [50, 50]
    assert "diverged" not in " ".join(t.get_text() for t in ax.get_legend().get_texts())  # none did


def test_depth_png_marks_a_diverged_budget(tmp_path, monkeypatch):
    """A budget whose loss became NaN (the table's `21.00%!`, `"diverged": true`) was drawn as an ordinary point."""
    from cnnlab.analysis.gradients import format_gradients

    result = _two_class_gradients(tmp_path)
    lost = next(s for s in result["stacks"] if s["kind"] == "plain" and s["depth"] == 4)
    lost["training"].update(diverged=True, test_accuracy=21.0)
    assert "21.00%!" in format_gradients(result)
    ax = _depth_figure(result, monkeypatch)
    marked = [line for line in ax.get_lines() if "diverged" in line.get_label()]
    assert len(marked) == 1 and list(marked[0].get_xdata()) == [4] and list(marked[0].get_ydata()) == [21.0]
    assert marked[0].get_label() in [t.get_text() for t in ax.get_legend().get_texts()]
    assert "21.0!" in [t.get_text() for t in ax.texts]


def test_evaluates_figures_name_the_weights_evaluated_and_the_split_not_the_output_folder(tiny_idx, tmp_path,
                                                                                          monkeypatch):
    """`evaluate RUN --out DIR`'s confusion.png and mistakes.png read `run DIR` (the output folder's name), `--pretrained
    resnet --out my-report` `run my-report` (the shipped weights are no run), and `--split val` figures looked like
    the test set's."""
    import cnnlab.evaluation
    from cnnlab.data import load_dataset

    contexts = []
    for name in ("plot_confusion", "plot_mistakes"):
        real = getattr(cnnlab.plots, name)
        monkeypatch.setattr(cnnlab.plots, name, lambda *a, _real=real, **k: contexts.append(k["context"]) or _real(*a, **k))
    run = tmp_path / "runs" / "inc-val"
    train(tiny_config(tiny_idx, val_split=0.25), out=run, **QUIET)
    data = f"idx:{tiny_idx}"

    def figures_of(*args: str) -> list[str]:
        contexts.clear()
        assert main(["evaluate", *args, "--device", "cpu"]) == 0
        return [cnnlab.drawing.context_text(c) for c in contexts]

    for out in ("unrelated", "ev-val"):
        names = figures_of(str(run), "--out", str(tmp_path / out))
        assert names == [f"model basic_cnn · dataset {data} · run inc-val"] * 2, names
    names = figures_of(str(run), "--split", "val", "--out", str(tmp_path / "val"))
    assert names == [f"model basic_cnn · dataset {data} · run inc-val · split validation"] * 2, names
    names = figures_of(str(run), "--checkpoint", "best", "--out", str(tmp_path / "best"))
    assert names == [f"model basic_cnn · dataset {data} · run inc-val · checkpoint best.pt"] * 2, names
    assert figures_of(str(run)) == []  # its own report: as drawn at the end of its training, nothing to draw again
    os.utime(run / "mistakes.png", (1, 1))
    assert figures_of(str(run)) == [f"model basic_cnn · dataset {data} · run inc-val"]

    tiny = load_dataset(data)  # the shipped weights evaluated on the tiny test set (mnist is not read in tests)
    monkeypatch.setattr(cnnlab.evaluation, "load_dataset", lambda *args, **kwargs: tiny)
    names = figures_of("--pretrained", "resnet", "--out", str(tmp_path / "my-report"))
    assert names == [f"model resnet · dataset {data} · shipped weights resnet-mnist"] * 2, names


def _branches_with(drops: dict[str, list[float]]) -> dict:
    """A branches.json result whose incept modules lose ``drops`` (per module: zeroed then mean-ablated, per branch)
    points of a 50% baseline."""
    modules = []
    for name, lost in drops.items():
        rows = [{"branch": b, "channels": 24, "zero": {"accuracy": 50.0 - lost[2 * i], "loss": 0.7},
                 "mean": {"accuracy": 50.0 - lost[2 * i + 1], "loss": 0.7}, "next_layer_share": 0.25,
                 "uniform_share": 0.27, "energy": 0.1, "energy_per_class": [0.1, 0.2]}
                for i, b in enumerate(("pool", "1x1", "5x5", "3x3"))]
        modules.append({"name": name, "next_layer": "fc", "output_shape": [88, 7, 7], "branches": rows})
    return {"model": "inception", "checkpoint": "last.pt", "dataset": "folder:f2", "classes": ["cat", "dog"],
            "baseline": {"accuracy": 50.0, "loss": 0.7}, "test_images": 6, "mean_from_train_images": 34,
            "modules": modules}


def test_branches_png_keeps_its_value_labels_inside_the_frame_and_its_legend_off_the_bars(monkeypatch):
    """No branch losing accuracy (every value <= 0): the axis ended at 0, the `0.00` labels ran across the top
    frame into the title, and the legend covered the top of the 5x5 bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    import cnnlab.analysis.plots as aplots

    figures = []
    monkeypatch.setattr(aplots, "save_figure", lambda fig, path: figures.append(fig) or path)
    drops = {"none lost": [0.0] * 8, "gains": [16.67 * -1, 0, 0, 0, 0, -33.33, 0, 0],
             "mixed": [5.0, -3.0, 0, 0, 12.0, 0.5, 0, -0.2], "losses": [0.74, 0.09, 0.66, 0.06, 1.82, 1.65, 0.03, 0.03]}
    aplots.plot_branches(_branches_with(drops), "unused.png")
    renderer = FigureCanvasAgg(figures[0]).get_renderer()
    figures[0].draw(renderer)
    panels = [ax for ax in figures[0].axes if "accuracy lost" in ax.get_title()]
    assert len(panels) == 4
    for ax, name in zip(panels, drops):
        frame = ax.get_window_extent(renderer)
        labels = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(labels) == 8
        assert all(frame.y0 - 0.5 <= b.y0 and b.y1 <= frame.y1 + 0.5 for b in labels), name  # inside, not across
        legend = ax.get_legend().get_window_extent(renderer)
        bars = [p.get_window_extent(renderer) for p in ax.patches if abs(p.get_height()) > 0]
        assert not [b for b in bars + labels if b.overlaps(legend)], name


def test_a_diverged_run_without_a_checkpoint_is_named_for_its_failure_not_an_early_stop(tiny_idx, tmp_path, capsys):
    """`evaluate` of a run that diverged at its second step said `the run saved no checkpoint (it stopped before its
    first epoch ended): train it again`, which diverges again; status.json (and `cnnlab runs`) says why it failed and
    what to change. `evaluate`, `export`, `predict` and `train --resume` now say that."""
    run = tmp_path / "diverged"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--lr", "1e6", "--device", "cpu",
                 "--out", str(run), "--quiet"]) == 2
    cause = json.loads((run / "status.json").read_text())["detail"]
    assert cause.startswith("training diverged") and "lower --lr" in cause and not (run / "last.pt").exists()
    capsys.readouterr()
    for command in (["evaluate", str(run)], ["export", str(run)], ["predict", str(run), "x.png"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err == (f"cnnlab: error: {run}: no last.pt in this run directory; the run saved no checkpoint: it failed "
                       f"({cause})\n"), err
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the run failed before it saved a last.pt ({cause}), so there is no position" in err
    capsys.readouterr()
    assert main(["runs", "--root", str(run.parent), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)  # the run's row says the same
    assert [(r["status"], r["detail"]) for r in rows] == [("failed", cause)], rows
