"""A photo of a blank page is blank: its grain (sensor noise, JPEG blocks) is no digit (preprocessing.paper_grain)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import cnnlab.preprocessing as pp
from apps_helpers import draw_digit
from cnnlab.imageio import BadImageError
from cnnlab.preprocessing import number_fields, number_lines, preprocess


def photographed(page: np.ndarray, seed: int, noise: float = 0.03, quality: int = 30) -> Image.Image:
    """``page`` (H, W, 0..1, light paper) under light falling off to one side, with sensor noise, saved as JPEG."""
    rng = np.random.default_rng(seed)
    light = np.linspace(0.6, 0.9, page.shape[1])[None, :, None]
    pixels = page[..., None] * light + rng.normal(0, noise, page.shape + (3,))
    buf = io.BytesIO()
    Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_photos_of_a_blank_page_are_refused_as_blank_by_every_reader():
    # 30 such pages: the tester's kind (a gradient, noise 0.03, JPEG q=30); before, 7 of them were read as a digit
    # ('8 75.8%', '4 digits side by side'), depending on the noise's draw
    blank = np.ones((480, 640))
    for seed in range(30):
        img = photographed(blank, seed)
        for read in (preprocess, number_fields, number_lines):
            with pytest.raises(BadImageError, match="page.jpg: no ink found"):
                read(img, name="page.jpg")
    with pytest.raises(BadImageError, match=r"page.jpg: no ink found \(its strongest marks stand [\d.]+x out of the "
                                            r"paper's grain, a digit's at least 6x: the page is blank"):
        preprocess(photographed(blank, 4), name="page.jpg")


def test_a_page_of_noise_is_refused_and_a_clean_blank_page_as_before():
    for seed in range(10):
        noise = np.clip(0.5 + np.random.default_rng(seed).normal(0, 0.04, (300, 300)), 0, 1)
        with pytest.raises(BadImageError, match="paper's grain"):
            preprocess(Image.fromarray(np.round(noise * 255).astype(np.uint8)))
    with pytest.raises(BadImageError, match=r"no ink found \(the image is blank"):
        preprocess(Image.new("L", (300, 300), 255))


@pytest.mark.parametrize("noise, quality", [(0.03, 30), (0.05, 75), (0.08, 90)])
def test_a_digit_on_the_same_grainy_page_is_read_as_it_was(monkeypatch, noise, quality):
    # the check only refuses: a digit's field is the one it was before the check, to the last bit
    digit = np.asarray(draw_digit(canvas=(640, 480), box=(250, 140, 390, 340), ink=40, paper=235), np.float64) / 255
    img = photographed(digit, 1, noise, quality)
    field = preprocess(img)
    monkeypatch.setattr(pp, "GRAIN_OVER", 0.0)
    np.testing.assert_array_equal(field, preprocess(img))
    assert field.max() > 0.9


def test_where_the_papers_level_is_off_no_grain_is_measured():
    # more than 60% of the copy below the paper's level: no grain, the page as before (dark grid lines, a hard shadow)
    signed = np.full((200, 200), -0.2, np.float32)
    signed[:50] = 0.0
    assert pp.paper_grain(signed) == 0.0
    signed[:100] = 0.0
    assert pp.paper_grain(signed) == pytest.approx(0.2, rel=1e-4)


def test_bold_strokes_taken_for_dark_paper_are_no_grain():
    # found by a tester: a clean canvas of bold black strokes (40% of it ink) was refused "blank, the paper's grain"
    # at 1.6x: taken for dark paper, its strokes lay far below the paper's level, and counted as grain
    from PIL import ImageDraw

    fan = Image.new("L", (280, 280), 255)
    draw = ImageDraw.Draw(fan)
    for y in range(40, 241, 25):
        draw.line([(60, y), (220, 200)], fill=0, width=20)
    try:
        preprocess(fan)
    except BadImageError as err:
        assert "grain" not in str(err), err
    signed = np.zeros((100, 100), np.float32)
    signed[:40] = -0.9  # the page's own dark marks below its level, no grain
    signed[40:45] = -0.01
    assert pp.paper_grain(signed) == 0.0
