"""imgF (s47): the image preprocessing heuristics the s47 testers broke (docs/reliability.md, the rows marked imgF.),
each measured on typed digits of the machine's fonts (docs/predict.md)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import cnnlab
from cnnlab import imageio, preprocessing
from cnnlab.cli import main

FONTS = "/usr/share/fonts/truetype/"


@pytest.fixture(scope="module")
def resnet():
    return cnnlab.predictor(model="resnet")


# ----------------------------------------------------------------------------- D5: faint ink and a white spot


def pencil(digit: str, extra: str) -> Image.Image:
    """A faint grey digit (150) on light grey paper (180), 80 px DejaVu Sans on 160x140, with a white disc beside it
    (a glare spot, a sticker) or a white streak (``extra``), as the tester drew them."""
    img = Image.new("L", (160, 140), 180)
    draw = ImageDraw.Draw(img)
    draw.text((20, 15), digit, fill=150, font=ImageFont.truetype(FONTS + "dejavu/DejaVuSans.ttf", 80))
    if extra == "glare":
        draw.ellipse((110, 30, 140, 60), fill=255)
    elif extra == "streak":
        draw.line((130, 25, 132, 110), fill=255, width=3)
    return img


def test_faint_ink_beside_a_white_spot_keeps_its_light_paper(tmp_path, capsys, resnet):
    """Faint pencil on light grey paper with a white glare spot or streak beside it: the white departed from the
    paper twice as far as the ink, and the page was turned over: the streak read '1' at 90%, the glare refused as
    "one dot or blob". The thin marks that depart the other way must outweigh those departing the expected way too
    (turned_over, thin_departures): the grey strokes are the ink, read as without the spot."""
    paths = []
    for digit in "38":
        for extra in ("", "glare", "streak"):
            paths.append(tmp_path / f"pencil{digit}{extra}.png")
            pencil(digit, extra).save(paths[-1])
            gray = imageio.unit_gray(pencil(digit, extra))[0]
            assert preprocessing.light_paper(gray), (digit, extra)
    assert main(["predict", "--model", "resnet", "--top-k", "1", *map(str, paths)]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[1] for line in out.splitlines()] == list("333888") and err == ""
    glare = resnet(pencil("3", "glare"))
    assert glare.label == "3" and np.array_equal(glare.input_image, resnet(pencil("3", "")).input_image)


# ----------------------------------------------------------------------------- D4: small images the other way round


def seven(side: int, paper, ink, mode: str) -> Image.Image:
    """A bold 7 (DejaVu Sans Bold, 40 px) centred on a ``side`` px square page, as the tester drew it."""
    img = Image.new(mode, (side, side), paper)
    f = ImageFont.truetype(FONTS + "dejavu/DejaVuSans-Bold.ttf", 40)
    b = f.getbbox("7")
    ImageDraw.Draw(img).text(((side - b[2] - b[0]) // 2, (side - b[3] - b[1]) // 2), "7", fill=ink, font=f)
    return img


def test_a_small_image_of_light_ink_on_light_paper_is_read(tmp_path, capsys):
    """White type on amber, black type on grey 70, on a page under 64 px: the ring's median decided alone there (a
    small image is evenly lit), the strokes were clipped to 0: "no ink found (the image is blank or has almost no
    contrast)", where the same page at 64 px was read. The ring's median is checked as the other border rules are
    (turned_over); dark type on light paper and light on dark keep their polarity."""
    paths = []
    for side in (60, 40):
        for name, paper, ink, mode in [("black_on_grey70", 70, 0, "L"), ("white_on_amber", (255, 193, 7), "white", "RGB")]:
            paths.append(tmp_path / f"{name}_{side}.png")
            seven(side, paper, ink, mode).save(paths[-1])
    assert main(["predict", "--model", "resnet", "--top-k", "1", *map(str, paths)]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[1] for line in out.splitlines()] == ["7"] * 4 and err == ""
    page = imageio.unit_gray(seven(40, 255, 0, "L"))[0]
    assert preprocessing.light_paper(page) and not preprocessing.light_paper(1.0 - page)


# ----------------------------------------------------------------------------- D6: 1s set close in tiny type


def tiny(text: str, size: int, font: str) -> Image.Image:
    """``text`` set black at ``size`` px with 8 px of white around its ink, as the tester set it."""
    f = ImageFont.truetype(FONTS + font, size)
    b = f.getbbox(text)
    img = Image.new("L", (b[2] - b[0] + 16, b[3] - b[1] + 16), 255)
    ImageDraw.Draw(img).text((8 - b[0], 8 - b[1]), text, fill=0, font=f)
    return img


def test_ones_set_close_in_tiny_type_stay_apart(tmp_path, capsys, resnet):
    """'111' set 10 px high and '11' at 12 px (a pixel between the 1s, their feet touching faintly): the pieces that
    the fainter ink joins into a mark no wider than high were made one digit, --number read '41' and '4', and the
    'digits side by side' note was lost. Two full-height uprights side by side, with no paper closed between them,
    stay apart (set_close); a 0 whose faint arcs close its counter is still joined ('10')."""
    paths = [tmp_path / "serif_111_10px.png", tmp_path / "narrowbold_11_12px.png"]
    tiny("111", 10, "liberation/LiberationSerif-Bold.ttf").save(paths[0])
    tiny("11", 12, "liberation/LiberationSansNarrow-Bold.ttf").save(paths[1])
    assert main(["predict", "--model", "resnet", "--number", *map(str, paths)]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[1] for line in out.splitlines()] == ["111", "11"] and err == ""
    assert [resnet(str(path)).marks for path in paths] == [3, 2]
    assert resnet.read_number(tiny("10", 10, "dejavu/DejaVuSerif-Italic.ttf")).label == "10"
