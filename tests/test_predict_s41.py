"""Predictions of digits whose strokes are far wider than MNIST's get a note (a small digit drawn with a broad pen)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

import cnnlab
from cnnlab.cli import main
from cnnlab.preprocessing import THICK_NOTE, stroke_width, thick_strokes


def canvas(strokes: list[list[tuple[int, int]]], pen: int = 20, side: int = 280) -> Image.Image:
    """Strokes drawn as the drawing page draws them: black, a round pen ``pen`` px wide, on a white square."""
    im = Image.new("L", (side, side), 255)
    draw = ImageDraw.Draw(im)
    for stroke in strokes:
        draw.line(stroke, fill=0, width=pen, joint="curve")
        for x, y in stroke:
            draw.ellipse([x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2], fill=0)
    return im


SMALL_SEVEN = [[(126, 126), (145, 126), (133, 154)]]  # 28 px high: the tester's, read '8' at 80-85%
SMALL_ONE = [[(132, 129), (141, 120), (141, 160)], [(131, 160), (151, 160)]]  # 40 px high, flag and base
LARGE_SEVEN = [[(80, 60), (200, 60), (130, 230)]]


@pytest.fixture(scope="module")
def digits():
    return cnnlab.predictor(model="resnet")


def test_a_small_digit_drawn_with_a_broad_pen_is_noted(digits, tmp_path, capsys):
    for strokes in (SMALL_SEVEN, SMALL_ONE):
        pred = digits(canvas(strokes))
        assert pred.thick > THICK_NOTE
        assert pred.to_dict()["thick_strokes"] == round(pred.thick, 1)
        assert "larger, or with a thinner pen" in pred.thick_note()
    path = tmp_path / "seven.png"
    canvas(SMALL_SEVEN).save(path)
    assert main(["predict", "--model", "resnet", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"note: {path}: its strokes are" in err and "write or draw the digit larger" in err
    assert main(["predict", "--model", "resnet", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["thick_strokes"] > THICK_NOTE


def test_ordinary_digits_get_no_note(digits):
    """Drawn large with the same pen or with a fine one, typed: no note, no key in the JSON."""
    for pred in (digits(canvas(LARGE_SEVEN)), digits(canvas(LARGE_SEVEN, pen=2)), digits(canvas(SMALL_SEVEN, pen=4))):
        assert pred.thick == 0.0 and "thick_strokes" not in pred.to_dict() and pred.thick_note() == ""
    for d in "0123456789":
        typed = Image.new("L", (200, 200), 255)
        ImageDraw.Draw(typed).text((100, 100), d, fill=0, font_size=120, anchor="mm")
        assert digits(typed).thick == 0.0


def test_a_clothes_net_never_notes_thick_strokes():
    """A shirt is a filled shape, not strokes: no note from a Fashion-MNIST net."""
    shirt = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(shirt).polygon([(60, 40), (220, 40), (260, 100), (210, 110), (210, 250), (70, 250), (70, 110),
                                   (20, 100)], fill=230)
    assert cnnlab.predictor(model="resnet", dataset="fashion-mnist")(shirt).thick == 0.0


def test_thick_strokes_is_scaled_to_a_28_px_field():
    field = np.zeros((28, 28), np.float32)
    field[4:24, 10:17] = 1.0  # a bar 7 px wide
    assert thick_strokes(field) == pytest.approx(stroke_width(field)) and thick_strokes(field) > THICK_NOTE
    big = np.kron(field, np.ones((2, 2), np.float32))  # the same bar in a 56-px field
    assert thick_strokes(big) == pytest.approx(thick_strokes(field), rel=0.05)
    assert thick_strokes(np.zeros((28, 28), np.float32)) == 0.0
    thin = np.zeros((28, 28), np.float32)
    thin[4:24, 13:15] = 1.0
    assert thick_strokes(thin) == 0.0


# ----------------------------------------------------------------------------- the paper of a net that reads images as is


def test_an_image_on_the_other_paper_than_the_nets_training_images_gets_a_note(tmp_path, capsys):
    """An MNIST-as-PNG folder's net (light digits on black, mean 0.13) read black digits on white '0' or '1' at 19-33%
    without a word (the tester's report, defect 1). Now such an image gets a note (``Prediction.paper``,
    ``"image_paper"`` in --json, a ``note:`` line) and is still read as it is: nothing is inverted silently."""
    from apps_helpers import draw_digit, tiny_checkpoint

    from cnnlab.data.folder import gray_square
    from cnnlab.predict import Predictor

    dark = tiny_checkpoint(tmp_path / "dark.pt", dataset="folder:/data/mnist_png", mean=0.13)
    on_white, on_black = draw_digit(), draw_digit(ink=255, paper=0)
    net = Predictor.from_run(dark, device="cpu")
    got = net(on_white)
    assert got.paper == "light" and got.to_dict()["image_paper"] == "light"
    assert "were light marks on dark paper (their mean 0.13)" in got.paper_note()
    assert "invert it (light marks on dark)" in got.paper_note()
    assert np.array_equal(got.input_image, gray_square(on_white).astype(np.float32) / 255)  # read as it is
    assert net(on_black).paper == "" and "image_paper" not in net(on_black).to_dict()

    light = Predictor.from_run(tiny_checkpoint(tmp_path / "light.pt", dataset="folder:/data/paper", mean=0.9),
                               device="cpu")
    assert light(on_black).paper == "dark" and "invert it (dark marks on light)" in light(on_black).paper_note()
    assert light(on_white).paper == ""
    gray = Predictor.from_run(tiny_checkpoint(tmp_path / "gray.pt", dataset="folder:/data/gray", mean=0.45),
                              device="cpu")
    assert gray(on_white).paper == gray(on_black).paper == ""  # no clear paper of its own: nothing to tell

    # a digits net: its steps make every image white ink on black; an image it is given as is is told the same way
    digits = Predictor.from_run(tiny_checkpoint(tmp_path / "digits.pt"), device="cpu")
    assert digits(on_white).paper == ""
    assert digits(np.asarray(on_white.resize((28, 28))), preprocess=False).paper == "light"

    png = tmp_path / "seven.png"
    on_white.save(png)
    capsys.readouterr()
    assert main(["predict", str(dark), str(png)]) == 0
    err = capsys.readouterr().err
    assert (f"note: {png}: the image is mostly light, where the net's training images were light marks on dark "
            "paper") in err and "invert it" in err
    assert main(["predict", str(dark), str(png), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["image_paper"] == "light"


def test_a_number_whose_digits_are_drawn_with_a_broad_pen_names_them(digits, tmp_path, capsys):
    """``--number`` (``read_number``) gave no word of a digit's thick strokes, which only single digits got: a
    small 7 drawn with the page's pen and one drawn with a fine pen side by side, the first is named (its index, its
    class, its width), the other not; ``--json`` gives the width in that digit's entry."""
    image = Image.new("L", (200, 120), 255)
    image.paste(canvas(SMALL_SEVEN).crop((100, 80, 180, 200)), (0, 0))
    image.paste(canvas(SMALL_SEVEN, pen=4).crop((100, 80, 180, 200)), (100, 0))
    path = tmp_path / "77.png"
    image.save(path)
    number = digits.read_number(path)
    assert len(number.digits) == 2 and number.digits[0].thick > THICK_NOTE and number.digits[1].thick == 0.0
    assert number.thick_note().startswith(f"digit 1 ('{number.digits[0].label}', {number.digits[0].thick:.1f} px): ")
    entries = number.to_dict()["digits"]
    assert entries[0]["thick_strokes"] == round(number.digits[0].thick, 1) and "thick_strokes" not in entries[1]
    assert main(["predict", "--model", "resnet", "--number", str(path)]) == 0
    assert f"note: {path}: digit 1 (" in capsys.readouterr().err
    fine = digits.read_number(canvas(LARGE_SEVEN, pen=12))
    assert fine.thick_note() == "" and "thick_strokes" not in fine.to_dict()["digits"][0]
