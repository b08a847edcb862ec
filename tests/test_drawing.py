"""cnnlab.drawing: the Pillow charts every run draws (curves), checked on their pixels and their ticks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnlab.drawing import COLOURS, Panel, Series, chart, log_ticks, nice_ticks, tick_label


def test_nice_ticks_are_round_numbers_inside_the_range():
    assert nice_ticks(0.0, 10.0) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(96.87, 99.73) == pytest.approx([97.0, 97.5, 98.0, 98.5, 99.0, 99.5])
    assert nice_ticks(-0.95, 40.95) == [0, 10, 20, 30, 40]
    assert nice_ticks(5.0, 5.0) == [5.0]


def test_log_ticks_label_powers_of_ten_or_1_2_5_within_one_decade():
    majors, minors = log_ticks(math.log10(1e-4), math.log10(2.0))
    assert majors == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0]) and 2e-4 in minors and 2.0 in minors
    majors, minors = log_ticks(math.log10(0.15), math.log10(0.9))  # less than a decade: 0.2 and 0.5 labelled
    assert majors == pytest.approx([0.2, 0.5]) and all(v not in majors for v in minors)
    majors, minors = log_ticks(-4.0, 30.0)  # a loss that blew up: at most 8 labelled powers of ten
    assert len(majors) <= 8 and majors[0] == pytest.approx(1e-4) and minors == []
    majors, minors = log_ticks(math.log10(1.7), math.log10(2.3))  # narrower still: round numbers
    assert majors == pytest.approx([1.8, 2.0, 2.2]) and minors == []
    assert [tick_label(v) for v in (1e-5, 0.001, 99.5, 100.0, 0.0)] == ["1e-5", "0.001", "99.5", "100", "0"]


def _count(img, colour) -> int:
    """Pixels within a small distance of ``colour`` (the lines are anti-aliased)."""
    return int((np.abs(np.asarray(img).astype(int) - np.array(colour)).sum(axis=2) < 40).sum())


def _panels(y_loss, y_acc, epochs):
    return [Panel([Series(epochs, y_loss, "loss", COLOURS["blue"])], xlabel="epoch", ylabel="loss", log_y=True),
            Panel([Series(epochs, y_acc, "accuracy", COLOURS["green"], marker="^", dashed=True)],
                  xlabel="epoch", ylabel="%", hline=(max((v for v in y_acc if v is not None), default=50.0), (170, 216, 170)))]


def test_a_chart_draws_each_series_in_its_colour_and_survives_gaps_and_one_point():
    epochs = list(range(1, 11))
    img = chart(_panels([2.0 / e for e in epochs], [90.0 + e / 2 for e in epochs], epochs), "t", {"run": "r"})
    assert img.size[0] == 1100 and img.size[1] > 440
    assert _count(img, COLOURS["blue"]) > 300 and _count(img, COLOURS["green"]) > 300  # lines, markers, legend
    diverged = [1.0, 0.5, float("nan"), float("inf"), 0.0, -1.0, None, 0.2, 0.1, 0.05]  # gaps, not errors
    img = chart(_panels(diverged, [50.0] * 5 + [None] * 5, epochs), "t")
    assert _count(img, COLOURS["blue"]) > 100
    img = chart(_panels([float("nan")], [None], [1]), "nothing finite")  # every value missing: axes, no lines
    assert _count(img, COLOURS["blue"]) < 100


def test_the_legend_goes_where_the_lines_are_not():
    epochs = list(range(1, 21))

    def legend_corner(values) -> str:  # where a chart with a legend differs from the same chart without one
        with_legend, without = (chart([Panel([Series(epochs, values, label, COLOURS["blue"])])], "t")
                                for label in ("a line", ""))
        ys, xs = np.nonzero(np.asarray(with_legend).astype(int) - np.asarray(without) != 0)[:2]
        return ("upper" if ys.mean() < with_legend.height / 2 else "lower") + (
            " left" if xs.mean() < with_legend.width / 2 else " right")

    assert legend_corner([float(e) for e in epochs]) == "upper left"  # rising: the upper right is taken
    assert legend_corner([float(-e) for e in epochs]) == "upper right"
    walls = [10.0 if e <= 3 or e >= 18 else 0.0 for e in epochs]
    assert legend_corner(walls) == "lower left"  # both upper corners taken


def test_names_with_newlines_or_tabs_are_drawn_on_one_line(tmp_path):
    """A class folder or a run may be named with a newline in it; Pillow anchors and measures one line only."""
    import torch

    from cnnlab.drawing import one_line
    from cnnlab.plots import confusion_image, mistakes_mosaic, plot_curves

    assert one_line("a\nb\tc\r\x00d") == "a b c  d" and one_line("T-shirt/top") == "T-shirt/top"
    names, context = ["a\nb", "c\td"], {"run": "r\nun", "model": "m\x1b[31m"}
    assert confusion_image([[3, 1], [0, 4]], names, "confusion\nmatrix", context).width >= 420
    mistake = [{"index": 0, "true": 0, "pred": 1, "confidence": 0.5}]
    assert mistakes_mosaic([torch.zeros(28, 28, dtype=torch.uint8)], mistake, names, title="t\nx", context=context)
    history = [{"epoch": 1, "train_loss": 1.0, "test_loss": 1.0, "train_acc": 1.0, "test_acc": 2.0}]
    assert plot_curves(history, tmp_path / "c.png", context=context).is_file()
