"""A mark as wide as two digits or more, read as one digit with ``--number``, gets a note: typed digits set tight
touch, and ``44`` was read ``4``, ``900`` read ``0`` without a word (preprocessing.WIDE_NOTE)."""

from __future__ import annotations

import json

import numpy as np

import cnnlab
from cnnlab.cli import main
from cnnlab.preprocessing import WIDE_NOTE, NumberFields, number_fields
from tests.test_numbers import number_page


def test_digits_that_touch_in_one_wide_mark_are_noted(tmp_path, capsys):
    page = number_page("0000", height=100, gap=-12)  # four rings, each overlapping the next: one mark
    found = number_fields(page)
    assert len(found.fields) == 1 and list(found.wide) == [0] and found.wide[0] >= WIDE_NOTE
    number = cnnlab.predictor(model="resnet").read_number(page)
    assert list(number.wide) == [0] and number.to_dict()["wide_digits"] == [0]
    page.save(tmp_path / "zeros.png")
    assert main(["predict", "--model", "resnet", "--number", str(tmp_path / "zeros.png")]) == 0
    err = capsys.readouterr().err
    assert "zeros.png: digit 1 (" in err and "times wider than high: digits that touch may have been read as one" in err


def test_digits_apart_and_ordinary_wide_digits_get_no_note(tmp_path, capsys):
    number = cnnlab.predictor(model="resnet").read_number(number_page("1047"))
    assert number.wide == {} and "wide_digits" not in number.to_dict()
    number_page("1047").save(tmp_path / "apart.png")
    assert main(["predict", "--model", "resnet", "--number", "--json", str(tmp_path / "apart.png")]) == 0
    out = capsys.readouterr()
    assert "wider than high" not in out.err and "wide_digits" not in json.loads(out.out)[0]


def test_a_split_wide_mark_moves_its_note_with_the_fields():
    half = np.zeros((28, 28), np.float32)
    found = NumberFields([half, half, half], splits={1: [half, half]}, wide={1: 2.4, 2: 4.2}, signs=[(2, ".")])
    kept = found.split(set())
    assert kept.wide == {1: 2.4, 2: 4.2}
    split = NumberFields([half, half, half], splits={1: [half, half], 2: [half, half]}, wide={1: 2.4, 2: 4.2}).split({1, 2})
    assert split.wide == {3: 2.1, 4: 2.1}  # the first split's halves are ordinary; the second's still as wide as two
    assert found.split({1}).wide == {3: 4.2} and found.split({1}).signs == [(3, ".")]
