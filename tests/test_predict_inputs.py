"""The Predictor's and ``cnnlab predict``'s inputs, as a hostile tester probed them: gray+alpha arrays, ndarray
subclasses and odd tensors, ``top(k)`` with numpy integers, ``--show-input``'s files, and folders holding links
and FIFOs. Each test failed before its fix."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from apps_helpers import draw_digit, tiny_checkpoint
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.predict import BadImageError, NumberPrediction, Prediction, Predictor, expand_inputs


@pytest.fixture
def ckpt(tmp_path):
    return tiny_checkpoint(tmp_path / "run" / "last.pt")


@pytest.fixture
def predictor(ckpt):
    return Predictor.from_run(ckpt.parent, device="cpu")


def _field() -> np.ndarray:
    field = np.zeros((28, 28), dtype=np.float32)
    field[6:22, 12:16] = 1.0
    return field


# ----------------------------------------------------------------------------- (H, W, 2): gray and alpha


def test_a_gray_and_alpha_array_is_one_image_read_as_its_la_picture(predictor):
    """``np.asarray(img.convert("LA"))`` is (H, W, 2): it was read as a batch of H images ("array[0]: no ink
    found", a name never passed; a 100x80 white-on-black line gave 100 predictions, one per pixel row)."""
    dark_on_white = draw_digit((60, 60), (10, 10, 50, 50)).convert("LA")  # opaque: the gray is read
    line = np.zeros((100, 80, 2), dtype=np.uint8)
    line[..., 1] = 255
    line[20:80, 38:43, 0] = 255  # white on black, opaque
    transparent = np.zeros((120, 120, 2), dtype=np.uint8)  # dark strokes on a transparent background
    transparent[..., 1] = np.asarray(draw_digit((120, 120), (20, 20, 100, 100), ink=255, paper=0))
    for pil in (dark_on_white, Image.fromarray(line), Image.fromarray(transparent)):
        assert pil.mode == "LA"
        arr = np.array(pil)
        ref = predictor(pil)
        for x in (arr, arr / 255.0, torch.from_numpy(arr).permute(2, 0, 1)):  # (H, W, 2), floats, a (2, H, W) tensor
            pred = predictor(x)
            assert isinstance(pred, Prediction) and pred.name in ("array", "tensor")
            np.testing.assert_allclose(pred.input_image, ref.input_image, atol=2e-3)
            np.testing.assert_allclose(pred.probabilities, ref.probabilities, atol=1e-4)
        number = predictor.read_number(arr)
        assert isinstance(number, NumberPrediction) and number.name == "array"
    # taken as is: luminance, the alpha dropped (as for an RGBA array)
    as_is = np.stack([np.round(_field() * 255).astype(np.uint8), np.full((28, 28), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(predictor(as_is, preprocess=False).input_image, as_is[..., 0] / np.float32(255))
    assert len(predictor(np.stack([as_is[..., 0]] * 2))) == 2  # a batch of two gray images stays a batch


# ----------------------------------------------------------------------------- ndarray subclasses, odd tensors


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_a_matrix_and_odd_tensors_are_read_or_refused_in_one_line(predictor):
    """``np.matrix`` (ValueError from inside), a quantized tensor (TypeError: unsupported ScalarType QUInt8, in
    read_number too), a nested tensor (RuntimeError: NestedTensorImpl doesn't support sizes), a view with the
    negative bit (RuntimeError from numpy()): tracebacks before."""
    field = _field()
    ref = predictor(field)
    assert predictor(np.matrix(field)).probabilities == ref.probabilities
    with pytest.raises(BadImageError, match="no ink found"):  # a blank matrix: the blank field's line
        predictor(np.matrix(np.zeros((28, 28), np.uint8)))
    assert predictor.prepare(np.matrix(field)).shape == (28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's quantized and nested tensors warn that they are deprecated/prototype
        quantized = torch.quantize_per_tensor(torch.from_numpy(field), 1 / 255, 0, torch.quint8)
        nested = torch.nested.nested_tensor([torch.from_numpy(field), torch.zeros(20, 20)])
    np.testing.assert_allclose(predictor(quantized).probabilities, ref.probabilities, atol=1e-4)  # dequantized
    assert isinstance(predictor.read_number(quantized), NumberPrediction)
    with pytest.raises(BadImageError) as info:
        predictor(nested)
    assert str(info.value) == ("tensor: a nested tensor (images of different sizes in one tensor) is no image; give "
                               "its images as a list: list(t.unbind())")
    negative = torch._neg_view(-torch.from_numpy(field))  # a view whose negation is pending
    np.testing.assert_allclose(predictor(negative).probabilities, ref.probabilities, atol=1e-6)
    with pytest.raises(BadImageError, match="complex64 are not an image"):
        predictor(torch.from_numpy(field).to(torch.complex64).conj())


def test_an_array_or_pil_image_over_the_pixel_cap_is_refused_before_any_work(predictor, ckpt):
    """A 10000x10000 array took 1.2 GB to read (its pixels as floats), a 0-byte broadcast view of 20000x20000 19 s
    and 5 GB before 'no ink found': arrays and PIL images had no pixel cap, files had. Now max_pixels holds for all."""
    huge = np.broadcast_to(np.uint8(0), (20_000, 20_000))  # no memory behind it
    for x in (huge, torch.from_numpy(np.zeros((1, 5000, 4000), np.uint8)), Image.new("L", (5000, 4000))):
        with pytest.raises(BadImageError, match=r"is 20,000,000 pixels|is 400,000,000 pixels") as caught:
            predictor(x)
        assert "over the limit of 16,777,216 (max_pixels)" in str(caught.value)
        with pytest.raises(BadImageError, match="over the limit"):
            predictor.read_number(x)
    small = Predictor.from_run(ckpt.parent, device="cpu", max_pixels=784)
    with pytest.raises(BadImageError, match="29x28 is 812 pixels"):
        small(np.zeros((28, 29), np.uint8))
    assert small(_field()).label in small.classes  # a 28x28 field is within any cap


def test_show_input_typed_before_the_image_takes_it_as_the_image(ckpt, tmp_path, capsys, monkeypatch):
    """``cnnlab predict RUN --show-input my_digit.png`` took the image for --show-input's DIR and refused the
    command for want of images ("the following arguments are required: [RUN] IMAGE")."""
    monkeypatch.chdir(tmp_path)
    draw_digit().save("my_digit.png")
    assert main(["predict", str(ckpt.parent), "--show-input", "my_digit.png"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("my_digit.png") and "wrote my_digit.input.png" in out
    assert (tmp_path / "my_digit.input.png").is_file()
    (tmp_path / "seen").mkdir()
    assert main(["predict", str(ckpt.parent), "my_digit.png", "--show-input", "seen"]) == 0  # a folder stays DIR
    assert (tmp_path / "seen" / "my_digit.input.png").is_file()
    assert main(["predict", "--model", "resnet"]) == 2
    assert "give the images to predict" in capsys.readouterr().err


def test_predictions_compare_by_identity_not_by_their_arrays(predictor):
    """``p(f) == p(f)`` raised ValueError (the dataclass compared the fields' arrays): ``pred in preds`` crashed."""
    a, b = predictor(_field()), predictor(_field())
    assert a == a and a != b and a in [b, a] and a.label == b.label
    n = predictor.read_number(np.pad(_field(), 20))
    assert n == n and n not in [predictor.read_number(np.pad(_field(), 20))]


def test_top_takes_any_whole_number_but_no_bool_or_float(predictor):
    """``top(np.int64(2))`` was refused as not "a whole number >= 0"."""
    pred = predictor(_field())
    for k in (2, np.int64(2), np.uint8(2), torch.tensor(2)):
        assert pred.top(k) == pred.top(2) and len(pred.top(k)) == 2
    for k in (True, np.bool_(True), torch.tensor(True), 2.0, np.float64(2), "2", None, -1, np.int64(-1)):
        with pytest.raises(CnnlabError, match="a whole number >= 0"):
            pred.top(k)


# ----------------------------------------------------------------------------- predict --show-input


def _two_digits(folder):
    folder.mkdir(parents=True, exist_ok=True)
    draw_digit().save(folder / "a.png")
    draw_digit((300, 300), (100, 50, 200, 250)).save(folder / "b.png")


def test_each_row_names_the_input_image_written_for_it(ckpt, tmp_path, capsys):
    """The same file given twice: both rows said ``out/a-2.input.png`` (by file name), though ``out/a.input.png``
    was written for the first."""
    _two_digits(tmp_path / "si")
    a, out = tmp_path / "si" / "a.png", tmp_path / "out"
    assert main(["predict", str(ckpt.parent), str(a), str(a), "--show-input", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr()[0])
    assert [r["input_image"] for r in rows] == [str(out / "a.input.png"), str(out / "a-2.input.png")]
    assert main(["predict", str(ckpt.parent), str(a), str(a), "--show-input", str(out)]) == 0
    lines = capsys.readouterr()[0].splitlines()
    assert lines[-2:] == [f"wrote {out / 'a.input.png'} (what the net saw of {a})",
                          f"wrote {out / 'a-2.input.png'} (what the net saw of {a})"]


def test_a_folder_or_pattern_leaves_out_what_show_input_wrote(ckpt, tmp_path, capsys, monkeypatch):
    """``predict si --show-input`` then ``predict si``: the second run predicted the written ``a.input.png`` and
    ``a.input.x10.png`` too (6 rows for 2 images)."""
    si = tmp_path / "si"
    _two_digits(si)
    run = str(ckpt.parent)
    assert main(["predict", run, str(si), "--show-input"]) == 0
    assert sorted(p.name for p in si.iterdir()) == ["a.input.png", "a.input.x10.png", "a.png", "b.input.png",
                                                    "b.input.x10.png", "b.png"]
    capsys.readouterr()
    note = ("note: left out 4 images that --show-input wrote (<name>.input.png, <name>.input.x10.png) from the "
            "folders and patterns given; name one to predict it")
    monkeypatch.chdir(tmp_path)
    for given in ("si", "si/*.png", "si/**"):
        assert main(["predict", run, given, "--json"]) == 0, given
        out, err = capsys.readouterr()
        assert [r["file"] for r in json.loads(out)] == ["si/a.png", "si/b.png"] and err.splitlines() == [note], given
    assert main(["predict", run, "si/a.input.png", "--json"]) == 0  # named: read
    assert [r["file"] for r in json.loads(capsys.readouterr()[0])] == ["si/a.input.png"]
    # a user's own image of such a name is read; a folder of nothing but written images is a failure of its own
    draw_digit().save(si / "c.input.png")
    assert [str(p) for p in expand_inputs(["si"])[0]] == ["si/a.png", "si/b.png", "si/c.input.png"]
    for name in ("a.png", "b.png", "c.input.png"):
        (si / name).unlink()
    left: list = []
    paths, failures = expand_inputs(["si"], left)
    assert paths == [] and left == [] and [f.error for f in failures] == [
        "si: directory holds only input images that --show-input wrote (4); name one to predict it"]


def test_show_input_never_replaces_a_file_it_did_not_write(ckpt, tmp_path, capsys):
    """An existing ``u/a.input.png`` of the user's was overwritten without a word."""
    u = tmp_path / "u"
    _two_digits(u)
    mine = u / "a.input.png"
    mine.write_bytes(b"the user's own file")
    run, a = str(ckpt.parent), str(u / "a.png")
    for _ in range(2):  # the second run replaces what the first wrote (a-2), and still not the user's file
        assert main(["predict", run, a, "--show-input", "--json"]) == 0
        out, err = capsys.readouterr()
        assert json.loads(out)[0]["input_image"] == str(u / "a-2.input.png")
        assert err.splitlines() == [f"note: {mine}: not written by --show-input, left as it is; wrote "
                                    f"{u / 'a-2.input.png'} instead"]
        assert mine.read_bytes() == b"the user's own file" and (u / "a-2.input.x10.png").is_file()
    assert not (u / "a.input.x10.png").exists()
    # a rerun replaces its own earlier images, quietly
    assert main(["predict", run, str(u / "b.png"), "--show-input"]) == 0
    capsys.readouterr()
    first = (u / "b.input.png").stat().st_ino
    assert main(["predict", run, str(u / "b.png"), "--show-input"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and f"wrote {u / 'b.input.png'} " in out and (u / "b.input.png").stat().st_ino != first
    assert not (u / "b-2.input.png").exists()


# ----------------------------------------------------------------------------- folders: links and FIFOs


def test_a_folder_lists_its_dangling_links_loops_and_fifos_as_skipped(ckpt, tmp_path, capsys):
    """``predict DIR`` listed only the readable images, exit 0, while each of these, named, was "skipped"."""
    sl = tmp_path / "sl"
    sl.mkdir()
    draw_digit().save(sl / "a.png")
    (sl / "loop.png").symlink_to("loop.png")
    (sl / "dangling.png").symlink_to("nothere.png")
    os.mkfifo(sl / "fifo.png")
    (sl / "sub.png").mkdir()  # a folder named like an image is no entry of the folder's images
    expected = [f"cnnlab: skipped {sl / 'dangling.png'}: no such file; check the path",
                f"cnnlab: skipped {sl / 'fifo.png'}: not a regular file (a pipe, socket or device); give an image file",
                f"cnnlab: skipped {sl / 'loop.png'}: cannot be read (symlink loop); fix or remove the symbolic link"]
    for given in (sl, sl / "*.png"):  # never blocks on the FIFO: opened without waiting for a writer
        assert main(["predict", str(ckpt.parent), str(given)]) == 1
        out, err = capsys.readouterr()
        assert out.splitlines()[0].startswith(str(sl / "a.png")) and len(out.splitlines()) == 1
        assert err.splitlines() == expected + ["1 image predicted, 3 failed"]


def test_a_speck_a_dot_or_a_blob_is_refused_not_read_as_a_digit(predictor, tmp_path, capsys):
    """Found by probing: one black pixel on a 280x280 page was enlarged to a solid 20x20 square and read '0' at 81%
    by the shipped net; a tap of the pen on the drawing page (a 20 px dot) '0' at 92%; a filled square too."""
    from PIL import ImageDraw

    def page(draw, size=(280, 280)):
        img = Image.new("L", size, 255)
        draw(ImageDraw.Draw(img))
        return img

    blobs = {"speck": page(lambda d: d.point((140, 140), fill=0)),
             "grey speck": page(lambda d: d.point((300, 200), fill=90), (640, 480)),
             "dot": page(lambda d: d.ellipse([130, 130, 150, 150], fill=0)),
             "square": page(lambda d: d.rectangle([5, 5, 274, 274], fill=0))}
    for name, img in blobs.items():
        with pytest.raises(BadImageError, match=r"the ink is one dot or blob \(\d+x\d+ px\), not a digit's strokes"):
            predictor(img, name=name)
    # strokes are read: a seven, a bar, a thick short dash, a ring drawn with a marker
    strokes = [page(lambda d: d.line([(80, 60), (200, 60), (120, 220)], fill=0, width=18)),
               page(lambda d: d.line([(140, 40), (140, 240)], fill=0, width=30)),
               page(lambda d: d.line([(100, 140), (180, 140)], fill=0, width=20)),
               page(lambda d: d.ellipse([90, 70, 190, 210], outline=0, width=30))]
    assert len(predictor(strokes)) == 4
    blobs["speck"].save(tmp_path / "speck.png")
    assert main(["predict", "--model", "resnet", str(tmp_path / "speck.png")]) == 1
    err = capsys.readouterr().err
    assert "speck.png: the ink is one dot or blob (1x1 px), not a digit's strokes; write or draw a digit\n" in err
