"""The benchmarks' moving parts work (on tiny data; the real runs are `make bench`, not tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch


from benchmarks import roofline, throughput, time_to_accuracy
from cnnlab.data import load_dataset
from cnnlab.models import create_model


@pytest.fixture
def tiny(tiny_idx):
    return load_dataset(f"idx:{tiny_idx}")


def test_reference_dataset_matches_cnnlab_normalisation(tiny):
    ds = throughput.ReferenceMNIST(tiny.train_images, tiny.train_labels, tiny.mean, tiny.std)
    x, y = ds[3]
    expected = (tiny.train_images[3].float() / 255 - tiny.mean) / tiny.std
    torch.testing.assert_close(x, expected)
    assert y == int(tiny.train_labels[3])


def test_pipelines_report_positive_rates(tiny):
    model = create_model("basic_cnn")
    assert throughput.reference_train(model, tiny, steps=2) > 0
    assert throughput.cnnlab_train("basic_cnn", tiny, steps=2) > 0
    assert throughput.reference_eval(model, tiny) > 0 and throughput.cnnlab_eval(model, tiny) > 0


def test_flop_counts_and_peak():
    assert roofline.train_step_flops("resnet", batch=2) > roofline.train_step_flops("basic_cnn", batch=2) > 0
    assert roofline.matmul_peak(n=64, repeats=1) > 0
    rates = roofline.matmul_rates(n=64, repeats=1)
    assert set(rates) == {"torch.mm", "1x1 conv", "1x1 conv channels-last"} and min(rates.values()) > 0


def test_each_arm_runs_in_its_own_process_on_given_data(tiny_idx):
    # the arm runs as `python -m benchmarks.throughput` in a fresh process; the conftest's CNNLAB_HOME
    # and empty mirror list are inherited through the environment
    for arm in ("reference", "fp32 (no malloc tuning)"):
        assert throughput.arm_in_fresh_process(arm, "basic_cnn", f"idx:{tiny_idx}", steps=2) > 0
    with pytest.raises(RuntimeError, match="failed"):
        throughput.arm_in_fresh_process("reference", "no_such_model", f"idx:{tiny_idx}", steps=2)


def test_stopwatch_on_the_cpu():
    import time

    from benchmarks.common import Stopwatch

    clock = Stopwatch(torch.device("cpu")).start()
    time.sleep(0.05)
    assert 0.05 <= clock.stop() < 5.0  # it measures the time that passed, not zero, not a timestamp


def test_the_whole_process_reference_script_runs_the_lectures_epoch(tiny_idx):
    """The reference of benchmarks.whole_process: the lecture's script, per item, on raw IDX files."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "benchmarks.reference_epoch", "--model", "resnet", "--data",
                          str(tiny_idx)], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "accuracy on test set:" in out.stdout and "[" in out.stdout.splitlines()[-1]


def test_whole_process_timing_alternates_arms_and_names_failures(tmp_path):
    from benchmarks.whole_process import alternate, wall

    times = alternate({"a": [sys.executable, "-c", "pass"], "b": [sys.executable, "-c", "import time; time.sleep(0.2)"]},
                      repeats=2)
    assert len(times["a"]) == len(times["b"]) == 2 and min(times["b"]) > 0.2 > 0 < min(times["a"])
    with pytest.raises(RuntimeError, match="failed"):
        wall([sys.executable, "-c", "raise SystemExit(3)"])


def test_whole_process_page_gives_the_ratio_of_medians_and_each_rounds_pair():
    from benchmarks.common import median
    from benchmarks.whole_process import report_lines

    epochs = {"reference resnet": [60.0, 70.0, 50.0], "cnnlab resnet": [30.0, 40.0, 20.0],
              "reference inception": [120.0, 130.0, 110.0], "cnnlab inception": [100.0, 80.0, 70.0]}
    latency = {'python -c "import torch"': [3.0] * 5, "cnnlab evaluate RUN": [4.0] * 5, "cnnlab models": [3.1] * 5}
    med = {name: median(v) for name, v in {**epochs, **latency}.items()}
    page = "\n".join(report_lines(epochs, latency, med, 3))
    # ratio of the medians (60 / 30), and each round's own pair: 60/30, 70/40, 50/20
    assert "| resnet | 60.00 | 30.00 | **2.00x** | >= 2.0x: met | 2.00x, 1.75x, 2.50x |" in page
    assert "| inception | 120.00 | 80.00 | **1.50x** | >= 1.5x: met | 1.20x, 1.62x, 1.57x |" in page
    assert "| `cnnlab evaluate RUN` | 4.00 | +1.00 | <= 0.8 s: not met |" in page
    assert "| `cnnlab models` | 3.10 | +0.10 | - |" in page
    assert "per round" not in "\n".join(report_lines({}, latency, med, 5))  # latency only: no epoch table


def test_time_to_accuracy_alternates_the_arms_seed_by_seed(monkeypatch):
    calls, written = [], {}

    def fake_run(model, recipe, seed, target, extra=()):
        calls.append((model, recipe, seed, extra))
        reached = not (model == "inception" and recipe == "lecture")
        return {"seed": seed, "reached": reached, "seconds": 10.0 + seed if reached else None,
                "epoch": 1.0 if reached else None, "final_accuracy": 99.1, "process_seconds": 12.0 + seed}

    monkeypatch.setattr(time_to_accuracy, "one_run", fake_run)
    monkeypatch.setattr(time_to_accuracy, "write", lambda name, payload, md: written.update(name=name, md=md))
    results = time_to_accuracy.run(seeds=2)
    resnet = [c for c in calls if c[0] == "resnet"]
    # seed 0 of every arm before seed 1 of any; the old 2-epoch fast path runs for the residual net only
    assert [c[2] for c in resnet] == [0] * 5 + [1] * 5
    assert ("inception", "fast", 1, ("--precision", "fp32")) in calls
    assert ("resnet", "fast", 0, ("--epochs", "2", "--batch-size", "128", "--precision", "fp32")) in calls
    assert not any(c[0] == "inception" and c[1] == "fast" and c[3][:1] == ("--epochs",) for c in calls)
    assert results["resnet/fast-2ep/99"]["median_seconds"] == 10.5
    assert results["inception/lecture/99"]["median_seconds"] is None and written["name"] == "time_to_accuracy"
    assert "| resnet | fast `--epochs 2 --batch-size 128 --precision fp32` | 99% | 10.0, 11.0 | **10.5** |" in written["md"]


def test_typed_digits_pages_and_table():
    """The typed-digits benchmark sets each digit where asked, in ink of the asked shade, and tabulates."""
    import numpy as np

    from benchmarks import typed_digits as td

    for name, spec in td.CONDITIONS.items():
        im = np.asarray(td.page(td.BUILTIN, 8, *spec))
        size, side, ink, paper, rotate, (dx, dy) = spec
        assert im.shape == (side, side) and im[0, 0] == paper, name
        assert (np.abs(im.astype(int) - paper) > abs(ink - paper) / 2).any(), name  # ink on the page
        if not rotate and (dx, dy) == (0, 0):
            ys, xs = np.nonzero(np.abs(im.astype(int) - paper) > abs(ink - paper) / 2)
            assert abs((ys.min() + ys.max()) / 2 - side / 2) <= 2 and abs((xs.min() + xs.max()) / 2 - side / 2) <= 2
    results = {"resnet": {"accuracy": dict.fromkeys(td.CONDITIONS, 100.0), "misses": []},
               "inception": {"accuracy": dict.fromkeys(td.CONDITIONS, 90.0),
                             "misses": [{"font": "f", "condition": "c", "digit": 1, "read_as": "7"}] * 2}}
    table = td.markdown(results, ["f"])
    assert "| black on white, large | 100.0% | 90.0% |" in table and "1 as 7 x2" in table


def test_pen_digits_thin_a_digit_to_its_skeleton_and_draw_it_with_the_pen_asked():
    """The pen benchmark's skeleton is one pixel wide and connected like the shape; its pages hold a line of the
    asked width (a 1-px pen: no 2x2 block of ink), the digit's box 70 % of the page high, and the table lists every
    column."""
    import numpy as np

    from benchmarks import pen_digits as pd

    bar = np.zeros((20, 40), bool)
    bar[8:13, 5:35] = True
    bones = pd.skeleton(bar)
    assert bones[10, 8:32].all() and bones.sum() <= 32 and not bones[8].any() and not bones[12].any()
    ring = np.zeros((40, 40), bool)
    ring[5:35, 5:35], ring[12:28, 12:28] = True, False
    thin = pd.skeleton(ring)
    assert thin.any() and not thin[13:27, 13:27].any()  # the hole stays a hole
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 12:16] = 255  # a "1"
    for side, width in ((300, 1), (600, 8)):
        page = np.asarray(pd.pen_page(digit, side, width)) < 128
        ys, xs = np.nonzero(page)
        assert 0.5 * side < ys.max() - ys.min() <= 0.72 * side  # the 20-px box is 70 %; thinning takes the ends
        blocks = page[:-1, :-1] & page[1:, :-1] & page[:-1, 1:] & page[1:, 1:]
        assert blocks.any() == (width > 1)
    rows = {"1 px pen, 1000 px page": {"resnet now": 98.0, "inception now": 97.0}}
    assert "| 1 px pen, 1000 px page | 98.0% | 97.0% |" in pd.markdown(rows, 300)
