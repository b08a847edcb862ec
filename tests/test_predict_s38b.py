"""A typed number that is small on a large page (38 pt type with a wide white margin) is read as its tight crop is
(``predict --number``, ``--lines``): its strokes were found on a copy of the page reduced about 4 times, where they
were under a pixel wide and broke into pieces read as '1's, points and colons (`1613:31012161` for `163310216`)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import cnnlab
from cnnlab import preprocessing
from cnnlab.preprocessing import LABEL_SIDE, find_strokes, ink_and_grain, number_fields, number_lines


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    old = os.environ.get("CNNLAB_HOME")
    os.environ["CNNLAB_HOME"] = str(tmp_path_factory.mktemp("home"))
    try:
        yield cnnlab.predictor(model="resnet")
    finally:
        if old is None:
            os.environ.pop("CNNLAB_HOME", None)
        else:
            os.environ["CNNLAB_HOME"] = old


def typed(text: str, size: int, margin: int) -> Image.Image:
    """``text`` in Pillow's own font at ``size`` px, black on white, ``margin`` px of paper around its ink."""
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    page = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 255)
    ImageDraw.Draw(page).text((margin - left, margin - top), text, font=font, fill=0)
    return page


@pytest.mark.parametrize("text,size", [("2964609", 38), ("4038", 38), ("869302", 30), ("52038694", 30)])
def test_a_small_number_on_a_large_page_is_read_as_its_tight_crop(net, text, size):
    """Before: 4 fields `29460`, 5 fields with a colon `4:2538`, a colon `883:412`, 4 fields `5202304`."""
    tight, page = typed(text, size, 40), typed(text, size, 400)
    assert max(page.size) > 3 * LABEL_SIDE  # the page is reduced more than 3 times to find the strokes on it
    assert net.read_number(tight).label == text
    found = number_fields(page)
    assert len(found.fields) == len(text) and found.signs == [] and found.left_out == 0
    assert net.read_number(page).label == text
    # each digit's field is the tight crop's, near enough
    for got, want in zip(found.fields, number_fields(tight).fields):
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.8


def test_small_lines_on_a_large_page_are_read_each(net):
    font = ImageFont.load_default(size=38)
    page = Image.new("L", (1000, 900), 255)
    draw = ImageDraw.Draw(page)
    draw.text((400, 380), "2964609", font=font, fill=0)
    draw.text((400, 440), "4038", font=font, fill=0)
    assert [len(f.fields) for f in number_lines(page)] == [7, 4]
    assert [n.label for n in net.read_lines(page)] == ["2964609", "4038"]


def test_strokes_are_found_again_only_where_the_marks_are_small_and_a_crop_enlarges_them():
    """Large digits, and small ones spread over the page, keep the strokes found on the whole page (the same
    objects: what they read is unchanged); small ones in a small part of it get strokes found on a crop no larger
    than the copy the page's were found on (bounded work whatever the page's size)."""
    closer_strokes = preprocessing.closer_strokes
    ink, grain = ink_and_grain(typed("4038", 160, 400))
    strokes = find_strokes(ink, grain)
    same_ink, same = closer_strokes(ink, strokes)
    assert same_ink is ink and same is strokes
    spread = Image.new("L", (1000, 900), 255)
    for x, y, ch in ((40, 40, "4"), (900, 800, "8")):  # small, at opposite corners: no smaller crop holds them
        ImageDraw.Draw(spread).text((x, y), ch, font=ImageFont.load_default(size=38), fill=0)
    ink, grain = ink_and_grain(spread)
    strokes = find_strokes(ink, grain)
    assert closer_strokes(ink, strokes)[1] is strokes
    ink, grain = ink_and_grain(typed("4038", 38, 400))
    strokes = find_strokes(ink, grain)
    crop, closer = closer_strokes(ink, strokes)
    assert crop.shape[0] < ink.shape[0] / 4 and crop.shape[1] < ink.shape[1] / 2
    assert max(closer.small.shape) <= LABEL_SIDE
    tall = max(c["box"][2] - c["box"][0] + 1 for c in closer.comps)
    assert tall >= 3 * max(c["box"][2] - c["box"][0] + 1 for c in strokes.comps)
