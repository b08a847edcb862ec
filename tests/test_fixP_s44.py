"""What a tester found predicting at scale and on real-world images (probe pred, s44): a stop while ``--json``
wrote the failures left an array with no ``]``; a stop while ``--show-input`` wrote a chunk's images dropped the
chunk's rows and could leave half a pair; a digit cropped to its ink was read as light ink on dark paper.
docs/reliability.md lists them."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import cnnlab
import cnnlab.predict
from apps_helpers import mnist_like_fields as _fields, tiny_checkpoint
from cnnlab.cli import main
from cnnlab.imageio import unit_gray
from cnnlab import preprocessing

SANS = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


@pytest.fixture
def sigint_default():
    """SIGINT raises KeyboardInterrupt (as in the program), whatever the test runner set; restored after."""
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_a_stop_while_json_writes_the_failures_keeps_the_array_whole(tmp_path, monkeypatch, capsys, sigint_default):
    """(fixP D2.) Ctrl-C while ``--json`` wrote the failures' entries (at the end, after the rows) left the array
    cut after an entry, no ``]``, and no ``stopped:`` line. The rest is now written whole, then the stop is taken."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt")
    folder = tmp_path / "imgs"
    _fields(folder, ["a.png", "b.png"])
    for i in range(4):
        (folder / f"x{i}.png").write_bytes(b"not an image")
    calls = []
    real = cnnlab.predict.Failure.to_dict

    def to_dict(self):
        calls.append(self.name)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C as the second failure's entry is written
        return real(self)

    monkeypatch.setattr(cnnlab.predict.Failure, "to_dict", to_dict)
    code = main(["predict", str(ckpt.parent), str(folder), "--json"])
    out, err = capsys.readouterr()
    rows = json.loads(out)  # valid JSON: what was done
    assert code == 130 and len(rows) == 6 and sum("error" in r for r in rows) == 4, (code, out)
    assert err.splitlines()[-2:] == ["stopped: 2 images predicted, 4 failed, of 6 images given",
                                     "cnnlab: interrupted"], err


@pytest.mark.parametrize("as_json", [False, True])
def test_a_stop_while_show_input_writes_keeps_the_rows_and_whole_pairs(tmp_path, monkeypatch, capsys, sigint_default,
                                                                        as_json):
    """(fixP D4.) A stop while ``--show-input`` wrote a chunk's images (all of them before any row) printed no row,
    said no image written, and left ``c.input.png`` without its ``.x10``. Each result is now one step a stop waits
    for: its pair written, its row printed and counted."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt")
    folder, shown = tmp_path / "imgs", tmp_path / "si"
    _fields(folder, ["a.png", "b.png", "c.png", "d.png"])
    real = cnnlab.predict.atomic_write_bytes

    def write(path, data, *args, **kwargs):
        real(path, data, *args, **kwargs)
        if Path(path).name == "c.input.png":
            signal.raise_signal(signal.SIGINT)  # Ctrl-C between the two files of c's pair

    monkeypatch.setattr(cnnlab.predict, "atomic_write_bytes", write)
    code = main(["predict", str(ckpt.parent), str(folder), "--show-input", str(shown), *(["--json"] * as_json)])
    out, err = capsys.readouterr()
    assert code == 130
    assert sorted(p.name for p in shown.iterdir()) == [f"{s}.input{x}.png" for s in "abc" for x in ("", ".x10")]
    if as_json:
        assert [Path(r["input_image"]).name for r in json.loads(out)] == ["a.input.png", "b.input.png", "c.input.png"]
    else:
        lines = out.splitlines()
        assert [line.split()[0].rsplit("/", 1)[-1] for line in lines[:3]] == ["a.png", "b.png", "c.png"]
        assert [line.split()[1] for line in lines[3:]] == [str(shown / f"{s}.input.png") for s in "abc"], lines
    assert err.splitlines()[-2:] == ["stopped: 3 images predicted, of 4 images given", "cnnlab: interrupted"], err


@pytest.fixture(scope="module")
def resnet():
    return cnnlab.predictor(model="resnet")


def _typed(text: str, margin: int, size: int = 200) -> Image.Image:
    """``text`` in DejaVu Sans, black on white, cropped to its ink (its own box, as ``getbbox()`` gives it) with
    ``margin`` px of paper around it."""
    im = Image.new("L", (len(text) * size + 200, 2 * size), 255)
    ImageDraw.Draw(im).text((im.width // 2, size), text, fill=0, font=ImageFont.truetype(SANS, size), anchor="mm")
    x0, y0, x1, y1 = Image.eval(im, lambda v: 255 - v).getbbox()
    return im.crop((x0 - margin, y0 - margin, x1 + margin, y1 + margin))


@pytest.mark.skipif(not Path(SANS).exists(), reason="DejaVu Sans not installed")
def test_a_digit_cropped_to_its_ink_is_read_on_its_light_paper(resnet):
    """(fixP D5.) A digit cropped to its ink (0 px of paper) was read as light ink on dark paper: the border, crossed
    by the strokes, is not evenly lit, and the vote of the thin minority fails on strokes as wide as its window
    (``tight0.png 1 67.5%``, 2 of 10 right; ``41`` read ``47``). The border is the paper where nothing in the image is
    lighter than its median (``preprocessing.inked_border``), and a stroke along it is no light falling off."""
    for d in "0123456789":
        crop = _typed(d, 0)
        assert preprocessing.light_paper(unit_gray(crop)[0])
        assert resnet(crop).label == d, d
    assert resnet.read_number(_typed("41", 0)).label == "41"
    assert resnet.read_number(_typed("2024", 1)).label == "2024"


def test_a_shadow_over_most_of_the_border_is_no_inked_border():
    """What the rule must not take for the paper: a white page (0.9) with a digit in the light and a deep shadow
    (light 0.25) over most of its border; dark light marks on it are read as they were (the map, not one level)."""
    page = np.full((300, 300), 0.9, np.float32)
    page[:, :200] *= 0.25  # the shadow, over two thirds of the border
    page[120:180, 235:245] = 0.08  # a '1' in the light
    assert preprocessing.inked_border(page) is None
    assert np.ndim(preprocessing.paper_level(page, preprocessing.light_paper(page))) == 2  # a map, following the shadow


def _underlined(im: Image.Image, below: int, pen: int = 6) -> Image.Image:
    """``im`` with a line ``pen`` px wide drawn ``below`` px under its ink, 10 px past it on each side."""
    ys, xs = np.nonzero(np.asarray(im.convert("L")) < 128)
    im = im.copy()
    ImageDraw.Draw(im).line([(xs.min() - 10, ys.max() + below), (xs.max() + 10, ys.max() + below)], fill=0, width=pen)
    return im


@pytest.mark.skipif(not Path(SANS).exists(), reason="DejaVu Sans not installed")
def test_an_underlined_number_is_read_without_its_underline(resnet):
    """(fixP D1.) An underline under a number was read as a digit (``3378`` underlined: ``3127``, ``310``, with a
    note that digits touch), or, heavier than each digit, as the number itself (``2``, the real digits "marks away
    from the number's row"), and ``--lines`` read it as a row of its own. A mark far wider than high and than the
    digits are high is a line ruled under them, dropped as a frame is (``preprocessing.rule_labels``)."""
    from test_predict_prdP_s43 import pen_page

    typed = Image.new("L", (800, 400), 255)
    ImageDraw.Draw(typed).text((400, 180), "3378", fill=0, font=ImageFont.truetype(SANS, 150), anchor="mm")
    for below in (15, 30, 45):
        page = _underlined(typed, below)
        found = resnet.read_number(page)
        assert (found.label, found.wide, found.left_out) == ("3378", {}, 0), below
        assert [row.label for row in resnet.read_lines(page)] == ["3378"]
    for below in (10, 25):  # handwriting: the underline, heavier than a digit, was the number ('2')
        assert resnet.read_number(_underlined(pen_page([2, 0, 4, 6], (800, 400), 150, 6), below)).label == "2046"


@pytest.mark.skipif(not Path(SANS).exists(), reason="DejaVu Sans not installed")
def test_a_tall_page_of_rows_reads_each_row_as_its_own_number(resnet):
    """(fixP D3.) ``--lines`` on a page of 8 typed rows 300 px apart, 2,400 px high: 2 rows of 8 right (``3909``
    read ``0``, "digits that touch"), though each row cut out alone read right; the rows were found, and read, on
    a copy reduced 9 times (digits 9 px high there, 2 px apart). Each row is now read on a crop of its own
    (``preprocessing._row_read``); so is ``--number``'s row."""
    rows = ["11", "244", "3909", "2668", "878", "005", "4521", "67"]
    page = Image.new("L", (800, 2400), 255)
    draw, font = ImageDraw.Draw(page), ImageFont.truetype(SANS, 120)
    for i, text in enumerate(rows):
        draw.text((400, 150 + 300 * i), text, fill=0, font=font, anchor="mm")
    found = resnet.read_lines(page)
    assert [row.label for row in found] == rows and not any(row.wide for row in found)
    assert resnet.read_number(page).label == "2668"  # the heaviest mark's row, noted as one of several
