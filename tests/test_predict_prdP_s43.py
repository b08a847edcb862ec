"""A tester's (prdP) real-world pages: a fine pen, a digit against the page's corner, lines printed over a digit."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import cnnlab
from cnnlab.preprocessing import digit_and_marks, number_fields, number_lines, preprocess


def _arc(cx, cy, rx, ry, a0, a1, n=40):
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a))) for a in np.linspace(a0, a1, n)]


#: The tester's pen digits: strokes in a box 1 wide and 1.4 high.
STROKES = {0: [_arc(0.5, 0.7, 0.35, 0.6, 0, 360)],
           2: [_arc(0.5, 0.45, 0.35, 0.33, 200, 360) + [(0.85, 0.45), (0.15, 1.3), (0.9, 1.3)]],
           4: [[(0.6, 1.3), (0.6, 0.1), (0.1, 0.9), (0.9, 0.9)]],
           6: [[(0.7, 0.1), (0.3, 0.6)] + _arc(0.5, 1.0, 0.3, 0.3, 200, 560)],
           8: [_arc(0.5, 0.4, 0.28, 0.3, 0, 360), _arc(0.5, 1.0, 0.35, 0.3, 0, 360)],
           9: [_arc(0.5, 0.45, 0.32, 0.32, 0, 360), [(0.82, 0.45), (0.7, 1.3)]]}
SERIF = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"


def pen_page(digits: list[int], size: tuple[int, int], high: int, pen: int, ruled_over: int = 0) -> Image.Image:
    """Digits ``high`` px high drawn with a pen ``pen`` px wide in the middle of a white page; ``ruled_over``: grey
    lines (2 px, 120) that far apart printed over them."""
    (w, h), s = size, high / 1.4
    im = Image.new("L", size, 255)
    draw = ImageDraw.Draw(im)
    x = (w - len(digits) * s * 1.3) / 2
    for d in digits:
        for stroke in STROKES[d]:
            draw.line([(x + px * s, (h - high) / 2 + py * s) for px, py in stroke], fill=0, width=pen, joint="curve")
        x += s * 1.3
    for y in range(10, h, ruled_over or h + 1):
        draw.line([(0, y), (w, y)], fill=120, width=2)
    return im


@pytest.fixture(scope="module")
def digits():
    return cnnlab.predictor(model="resnet")


@pytest.mark.parametrize("pen,size,high", [(2, (1000, 600), 250), (1, (1000, 600), 250), (2, (600, 400), 150),
                                           (2, (1600, 1000), 400), (1, (300, 200), 70)])
def test_a_fine_pen_number_stays_whole(digits, pen, size, high):
    """A 1-3 px pen on a page reduced 1-4 times for its strokes: the strokes broke into pieces there, read as
    colons, points and extra digits (``2046`` read ``2:415`` without a word), and counted as digits side by side."""
    page = pen_page([2, 0, 4, 6], size, high, pen)
    found = number_fields(page)
    assert len(found.fields) == 4 and found.signs == [] and found.left_out == 0
    assert digits.read_number(page).label == "2046"
    assert digit_and_marks(page)[1] == 4


@pytest.mark.parametrize("pen", [1, 2])
def test_a_fine_pen_eight_is_one_digit(digits, pen):
    """An '8' of a 1-2 px pen on a 1000-px page: its loops' pieces were "2 digits side by side" (one above the
    other), read ``1:53`` with ``--number`` and three rows with ``--lines``."""
    page = pen_page([8], (1000, 1000), 600, pen)
    assert digit_and_marks(page)[1] == 1
    found = number_fields(page)
    assert len(found.fields) == 1 and found.left_out == 0 and found.signs == []
    assert len(number_lines(page)) == 1
    assert digits.read_number(page).label == "8"


def _typed_two(margin: int) -> Image.Image:
    """The tester's typed '2' (DejaVu Serif, 40 pt) ``margin`` px from the bottom-left corner of an 800-px page."""
    im = Image.new("L", (800, 800), 255)
    draw = ImageDraw.Draw(im)
    font = ImageFont.truetype(SERIF, 40)
    left, top, _, bottom = draw.textbbox((0, 0), "2", font=font)
    draw.text((margin - left, 800 - (bottom - top) - top - margin), "2", fill=0, font=font)
    return im


@pytest.mark.skipif(not Path(SERIF).exists(), reason="DejaVu Serif not installed")
def test_a_digit_against_the_pages_corner_keeps_its_part_there(digits):
    """A '2' 2 px from the corner lost its bottom bar (joined to its curve by faint ink only, which reached the
    border and was followed a pixel: border cleaning) and was read '7' at 92%; --number read it '2'."""
    near, away = preprocess(_typed_two(2)), preprocess(_typed_two(20))
    assert np.corrcoef(near.ravel(), away.ravel())[0, 1] > 0.95
    assert digits(_typed_two(2)).label == "2" == digits.read_number(_typed_two(2)).label


@pytest.mark.parametrize("digit", [0, 2, 9])
def test_lines_printed_over_a_digit_cut_it_into_no_rows(digits, digit):
    """Grey ruled lines printed over a digit's strokes cut it into bands: ``--number`` noted "2 more marks as large
    as a digit away from the number's row ... add --lines", and ``--lines`` read the bands as rows (``17`` / ``61``)."""
    page = pen_page([digit], (400, 400), 120, 10, ruled_over=32)
    found = number_fields(page)
    assert len(found.fields) == 1 and found.left_out == 0
    assert len(number_lines(page)) == 1
    assert digits.read_number(page).label == str(digit) == digits(page).label
    assert [n.label for n in digits.read_lines(page)] == [str(digit)]
