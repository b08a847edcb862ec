"""Reading a number: several digits written in a row in one image (``Predictor.read_number``, ``predict --number``),
and the note of the one-digit path when an image holds several."""

from __future__ import annotations

import glob
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.predict import BadImageError
from cnnlab.preprocessing import digit_and_marks, number_fields, preprocess

#: Pen strokes of a few digits in a unit box (x0, y0, x1, y1); "0" is an ellipse.
STROKES = {
    "1": [(0.5, 0.0, 0.5, 1.0)],
    "7": [(0.0, 0.0, 1.0, 0.0), (1.0, 0.0, 0.35, 1.0)],
    "4": [(0.7, 0.0, 0.0, 0.65), (0.0, 0.65, 1.0, 0.65), (0.7, 0.0, 0.7, 1.0)],
}


def number_page(text: str, height: int = 160, gap: int = 40, dots: tuple[int, ...] = (), lift: dict | None = None,
                commas: tuple[int, ...] = ()) -> Image.Image:
    """``text`` drawn with a pen, digit by digit, black on white; a point after the digits at ``dots``, a comma
    after those at ``commas``; digit i drawn ``lift[i]`` px higher."""
    width = round(0.6 * height)
    page = Image.new("L", (80 + len(text) * (width + gap), height + 120), 255)
    draw = ImageDraw.Draw(page)
    pen = max(2, height // 9)
    for i, ch in enumerate(text):
        x0, y0 = 40 + i * (width + gap), 60 - (lift or {}).get(i, 0)
        if ch == "0":
            draw.ellipse([x0, y0, x0 + width, y0 + height], outline=0, width=pen)
        for a, b, c, d in STROKES.get(ch, []):
            draw.line([(x0 + a * width, y0 + b * height), (x0 + c * width, y0 + d * height)], fill=0, width=pen)
        if i in dots or i in commas:
            r = pen // 2 + 1
            cx, cy = x0 + width + gap // 2, y0 + height - r
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=0)
            if i in commas:  # a tail falling below the baseline, to the left
                draw.line([(cx + r // 2, cy), (cx - r, cy + 4 * r)], fill=0, width=pen)
    return page


@pytest.fixture(scope="module")
def net():
    return cnnlab.predictor(model="resnet")


def test_a_number_is_read_digit_by_digit_each_like_a_digit_alone(net):
    """Found by probing: a photo of a number ("5312") was read as one confident digit ('2', 92%), without a word."""
    page = number_page("7140")
    number = net.read_number(page)
    assert number.label == "7140"
    assert [d.label for d in number.digits] == list("7140")
    assert number.probability == pytest.approx(np.prod([d.top(1)[0][1] for d in number.digits]))
    assert number.input_image.shape == (28, 4 * 28)
    # each digit's field is what the same digit alone on a page gives
    for ch, got in zip("7140", number_fields(page).fields):
        alone = preprocess(number_page(ch))
        assert np.corrcoef(got.ravel(), alone.ravel())[0, 1] > 0.95, ch
    # a batch, a list, a numpy image and bytes read alike
    assert [n.label for n in net.read_number([page, np.asarray(page)])] == ["7140", "7140"]


def test_a_number_keeps_its_order_its_baseline_may_wander_and_reads_its_point_and_minus(net):
    assert net.read_number(number_page("417", lift={1: 30, 2: -25})).label == "417"
    assert net.read_number(number_page("4")).label == "4"  # one digit is a number of one digit
    point = net.read_number(number_page("714", dots=(1,)))
    assert point.label == "71.4" and [d.label for d in point.digits] == list("714") and point.signs == [(2, ".")]
    assert point.to_dict()["number"] == "71.4"
    minus = number_page("  71")  # two blank places, then a dash drawn in the second
    ImageDraw.Draw(minus).line([(40 + 136 + 10, 60 + 80), (40 + 136 + 86, 60 + 80)], fill=0, width=17)
    assert net.read_number(minus).label == "-71"
    assert net.read_number(minus).left_out == 0  # the minus is read, not a mark left out (it was counted as one)
    # a comma hangs below the baseline; its tail, long enough to pass for a digit, was read as a '1' ("14714"), or
    # it was dropped without a word ("714" for "71,4", a decimal comma)
    comma = net.read_number(number_page("714", commas=(1,)))
    assert comma.label == "71,4" and comma.signs == [(2, ",")] and comma.left_out == 0
    assert net.read_number(number_page("7140", commas=(0,), dots=(2,))).label == "7,14.0"
    for text in ("12,5", "1,234", "7.4"):  # typed, where a bold point was too big and a slanted comma reached under
        for font in ("DejaVuSans.ttf", "DejaVuSans-BoldOblique.ttf", "LiberationMono-Regular.ttf"):
            found = glob.glob(f"/usr/share/fonts/truetype/*/{font}")
            if found:
                typed = Image.new("L", (140 + 90 * len(text), 220), 255)
                ImageDraw.Draw(typed).text((70, 40), text, fill=0, font=ImageFont.truetype(found[0], 120))
                assert net.read_number(typed).label == text, (text, font)
    # a mark above the digits (an apostrophe) or a speck far below them is not read as a sign
    marks = number_page("714")
    ImageDraw.Draw(marks).ellipse([170, 50, 185, 65], fill=0)
    assert net.read_number(marks).label == "714"


def test_a_colon_between_digits_is_read_as_one_not_as_a_digit(net):
    # "10:30" was read "10130": the colon's two points, one group by their columns, as tall as a digit's lower half
    for text in ("10:30", "07:45", "23:59"):
        for font in ("LiberationSans-Regular.ttf", "DejaVuSans.ttf", "DejaVuSans-BoldOblique.ttf"):
            found = glob.glob(f"/usr/share/fonts/truetype/*/{font}")
            if found:
                typed = Image.new("L", (140 + 90 * len(text), 220), 255)
                ImageDraw.Draw(typed).text((70, 40), text, fill=0, font=ImageFont.truetype(found[0], 120))
                read = net.read_number(typed)
                assert read.label == text and read.signs == [(2, ":")] and len(read.digits) == 4, (text, font)
    pen = number_page("7140", gap=60)  # two points drawn with the pen between the '1' and the '4'
    draw = ImageDraw.Draw(pen)
    for cy in (60 + 55, 60 + 125):
        draw.ellipse([40 + 2 * (96 + 60) - 30 - 9, cy - 9, 40 + 2 * (96 + 60) - 30 + 9, cy + 9], fill=0)
    assert net.read_number(pen).label == "71:40"
    # a '1' broken in two by a gap in its stroke is no colon: its pieces are long
    broken = number_page("717")
    ImageDraw.Draw(broken).rectangle([40 + 136 + 20, 60 + 70, 40 + 136 + 80, 60 + 90], fill=255)
    assert net.read_number(broken).label.replace(":", "") == net.read_number(broken).label


def test_the_one_digit_path_counts_the_digits_it_sees_and_changes_nothing_else(net):
    page = number_page("7140")
    field, marks = digit_and_marks(page)
    assert marks == 4
    np.testing.assert_array_equal(field, preprocess(page))  # the field is the one it always was
    pred = net(page)
    assert pred.marks == 4 and pred.to_dict()["digits_seen"] == 4
    single = net(number_page("7"))
    assert single.marks == 1 and "digits_seen" not in single.to_dict()
    assert net(np.zeros((28, 28), np.float32) + np.eye(28, dtype=np.float32)).marks == 1  # a field taken as is


def test_cli_reads_numbers_as_a_table_as_json_and_shows_the_strip_it_read(tmp_path, capsys):
    number_page("7140").save(tmp_path / "n.png")
    number_page("7").save(tmp_path / "d.png")
    assert main(["predict", "--model", "resnet", str(tmp_path / "n.png"), str(tmp_path / "d.png")]) == 0
    out, err = capsys.readouterr()
    assert "note: " + str(tmp_path / "n.png") + ": 4 digits side by side, read as one; add --number" in err
    assert str(tmp_path / "d.png") not in err
    assert main(["predict", "--model", "resnet", "--number", str(tmp_path / "n.png"), str(tmp_path / "d.png"),
                 "--show-input", str(tmp_path / "seen")]) == 0
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines() if not line.startswith("wrote")]
    assert [r[1] for r in rows] == ["7140", "7"] and "note" not in err
    assert Image.open(tmp_path / "seen" / "n.input.png").size == (4 * 28, 28)
    assert main(["predict", "--model", "resnet", "--number", "--json", "--top-k", "2", str(tmp_path / "n.png")]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["number"] == "7140" and [d["prediction"] for d in row["digits"]] == list("7140")
    assert all(len(d["top"]) == 2 for d in row["digits"]) and 0 < row["probability"] <= 1
    assert main(["predict", "--model", "resnet", "--number", "--top-k", "2", str(tmp_path / "n.png")]) == 2
    assert "--top-k has no effect in --number's table" in capsys.readouterr().err


def test_reading_a_number_refuses_what_it_cannot_read(net, tmp_path, capsys):
    with pytest.raises(BadImageError, match="no ink found"):
        net.read_number(Image.new("L", (300, 100), 255))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert main(["predict", "--model", "resnet", "--number", str(tmp_path / "junk.png")]) == 1
    assert "skipped" in capsys.readouterr().err
    net.as_folder = True  # a net trained on an image folder classifies whole images
    try:
        with pytest.raises(CnnlabError, match="reads whole images, not the digits of a number"):
            net.read_number(number_page("71"))
    finally:
        net.as_folder = False


def test_a_number_on_ruled_paper_is_read_through_its_lines(net):
    """Lines as dark as the ink crossing every digit joined the whole number (and the page) into one component."""
    page = number_page("7140")
    draw = ImageDraw.Draw(page)
    for y in range(20, page.height, 45):
        draw.line([(0, y), (page.width, y + 12)], fill=30, width=4)  # ruled paper, a little askew (read "740" without)
    assert net.read_number(page).label == "7140"


def test_every_digit_owns_its_middle_column_whatever_its_neighbours_reach():
    from cnnlab.preprocessing import digit_columns

    def digit(x0, x1):
        return [{"box": (0, x0, 50, x1)}]

    # the first digit reaches past the second's middle (a wide neighbour overlapping less than half of it)
    cols = digit_columns([digit(0, 150), digit(90, 130), digit(140, 180)], 200)
    assert cols[0][0] == 0 and cols[-1][1] == 200 and all(a < b for a, b in cols)
    assert all(a <= (x0 + x1) // 2 < b for (a, b), (x0, x1) in zip(cols, [(0, 150), (90, 130), (140, 180)]))
    assert digit_columns([digit(10, 40), digit(60, 90)], 100) == [(0, 51), (51, 100)]  # the middle of the gap


def test_marks_away_from_the_row_are_counted_and_noted_not_read(net, tmp_path, capsys):
    top, below = number_page("714"), number_page("40")
    page = Image.new("L", (top.width, top.height + below.height), 255)
    page.paste(top, (0, 0))
    page.paste(below, (0, top.height))  # a second line of digits
    number = net.read_number(page)
    assert len(number.label) in (2, 3) and number.left_out >= 2 and number.to_dict()["left_out"] == number.left_out
    assert net.read_number(top).left_out == 0 and "left_out" not in net.read_number(top).to_dict()
    page.save(tmp_path / "two-lines.png")
    assert main(["predict", "--model", "resnet", "--number", str(tmp_path / "two-lines.png")]) == 0
    err = capsys.readouterr().err
    assert "more marks as large as a digit away from the number's row, not read; add --lines to read every row" in err


def lines_page(*texts: str) -> Image.Image:
    """Numbers one under the other (:func:`number_page` each), as a list is written."""
    pages = [number_page(t) for t in texts]
    out = Image.new("L", (max(p.width for p in pages), sum(p.height for p in pages)), 255)
    for i, p in enumerate(pages):
        out.paste(p, (0, sum(q.height for q in pages[:i])))
    return out


def test_every_line_of_a_page_is_read_top_to_bottom(net, tmp_path, capsys):
    """A page of several lines read one line (the heaviest digit's) and counted the rest as left out: the user had
    to crop the page into lines. read_lines / --lines read each, top to bottom."""
    page = lines_page("71", "4", "1007")
    rows = net.read_lines(page)
    assert [r.label for r in rows] == ["71", "4", "1007"] and [r.line for r in rows] == [1, 2, 3]
    assert all(r.left_out == 0 for r in rows) and rows[2].to_dict()["line"] == 3
    assert net.read_number(page).left_out > 0 and "line" not in net.read_number(page).to_dict()
    one = number_page("7140")  # a page of one line: that line, as read_number reads it
    assert [r.label for r in net.read_lines(one)] == [net.read_number(one).label] == ["7140"]
    assert [[r.label for r in rows] for rows in net.read_lines([page, one])] == [["71", "4", "1007"], ["7140"]]
    page.save(tmp_path / "list.png")
    assert main(["predict", "--model", "resnet", "--lines", str(tmp_path / "list.png")]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[1:4] for line in out.splitlines()] == [["line", "1", "71"], ["line", "2", "4"],
                                                                ["line", "3", "1007"]]
    assert "not read" not in err
    assert main(["predict", "--model", "resnet", "--lines", "--json", str(tmp_path / "list.png")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["line"], r["number"]) for r in rows] == [(1, "71"), (2, "4"), (3, "1007")]
    assert main(["predict", "--model", "resnet", "--lines", str(tmp_path / "list.png"), "--show-input",
                 str(tmp_path / "seen")]) == 0
    assert "what the net saw of " + str(tmp_path / "list.png") + " line 3" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "seen").glob("*.input.png")) == [
        "list-2.input.png", "list-3.input.png", "list.input.png"]
    assert main(["predict", "--model", "resnet", "--lines", "--top-k", "2", str(tmp_path / "list.png")]) == 2
    assert "--top-k" in capsys.readouterr().err


def test_odd_pages_are_read_or_refused_in_one_line_never_an_error(net):
    """Pages built to stress the number reader (noise, stripes, grids, random strokes and dots, slanted lines through
    digits; found while building it: a half of a wide digit without ink, a digit left no columns, a 3-row mask):
    each is read, or refused as a BadImageError."""
    rng = np.random.default_rng(0)
    pages = [Image.fromarray((rng.random((300, 500)) * 255).astype(np.uint8)),
             Image.fromarray(np.tile(np.where(np.arange(600) % 12 < 4, 0, 255).astype(np.uint8), (90, 1))),
             Image.fromarray(np.tile(np.where(np.arange(90) % 9 < 3, 0, 255).astype(np.uint8)[:, None], (1, 700))),
             Image.new("L", (400, 3), 0), Image.new("L", (3, 400), 255)]
    for i in range(30):
        page = number_page("".join(rng.choice(list("714 0"), size=int(rng.integers(1, 6)))), dots=(1,))
        draw = ImageDraw.Draw(page)
        for _ in range(int(rng.integers(0, 8))):  # lines across, a little askew, and strokes anywhere
            y = int(rng.integers(0, page.height))
            draw.line([(0, y), (page.width, y + int(rng.integers(-15, 16)))], fill=int(rng.integers(0, 200)),
                      width=int(rng.integers(1, 7)))
        for _ in range(int(rng.integers(0, 6))):
            x, y = int(rng.integers(0, page.width)), int(rng.integers(0, page.height))
            draw.line([(x, y), (x + int(rng.integers(-60, 61)), y + int(rng.integers(-60, 61)))], fill=0,
                      width=int(rng.integers(2, 20)))
        pages.append(page)
    read = 0
    for page in pages:
        try:
            number = net.read_number(page)
        except BadImageError:
            continue
        read += 1
        assert all(ch.isdigit() or ch in ".,:-" for ch in number.label) and 0 <= number.probability <= 1
        assert net(page).marks >= 0
    assert read >= 25


@pytest.mark.real_data
def test_a_digit_reaching_into_its_neighbours_columns_is_read_not_an_error(net, monkeypatch):
    """Found on a slanted ruled page (its lines left in): a piece of line made a digit wide and reach past its
    thinnest column into its neighbour's columns; the half it was cut into held no ink, and the whole number failed
    as 'no ink found'."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cnnlab.preprocessing as pp
    from benchmarks.number_digits import handwritten_row, page as number_row_page
    from cnnlab.data import load_dataset

    images = load_dataset("mnist").test_images[:, 0].numpy()
    monkeypatch.setattr(pp, "ruled_lines", lambda mask: np.zeros_like(mask), raising=False)  # (older: none)
    monkeypatch.setattr(pp, "paper_lines", lambda mask: (np.zeros_like(mask),) * 2, raising=False)
    rng = np.random.default_rng(5)
    for t in range(63):  # the 63rd page of this sequence is the one
        idx = rng.choice(10000, int(rng.integers(2, 6)), replace=False)
        img = number_row_page(handwritten_row([images[j] for j in idx], 4, rng), False, rng)
    draw = ImageDraw.Draw(img)
    for y in range(20, img.height, 120):
        draw.line([(0, y), (img.width, y + int(img.width * 0.03))], fill=40, width=4)
    assert 1 <= len(net.read_number(img).digits) <= 6
