"""The same pixels read the same whatever holds them; a one-row number read whole; ``max_pixels`` named as typed."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.preprocessing import number_fields, number_lines


@pytest.fixture(scope="module")
def net():
    return cnnlab.predictor(model="resnet")


def mnist_like_field() -> np.ndarray:
    """A '2' in MNIST's format: white on black, 28x28, soft edges (uint8)."""
    img = Image.new("L", (112, 112), 0)
    draw = ImageDraw.Draw(img)
    draw.arc([28, 16, 84, 64], 200, 20, fill=255, width=10)
    draw.line([(80, 50), (30, 96)], fill=255, width=10)
    draw.line([(30, 96), (86, 96)], fill=255, width=10)
    return np.asarray(img.resize((28, 28), Image.BILINEAR))


def test_a_field_in_colour_reads_as_its_gray_whatever_holds_it(net, tmp_path):
    """An RGB 28x28 field from a file or PIL was taken as is, from a numpy array or a tensor preprocessed (an MNIST
    '2': '7' 59.4% against '2' 69.0%); an opaque RGBA or LA file was preprocessed too. Gray colour is L: as is."""
    x = mnist_like_field()
    pil = Image.fromarray(x)
    expected = net(x).probabilities
    containers = {"L PIL": pil, "RGB PIL": pil.convert("RGB"), "RGBA PIL": pil.convert("RGBA"),
                  "LA PIL": pil.convert("LA"), "(28, 28, 3) array": np.asarray(pil.convert("RGB")),
                  "(28, 28, 4) array": np.asarray(pil.convert("RGBA")), "(28, 28, 2) array": np.asarray(pil.convert("LA")),
                  "float (28, 28, 3) array": np.asarray(pil.convert("RGB"), np.float32) / 255}
    for mode in ("L", "RGB", "RGBA", "LA"):
        pil.convert(mode).save(tmp_path / f"{mode}.png")
        containers[f"{mode} file"] = str(tmp_path / f"{mode}.png")
    for what, source in containers.items():
        got = net(source)
        assert np.allclose(got.probabilities, expected, atol=1e-6), what
        if not isinstance(source, torch.Tensor):  # prepare takes one image, not a batch's container
            assert np.array_equal(net.prepare(source), net.prepare(x)), what
    # a colour tensor at the net's size is one image of a batch ((3, 28, 28) alone is refused: or 3 gray images?)
    rgb = torch.from_numpy(np.asarray(pil.convert("RGB")).copy()).permute(2, 0, 1)
    assert np.allclose(net(rgb.unsqueeze(0))[0].probabilities, expected, atol=1e-6)
    # a blank field is no digit whatever holds it (it was classified from a file)
    black = Image.new("RGB", (28, 28), 0)
    for source in (black, np.zeros((28, 28, 3), np.uint8), black.convert("L")):
        with pytest.raises(CnnlabError, match=r"no ink found \(a blank 28x28 field\)"):
            net(source)
    # a transparent field is still read by its opacity, as before
    clear = np.zeros((28, 28, 4), np.uint8)
    clear[..., 3] = x
    assert net(clear).label == net(Image.fromarray(clear, "RGBA")).label


def pen_page(parts: list[tuple[str, int, int, int, int]], size: tuple[int, int]) -> Image.Image:
    """Black pen marks on white: ``("0", x, y, w, h)`` an ellipse with a bold pen, ``("1", x, y, w, h)`` a thin
    stroke down the middle of its box."""
    page = Image.new("L", size, 255)
    draw = ImageDraw.Draw(page)
    for ch, x, y, w, h in parts:
        if ch == "0":
            draw.ellipse([x, y, x + w, y + h], outline=0, width=18)
        else:
            draw.line([(x + w // 2, y), (x + w // 2, y + h)], fill=0, width=8)
    return page


def test_a_one_row_number_is_read_whole_with_a_narrow_digit_far_from_the_next(net):
    """MNIST digits keep their field's margins: a narrow '1' lies farther from a bold '0' than the '0' is high, and
    read_number dropped it (1007 read '007', no note; 71 '7'; at 8 px gaps 2026 read '20' with "2 more marks ...
    away from the number's row") where read_lines read the row right."""
    page = pen_page([("1", 40, 60, 100, 160), ("0", 340, 60, 100, 160), ("0", 500, 60, 100, 160)], (680, 280))
    number = net.read_number(page)
    assert len(number_fields(page).fields) == 3 and number_fields(page).left_out == 0
    assert len(number.label) == 3 and number.left_out == 0
    assert number.label == "".join(n.label for n in net.read_lines(page))
    assert [len(f.fields) for f in number_lines(page)] == [3]


def test_a_thin_digit_on_another_line_is_counted_as_left_out():
    """A light '1' alone on the line below a bold number was not counted (under a quarter of the main digit's ink):
    read_number gave no note, where read_lines reads it as a row."""
    page = pen_page([("0", 40, 40, 100, 160), ("0", 180, 40, 100, 160), ("1", 40, 300, 60, 120)], (340, 470))
    assert len(number_lines(page)) == 2
    found = number_fields(page)
    assert len(found.fields) == 2 and found.left_out == 1


def test_max_pixels_out_of_range_names_the_argument_the_api_caller_typed(tmp_path):
    """The API said "--max-pixels must be ...": a flag its caller never typed."""
    for call in (lambda: cnnlab.Predictor.pretrained("resnet", "mnist", max_pixels=0),
                 lambda: cnnlab.Predictor.from_run(tmp_path / "no-run", max_pixels=10),
                 lambda: cnnlab.Predictor.pretrained("resnet", max_pixels=1.5)):
        with pytest.raises(CnnlabError, match=r"^max_pixels must be a whole number from 784 to "):
            call()
