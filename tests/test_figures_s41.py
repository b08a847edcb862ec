"""Class names in figures and tables (tester report ownO, faults 3, 5, 6 and 7): names in scripts Pillow's built-in
font lacks, names a font has no glyph for (CJK, emoji), a 200-character name, many classes; tables padded by the
columns a terminal gives a name, not by its characters."""

from __future__ import annotations

import unicodedata
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

#: The tester's awkward class names (data/hard): Latin-1, Greek, CJK, an emoji, a 200-character name.
HARD = ["$HOME", "-x", "a", "A", "with space", "x" * 200, "é", "ß", "Ελληνικά", "中文", "🍎"]


def _columns(text: str) -> int:
    """Terminal columns, counted here on their own: a combining mark none, a wide character two."""
    return sum(0 if unicodedata.category(ch) in ("Mn", "Me", "Cf") else
               2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _ends(line: str, word: str) -> int:
    """The terminal column where the last ``word`` in ``line`` ends."""
    return _columns(line[:line.rindex(word) + len(word)])


# ----------------------------------------------------------------------------- 3. Pillow figures: font and names


def test_the_figures_font_is_dejavu_sans_with_its_glyphs():
    """drawing.font() was Pillow's built-in font: é, ß, Greek and CJK all one box."""
    from cnnlab.drawing import font

    f = font(12)
    assert str(getattr(f, "path", "")).endswith("DejaVuSans.ttf")
    masks = [bytes(f.getmask(ch)) for ch in "éßΕλ"]
    assert len(set(masks)) == 4


def _row_labels(classes: list[str]) -> list[np.ndarray]:
    """The pixels left of each row of confusion.png: the rows' class names as drawn."""
    from cnnlab.drawing import GAP, header, header_height
    from cnnlab.plots import _confusion_geometry, confusion_image

    n = len(classes)
    image = confusion_image(np.eye(n, dtype=int).tolist(), classes)
    g = _confusion_geometry(classes, ImageDraw.Draw(Image.new("RGB", (1, 1))))
    top = header_height(header("", None, g["width"])) + GAP // 2
    cell = g["cell"]
    return [np.asarray(image.crop((GAP + 20, top + k * cell + 1, g["left"] - 2, top + (k + 1) * cell - 1)))
            for k in range(n)]


def test_every_class_name_on_the_confusion_matrix_is_drawn_differently():
    """é, ß and 🍎 were each the same single box; 中 and 文 the same two: different classes, the same label."""
    rows = _row_labels(HARD + ["中", "文", "中X"])
    for i, a in enumerate(rows):
        assert a.min() < 128, HARD[i] if i < len(HARD) else i  # something is drawn
        for j in range(i):
            assert not np.array_equal(a, rows[j]), (i, j)


def test_without_dejavu_pillows_font_still_tells_the_names_apart(monkeypatch):
    """matplotlib's font file missing: Pillow's built-in font, and every character past ASCII by its code point."""
    import cnnlab.drawing as drawing

    monkeypatch.setattr(drawing, "font_file", lambda: None)
    drawing.font.cache_clear()
    try:
        assert drawing.drawing_font_file() is None and drawing.one_line("é中…") == "U+00E9U+4E2D…"
        rows = _row_labels(["e", "é", "ß", "中", "文"])
        assert all(not np.array_equal(rows[i], rows[j]) for i in range(5) for j in range(i))
    finally:
        drawing.font.cache_clear()


def test_a_character_the_font_lacks_is_shown_by_its_code_point():
    from cnnlab.drawing import one_line

    assert one_line("中文") == "U+4E2DU+6587" and one_line("🍎") == "U+1F34E"
    assert one_line("é ß Ελληνικά") == "é ß Ελληνικά"
    assert one_line("a\nb") == "a b"  # control characters stay spaces


def test_a_long_class_name_does_not_squeeze_the_confusion_matrix():
    """A 200-character name was drawn whole on both axes: the matrix took a quarter of the figure. Two such names
    that differ only at their end stay different (cut in the middle)."""
    from cnnlab.plots import _confusion_geometry, confusion_image

    classes = ["a", "b", "x" * 199 + "1", "x" * 199 + "2"]
    g = _confusion_geometry(classes, ImageDraw.Draw(Image.new("RGB", (1, 1))))
    image = confusion_image(np.eye(4, dtype=int).tolist(), classes)
    assert g["left"] < 250 and image.width < 800 and image.height < 800, (g, image.size)
    rows = _row_labels(classes)
    assert not np.array_equal(rows[2], rows[3])


def test_mistakes_keep_the_confidence_and_the_names_apart():
    """A long predicted name pushed its confidence out of the cell; names cut at their end looked alike."""
    import torch

    from cnnlab.drawing import font
    from cnnlab.plots import mistake_labels, mistakes_mosaic

    draw, f = ImageDraw.Draw(Image.new("RGB", (1, 1))), font(12)
    one, two = (f"pred {label} (97%)" for label in mistake_labels(draw, ["x" * 199 + end for end in "12"], f, 126))
    assert one.endswith("1 (97%)") and two.endswith("2 (97%)") and draw.textlength(one, font=f) <= 126
    mistake = [{"index": 0, "true": 0, "pred": 1, "confidence": 0.5}]
    digits = mistakes_mosaic([torch.zeros(28, 28, dtype=torch.uint8)], mistake, [str(d) for d in range(10)])
    wide = mistakes_mosaic([torch.zeros(28, 28, dtype=torch.uint8)], mistake, ["中文", "🍎 " * 20])
    assert digits.width == 420 and 420 <= wide.width <= 420 + 64  # digits' cells as before; others a little wider


def test_digits_are_labelled_level_as_before():
    from cnnlab.plots import _confusion_geometry

    g = _confusion_geometry([str(d) for d in range(10)], ImageDraw.Draw(Image.new("RGB", (1, 1))))
    assert g["names"] == [str(d) for d in range(10)] and not g["slanted"] and g["cell"] == 56


# ----------------------------------------------------------------------------- (atkK 6) every class told apart

#: The tester's fid2 names (atkK, defect 6): two of white space only, two long names that differ only in their middle.
LONG = "report_2024_" + "q" * 30 + "_{}_" + "z" * 30 + "_final"
ALIKE = [" ", "  ", LONG.format("ALPHA"), LONG.format("BETA_")]


def test_class_names_that_shorten_alike_or_are_blank_get_distinct_labels():
    """The two long names were both 'report_2024_qq…_final' on confusion.png (cut in the middle, where they differ),
    ' ' and '  ' both an empty label; the same on branches.png and mistakes.png."""
    from cnnlab.analysis.plots import class_axis
    from cnnlab.drawing import class_labels, font
    from cnnlab.plots import _confusion_geometry, mistake_labels

    draw, f = ImageDraw.Draw(Image.new("RGB", (1, 1))), font(12)
    for labels in (_confusion_geometry(ALIKE, draw)["names"], mistake_labels(draw, ALIKE, f, 112 + 64),
                   class_axis(ALIKE)["names"]):
        assert labels[:2] == ["␣", "␣␣"], labels
        assert "ALPHA" in labels[2] and "BETA" in labels[3] and labels[2].startswith("repo"), labels
    # what no cut can tell apart (one name decomposed) gets the class index; blank and invisible names are shown
    assert class_labels(["e\u0301", "\xe9", "x"], lambda t: len(t) <= 9) == ["e\u0301 #0", "\xe9 #1", "x"]
    assert class_labels(["", "\u200b", "x", "x "], lambda t: len(t) <= 9) == ['""', "U+200B", "x", "x␣"]


def test_blank_and_alike_names_are_drawn_differently_on_the_confusion_matrix():
    rows = _row_labels(ALIKE)
    for i, a in enumerate(rows):
        assert a.min() < 128, i  # something is drawn (' ' drew nothing)
        assert all(not np.array_equal(a, rows[j]) for j in range(i)), i


def _ink_gaps(image: Image.Image, top: int, bottom: int) -> list[tuple[int, int]]:
    """The runs of columns with no ink between ``top`` and ``bottom`` (px), as (first, past the last)."""
    ink = (np.asarray(image.convert("L"))[top:bottom] < 200).any(axis=0)
    gaps, start = [], None
    for x, inked in enumerate(list(ink) + [True]):
        if not inked and start is None:
            start = x
        elif inked and start is not None:
            gaps, start = gaps + [(start, x)], None
    return gaps


def test_neighbouring_mistake_titles_of_a_long_name_do_not_run_together():
    """A long class name's 'true …' titles filled the whole cell, up to the next one's:
    'true xxxx…yyyytrue xxxx…yyyy'."""
    import torch

    from cnnlab.drawing import GAP, LINE_H, header, header_height
    from cnnlab.plots import mistakes_mosaic

    classes = ["a", "x" * 40 + "y" * 40]
    mistakes = [{"index": k, "true": 1, "pred": 0, "confidence": 0.5} for k in range(3)]
    image = mistakes_mosaic([torch.zeros(28, 28, dtype=torch.uint8)] * 3, mistakes, classes, cols=3)
    top = header_height(header("", None, image.width))
    inner = [g for g in _ink_gaps(image, top, top + LINE_H) if g[0] > 0 and g[1] < image.width]
    apart = [(a, b) for a, b in inner if b - a >= GAP - 4]  # wider than any space between letters or words
    assert len(apart) == 2, inner  # three titles, a clear gap between each two


def test_digits_labels_are_the_digits_on_every_figure():
    from cnnlab.analysis.plots import class_axis
    from cnnlab.drawing import font
    from cnnlab.plots import mistake_labels

    digits = [str(d) for d in range(10)]
    assert mistake_labels(ImageDraw.Draw(Image.new("RGB", (1, 1))), digits, font(12), 112) == digits
    assert class_axis(digits)["names"] == digits


# ----------------------------------------------------------------------------- 5. analyze branches' table


def _branches_result(classes: list[str]) -> dict:
    score = {"accuracy": 50.0, "loss": 0.7}
    branch = {"channels": 24, "zero": score, "mean": score, "next_layer_share": 0.25, "uniform_share": 0.27,
              "energy": 0.1}
    modules = [{"name": m, "next_layer": "fc", "output_shape": [88, 7, 7],
                "branches": [{**branch, "branch": b, "energy_per_class": [0.1 * (k % 3) + 0.01 if k % 5 else None
                                                                           for k in range(len(classes))]}
                             for b in ("pool", "1x1", "5x5", "3x3")]} for m in ("incept1", "incept2")]
    return {"model": "inception", "checkpoint": "last.pt", "dataset": "folder:x", "classes": classes,
            "baseline": score, "test_images": 100, "mean_from_train_images": 200, "modules": modules}


def _cells(line: str) -> list[tuple[str, int]]:
    """The words of ``line`` and the terminal column where each ends."""
    out, start = [], 0
    for word in line.split():
        at = line.index(word, start)
        start = at + len(word)
        out.append((word, _columns(line[:start])))
    return out


def test_the_branches_table_writes_class_names_whole_in_aligned_columns():
    """class_cat, class_dog, class_bird were each 'class_' (cut to 6 characters)."""
    from cnnlab.analysis.branches import format_branches

    classes = ["class_cat", "class_dog", "class_bird", "中文", "e\u0301", "🍎", "a"]
    lines = format_branches(_branches_result(classes)).splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("module") and "zeroed" not in line)
    table = [_cells(line) for line in lines[head:head + 9]]
    assert [w for w, _ in table[0][2:]] == classes
    ends = [end for _, end in table[0][2:]]  # each class's values end where its name ends (right-aligned)
    assert all([end for _, end in row[2:]] == ends for row in table[1:]), lines[head:head + 9]


# ----------------------------------------------------------------------------- 6. analyze branches' figure


def _branches_figure(classes: list[str], monkeypatch):
    """plot_branches' figure, drawn (glyph warnings are given at drawing), and its heatmap axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    import cnnlab.analysis.plots as aplots

    figures = []
    monkeypatch.setattr(aplots, "save_figure", lambda fig, path: figures.append(fig) or path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aplots.plot_branches(_branches_result(classes), "unused.png")
        FigureCanvasAgg(figures[0]).draw()
    heat = [ax for ax in figures[0].axes if ax.images]
    return heat, [str(w.message) for w in caught]


def _overlaps(ax) -> list[tuple[str, str]]:
    renderer = ax.figure.canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in labels]
    return [(labels[i].get_text(), labels[j].get_text()) for i in range(len(boxes)) for j in range(i)
            if boxes[i].overlaps(boxes[j])]


def test_branches_figure_of_awkward_names_warns_of_no_glyph_and_its_labels_do_not_overlap(monkeypatch):
    """17 classes of the tester's names: 'Glyph 20013 missing from font(s) DejaVu Sans' on stderr, boxes, and the
    x labels overlapping."""
    classes = HARD + ["100%", "semi;colon", "quo'te", 'dq"uote', "{}", "%s%d{0}"]
    heat, warned = _branches_figure(classes, monkeypatch)
    assert not [w for w in warned if "Glyph" in w], warned
    for ax in heat:
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert len(set(labels)) == len(classes) and "U+4E2DU+6587" in labels and "$HOME" in labels
        assert all(len(label) <= 16 for label in labels)  # the 200-character name cut
        assert _overlaps(ax) == []
        assert not ax.texts  # 17 cells a row: no room for their values


def test_branches_figure_of_47_classes_has_no_smear_of_values(monkeypatch):
    classes = [str(d) for d in range(10)] + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + list("abdefghnqrt")
    heat, warned = _branches_figure(classes, monkeypatch)
    assert len(classes) == 47 and not warned
    for ax in heat:
        assert not ax.texts and _overlaps(ax) == []
        assert [t.get_text() for t in ax.get_xticklabels()] == classes


def test_branches_figure_of_digits_is_as_before(monkeypatch):
    """MNIST's ten digits: every cell's value written, the labels level, the same figure size."""
    heat, warned = _branches_figure([str(d) for d in range(10)], monkeypatch)
    assert not warned and len(heat) == 2
    for ax in heat:
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(d) for d in range(10)]
        assert all(t.get_rotation() == 0 for t in ax.get_xticklabels())
        assert len(ax.texts) == 4 * 10
    assert tuple(heat[0].figure.get_size_inches()) == (16, 8)


# ----------------------------------------------------------------------------- 7. evaluate's and predict's tables


def test_evaluate_table_pads_class_names_by_display_width():
    """The 中文 row's numbers were 2 columns right, 🍎's 1, a decomposed é's 1 left."""
    from cnnlab.report import format_table

    classes = ["plain", "中文", "🍎", "e\u0301", "Ελληνικά", "中" * 30]
    rows = [{"class": c, "support": 3, "precision": 50.0, "recall": 100.0, "f1": 66.67} for c in classes]
    lines = format_table(rows).splitlines()
    assert {_ends(line, "support") for line in lines[:1]} == {_ends(line, "3") for line in lines[1:-1]}
    assert len({_ends(line, "3") for line in lines[1:]}) == 2  # the 60-column name pushes its own row only


def test_predict_table_pads_file_names_by_display_width(capsys):
    from cnnlab.cli.predict import print_table

    def pred(name):
        return SimpleNamespace(name=name, line=0, top=lambda k: [("7", 0.9), ("1", 0.1)][:k])

    print_table([pred(n) for n in ("中文.png", "🍎.png", "e\u0301.png", "plain.png")], 2, [])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and len({_ends(line, "7") for line in lines}) == 1, lines


@pytest.mark.parametrize("name", ["中文", "e\u0301", "a\u0e35"])
def test_the_shared_width_helper(name):
    """One helper for every table (runs, evaluate, predict, analyze branches)."""
    from cnnlab.text import display_width, pad

    assert display_width(name) == _columns(name)
    assert _columns(pad(name, 8)) == 8 and _columns(pad(name, 8, right=True)) == 8
    assert pad(name, 8, right=True).endswith(name)
