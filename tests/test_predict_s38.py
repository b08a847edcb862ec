"""Defects a tester found in the predictor (round s38): a PIL image's EXIF orientation, the pixel limit's line for
images over Pillow's own limit, the "digits side by side" note on the parts of one object, and a thin type's decimal
point. Each test failed before its fix."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from apps_helpers import draw_digit, tiny_checkpoint
from cnnlab.imageio import BadImageError, open_image
from cnnlab.predict import Predictor
from cnnlab.preprocessing import digit_and_marks, number_fields

EXTRA_LIGHT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-ExtraLight.ttf"


@pytest.fixture
def predictor(tmp_path):
    return Predictor.from_run(tiny_checkpoint(tmp_path / "run" / "last.pt").parent, device="cpu")


def _sideways(fmt: str) -> bytes:
    """An upright digit stored turned, with EXIF Orientation 8 (as a phone held sideways writes it)."""
    upright_img = draw_digit((120, 90), (30, 15, 90, 75)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 8
    buf = io.BytesIO()
    upright_img.transpose(Image.Transpose.ROTATE_270).save(buf, fmt, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_pil_image_with_exif_orientation_is_turned_as_its_file_is(predictor, fmt):
    """``p(Image.open('phone2.jpg'))`` read the photo sideways ('0' 68 %) where the path read it upright ('2' 90 %)."""
    data = _sideways(fmt)
    opened = Image.open(io.BytesIO(data))
    assert opened.getexif().get(0x0112) == 8
    by_file, by_pil = predictor(data), predictor(opened)
    np.testing.assert_array_equal(by_pil.input_image, by_file.input_image)
    np.testing.assert_array_equal(by_pil.probabilities, by_file.probabilities)
    assert opened.getexif().get(0x0112) == 8 and opened.size == (90, 120)  # the caller's image is left as it was
    number_pil = predictor.read_number(Image.open(io.BytesIO(data)))
    number_file = predictor.read_number(data)
    assert [d.probabilities for d in number_pil.digits] == [d.probabilities for d in number_file.digits]
    # an image turned already (exif_transpose drops the tag) is not turned again
    turned = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(predictor(turned).input_image, by_file.input_image)


def _flat_png(w: int, h: int) -> bytes:
    """A flat gray PNG of w x h, written by hand (Pillow would hold every pixel): a few hundred KB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    row = b"\0" + b"\x80" * w
    comp = zlib.compressobj(9)
    raw = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    head = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [9000, 10000, 20000])
def test_an_image_over_pillows_limit_gets_the_pixel_limit_line(side):
    """From ~89.5 MP (Pillow's limit) up, the refusal was Pillow's "decompression bomb DOS attack" wording instead of
    the --max-pixels line that 9000x9000 got."""
    with pytest.raises(BadImageError) as err:
        open_image(_flat_png(side, side), "flat.png", max_pixels=4096 * 4096)
    assert str(err.value) == (f"flat.png: {side}x{side} is {side * side:,} pixels, over the limit of 16,777,216 "
                              "(--max-pixels); give a smaller image")


def test_a_webp_over_pillows_limit_gets_the_pixel_limit_line():
    """Pillow's WebP plugin checks the pixel count inside its own open: a 106-byte VP8X file declaring 16384x16384
    still got the "decompression bomb DOS attack" wording after the line above was given to every other format."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), 200).save(buf, "WEBP", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00\x00\x00")
    data = bytearray(buf.getvalue())
    at = data.index(b"VP8X")
    data[at + 12:at + 15], data[at + 15:at + 18] = (16383).to_bytes(3, "little"), (16383).to_bytes(3, "little")
    with pytest.raises(BadImageError) as err:
        open_image(bytes(data), "w.webp", max_pixels=4096 * 4096)
    assert str(err.value) == ("w.webp: 16384x16384 is 268,435,456 pixels, over the limit of 16,777,216 (--max-pixels); "
                              "give a smaller image")


def test_the_pieces_of_one_object_below_it_are_not_digits_side_by_side():
    """A digit net on a dress (the tester's clothes photos): its hem's two pieces, below its body, were "3 digits side
    by side, read as one; add --number to read each", a fix that cannot help an image that is not digits."""
    dress = Image.new("RGB", (400, 400), (255, 255, 255))
    c, s = 200, 1.0
    ImageDraw.Draw(dress).polygon([(c - 30 * s, 60), (c + 30 * s, 60), (c + 40 * s, 150), (c + 100 * s, 340),
                                   (c - 100 * s, 340), (c - 40 * s, 150)], fill=(90, 90, 90))
    assert digit_and_marks(dress)[1] == 1
    # digits side by side are still counted, of different heights too (a '7' beside a low '4' of a handwriting)
    page = Image.new("L", (600, 260), 255)
    for x0, y0, y1 in ((60, 60, 200), (200, 60, 200), (340, 100, 200)):
        ImageDraw.Draw(page).rectangle([x0, y0, x0 + 70, y1], outline=0, width=12)
    assert digit_and_marks(page)[1] == 3


def _thin_number(point: int) -> Image.Image:
    """'00.00' as four thin outlined boxes (2 px strokes, 40x70) and a solid point of ``point`` px: the point holds
    under 2 % of a digit's ink, as a thin type's does."""
    page = Image.new("L", (300, 150), 255)
    draw = ImageDraw.Draw(page)
    for x0 in (30, 85, 160, 215):
        draw.rectangle([x0, 40, x0 + 40, 110], outline=0, width=2)
    draw.rectangle([139, 111 - point, 138 + point, 110], fill=0)
    return page


def test_a_thin_types_point_is_read():
    """DejaVuSans-ExtraLight's ``721.88`` was read ``72188`` at every size (its point held 2-3 % of a digit's ink,
    under the 3 % a mark needs to join a digit): a value 100x off without a word."""
    found = number_fields(_thin_number(3))
    assert len(found.fields) == 4 and found.signs == [(2, ".")]
    # a speck of a pixel, lighter than the square of the strokes' width, is still no point
    assert number_fields(_thin_number(1)).signs == []


@pytest.mark.skipif(not Path(EXTRA_LIGHT).exists(), reason="DejaVuSans-ExtraLight not installed")
@pytest.mark.parametrize("size", [24, 80])
@pytest.mark.parametrize("text", ["721.88", "10.05", "-2.5"])
def test_dejavu_extralight_numbers_keep_their_signs(text, size):
    font = ImageFont.truetype(EXTRA_LIGHT, size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    page = Image.new("L", (right - left + 80, bottom - top + 80), 255)
    ImageDraw.Draw(page).text((40 - left, 40 - top), text, font=font, fill=0)
    found = number_fields(page)
    digits = text.replace("-", "").replace(".", "")
    assert len(found.fields) == len(digits)
    expected = [(0, "-")] * text.startswith("-") + [(text.replace("-", "").index("."), ".")]
    assert found.signs == expected


def test_a_pen_speck_on_a_handwritten_row_is_no_sign():
    """The first form of the thin-point rule took any light compact mark: a speck left of a handwritten "193" read
    "-193" (48 of 60 such pages right fell to 27), specks in gaps became points and colons. Among thick strokes a
    mark under 3 % of a digit's ink is no point, and a light mark is never a minus."""
    page = Image.new("L", (520, 200), 255)
    draw = ImageDraw.Draw(page)
    for x0 in (120, 240, 360):  # thick strokes (12 px): handwriting's, not a thin type's
        draw.rectangle([x0, 40, x0 + 70, 170], outline=0, width=12)
    draw.ellipse([56, 100, 70, 108], fill=0)  # a speck 15x9 px at mid-height before the first digit
    draw.ellipse([210, 158, 220, 168], fill=0)  # and a small one low in a gap
    found = number_fields(page)
    assert len(found.fields) == 3 and found.signs == []


def test_a_slanted_row_of_digits_is_counted_side_by_side():
    """The note's count took only the digits on the tallest one's line: a row slanted by 20-25 degrees was "2 digits"
    or no note at all, while --number read all four."""
    page = Image.new("L", (700, 420), 255)
    draw = ImageDraw.Draw(page)
    for i in range(4):  # each digit 45 px higher than the one before (25 degrees over 100 px)
        x0, y0 = 60 + 140 * i, 240 - 45 * i
        draw.rectangle([x0, y0, x0 + 70, y0 + 130], outline=0, width=12)
    assert digit_and_marks(page)[1] == 4
