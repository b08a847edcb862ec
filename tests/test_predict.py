"""cnnlab predict: MNIST-style preprocessing of any image, bad files skipped, the CLI's outputs."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFile, ImageFilter

from apps_helpers import draw_digit, png_header_only, tiny_checkpoint
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.predict import BadImageError, Predictor, open_image, predict_paths
from cnnlab.preprocessing import preprocess


@pytest.fixture
def ckpt(tmp_path):
    return tiny_checkpoint(tmp_path / "run" / "last.pt")


def _jpeg(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=85)
    return open_image(buf.getvalue(), "jpeg")


def _transparent() -> Image.Image:
    """Dark strokes on a fully transparent background (a typical PNG export of a drawing)."""
    img = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    mask = draw_digit((400, 400), (100, 60, 300, 260), ink=255, paper=0)
    img.paste((20, 20, 20, 255), mask=mask)
    return img


VARIANTS = {
    "large canvas, top-left corner": lambda: draw_digit((1500, 1000), (20, 20, 820, 820)),
    "small canvas, bottom-right": lambda: draw_digit((100, 100), (55, 55, 95, 95)),
    "very wide canvas, far right": lambda: draw_digit((3000, 400), (2500, 100, 2780, 380)),
    "light ink on dark paper": lambda: draw_digit(ink=255, paper=0),
    "blue ink on yellow paper (RGB)": lambda: draw_digit(ink=(30, 60, 200), paper=(250, 240, 150), mode="RGB"),
    "dark gray ink on gray paper": lambda: draw_digit(ink=60, paper=200),
    "transparent background (RGBA)": _transparent,
    "JPEG": lambda: _jpeg(draw_digit()),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_digit_any_size_position_colour_polarity(variant):
    ref = preprocess(draw_digit())  # 200 px black-on-white digit centred on a 300 px canvas
    got = preprocess(VARIANTS[variant]())
    assert got.shape == (28, 28) and got.dtype == np.float32
    # The line drawing itself differs a little between scales (PIL's lines are not anti-aliased).
    assert np.abs(got - ref).mean() < 0.04
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.97


def test_mnist_geometry():
    """Ink white on black, longer side 20 px, centre of mass at the centre of the 28x28 field."""
    field = preprocess(draw_digit((900, 500), (600, 50, 800, 450)))  # a tall digit, off centre
    assert field.max() == pytest.approx(1.0) and field[0].max() == 0 and field[:, 0].max() == 0
    rows = np.flatnonzero(field.max(1) > 0.2)
    cols = np.flatnonzero(field.max(0) > 0.2)
    assert 19 <= rows[-1] - rows[0] + 1 <= 21 and cols[-1] - cols[0] + 1 < 18
    ys, xs = np.mgrid[:28, :28] + 0.5
    assert (field * ys).sum() / field.sum() == pytest.approx(14.0, abs=0.05)
    assert (field * xs).sum() / field.sum() == pytest.approx(14.0, abs=0.05)


def _truncated(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (200, 200), dtype=np.uint8)).save(buf, fmt)
    data = buf.getvalue()
    return data[: len(data) // 2]


def _tiff() -> bytes:
    buf = io.BytesIO()
    draw_digit().save(buf, "TIFF")
    return buf.getvalue()


BAD = {
    "zero bytes": (b"", "empty file"),
    "not an image": (b"hello, this is text\n" * 10, "not an image"),
    "truncated PNG": (_truncated("PNG"), "truncated"),
    "truncated JPEG": (_truncated("JPEG"), "truncated"),
    # 10000^2 = 1e8 pixels: over MAX_IMAGE_PIXELS (~8.9e7), where Pillow only warns
    "decompression bomb (warning zone)": (png_header_only(10_000, 10_000), "decompression bomb"),
    # 20000^2 = 4e8 pixels: over twice the limit, where Pillow raises
    "decompression bomb (error zone)": (png_header_only(20_000, 20_000), "decompression bomb"),
    "format outside the allow-list (TIFF)": (_tiff(), "TIFF images are not accepted"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_refused_with_one_line(case, tmp_path):
    data, fragment = BAD[case]
    path = tmp_path / "bad.png"
    path.write_bytes(data)
    for source in (path, data):  # from a file (predict) and from bytes (serve)
        with pytest.raises(BadImageError) as info:
            open_image(source, "bad.png")
        msg = str(info.value)
        assert fragment in msg and "\n" not in msg and msg.startswith("bad.png: ")
    # the safety settings are left as Pillow ships them
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == 178956970 // 2


def test_exif_orientation_applied():
    """A photo stored upside down with EXIF Orientation 3 (rotate 180) is read upright."""
    exif = Image.Exif()
    exif[0x0112] = 3
    buf = io.BytesIO()
    draw_digit().rotate(180).convert("RGB").save(buf, "JPEG", quality=95, exif=exif)
    got = preprocess(open_image(buf.getvalue(), "photo.jpg"))
    assert np.abs(got - preprocess(draw_digit())).mean() < 0.01


def test_blank_and_missing(tmp_path):
    with pytest.raises(BadImageError, match="no ink found"):
        preprocess(Image.new("L", (100, 100), 255), name="blank.png")
    with pytest.raises(BadImageError, match="no such file"):
        open_image(tmp_path / "nope.png")


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [draw_digit(), Image.new("L", (300, 300), 255)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    np.testing.assert_allclose(preprocess(open_image(path)), preprocess(draw_digit()), atol=0.02)


def test_predict_paths_skips_bad_and_expands_dirs_and_globs(ckpt, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    draw_digit().save(d / "a.png")
    draw_digit(ink=255, paper=0).save(d / "b.bmp")
    (d / "c.png").write_bytes(b"")
    (d / "notes.txt").write_text("ignored: not an image suffix")
    other = tmp_path / "other"
    other.mkdir()
    draw_digit().convert("RGB").save(other / "x.webp")
    predictor = Predictor.from_run(ckpt.parent, device="cpu")
    preds, failures = predict_paths(predictor, [str(d), str(other / "*.webp"), str(tmp_path / "missing.png")])
    assert [p.name.rsplit("/", 1)[-1] for p in preds] == ["a.png", "b.bmp", "x.webp"]
    assert len(failures) == 2 and "empty file" in failures[0].error and "no such file" in failures[1].error
    for p in preds:
        assert len(p.probabilities) == 10 and sum(p.probabilities) == pytest.approx(1.0, abs=1e-5)
    # the same digit in different files gets (nearly) the same probabilities
    np.testing.assert_allclose(preds[0].probabilities, preds[1].probabilities, atol=1e-4)


def test_globs_descend_like_a_shell_and_a_symlink_loop_ends(tmp_path, monkeypatch):
    from cnnlab.predict import expand_inputs

    sub = tmp_path / "d" / "sub"
    sub.mkdir(parents=True)
    for name in ("d/top.png", "d/sub/deep.png", "d/.hidden.png", "d/sub/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    # two links back up: glob.glob followed them, 2 ** depth paths, a walk that never ended
    (sub / "up1").symlink_to("..")
    (sub / "up2").symlink_to("..")
    monkeypatch.chdir(tmp_path)
    found, failures = expand_inputs(["d/**/*.png", "d/*.png", "d/.*.png", "d/nothing*"])
    assert [str(p) for p in found] == ["d/sub/deep.png", "d/top.png", "d/top.png", "d/.hidden.png"]
    assert len(failures) == 1 and "matches no files" in failures[0].error
    assert [str(p) for p in expand_inputs([str(tmp_path / "d" / "*.png")])[0]] == [str(tmp_path / "d" / "top.png")]
    assert [str(p) for p in expand_inputs(["d/**"])[0]] == ["d/sub/deep.png", "d/sub/notes.txt", "d/top.png"]


def test_cli_text_json_show_input_and_exit_code(ckpt, tmp_path, capsys):
    good, bad = tmp_path / "seven.png", tmp_path / "broken.jpg"
    draw_digit((640, 480), (300, 100, 500, 400)).save(good)
    bad.write_bytes(b"not a jpeg at all")
    seen = tmp_path / "seen"

    code = main(["predict", str(ckpt.parent), str(good), "--top-k", "2", "--show-input", str(seen)])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith(str(good)) and out.count("%") == 2 and err == ""
    saved = Image.open(seen / "seven.input.png")
    assert saved.size == (28, 28) and saved.mode == "L"
    big = Image.open(seen / "seven.input.x10.png")  # the same image, enlarged for a screen: sharp 10x10 squares
    assert big.size == (280, 280) and big.mode == "L"
    np.testing.assert_array_equal(np.asarray(big), np.kron(np.asarray(saved), np.ones((10, 10), dtype=np.uint8)))

    # two inputs with the same stem: both kept, the later one numbered, none overwritten
    other = tmp_path / "elsewhere" / "seven.png"
    other.parent.mkdir()
    draw_digit((300, 300), (100, 50, 200, 250)).save(other)
    code = main(["predict", str(ckpt.parent), str(good), str(other), "--show-input", str(seen), "--json"])
    rows = json.loads(capsys.readouterr()[0])
    assert code == 0 and [r["input_image"] for r in rows] == [str(seen / "seven.input.png"), str(seen / "seven-2.input.png")]
    assert (seen / "seven-2.input.x10.png").is_file()
    assert not np.array_equal(np.asarray(Image.open(seen / "seven.input.png")),
                              np.asarray(Image.open(seen / "seven-2.input.png")))

    code = main(["predict", str(ckpt), str(good), str(bad)])
    out, err = capsys.readouterr()
    assert code == 1 and str(good) in out and "broken.jpg" not in out
    assert [line for line in err.splitlines() if "broken.jpg" in line] == [err.splitlines()[0]]
    assert err.splitlines()[0].startswith(f"cnnlab: skipped {bad}: not an image")

    code = main(["predict", str(ckpt), str(good), str(bad), "--json"])
    out, _ = capsys.readouterr()
    rows = json.loads(out)
    assert code == 1 and len(rows) == 2
    assert rows[0]["file"] == str(good) and len(rows[0]["top"]) == 3 and rows[0]["prediction"] == rows[0]["top"][0]["class"]
    assert rows[1]["file"] == str(bad) and "not an image" in rows[1]["error"]


def test_cli_reads_one_image_from_standard_input(ckpt, tmp_path, capsys, monkeypatch):
    """``cat digit.png | cnnlab predict RUN -``: '-' was looked for as a file ("no such file")."""
    good = tmp_path / "seven.png"
    draw_digit().save(good)

    def stdin(data: bytes, tty: bool = False):
        stream = io.TextIOWrapper(io.BytesIO(data))
        monkeypatch.setattr(stream, "isatty", lambda: tty)
        monkeypatch.setattr(sys, "stdin", stream)

    stdin(good.read_bytes())
    assert main(["predict", str(ckpt), "-", str(good), "-", "--json"]) == 1
    rows = json.loads(capsys.readouterr()[0])
    assert rows[0]["file"] == "stdin" and rows[0]["top"] == rows[1]["top"] and rows[1]["file"] == str(good)
    assert rows[2] == {"file": "stdin", "error": "-: standard input was read already (one image); give - once"}
    stdin(b"")
    assert main(["predict", str(ckpt), "-"]) == 1
    assert capsys.readouterr()[1].startswith("cnnlab: skipped stdin: empty file (0 bytes)")
    stdin(b"", tty=True)  # it would wait for the keyboard
    assert main(["predict", str(ckpt), "-"]) == 2
    err = capsys.readouterr()[1]
    assert "reads one image from standard input, which is a terminal here" in err and err.count("\n") == 1


def test_cli_bad_run_is_one_line_error(tmp_path, capsys):
    code = main(["predict", str(tmp_path / "no-run"), "x.png"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "no such checkpoint" in err


# ----------------------------------------------------------------------------- Predictor.__call__


@pytest.fixture
def predictor(ckpt):
    return Predictor.from_run(ckpt.parent, device="cpu")


def test_predictor_takes_every_kind_of_image_alike(predictor, tmp_path):
    img = draw_digit()  # 300x300, black on white: every kind below is preprocessed like the file
    path = tmp_path / "four.png"
    img.save(path)
    rgb = np.array(img.convert("RGB"))
    gray = np.array(img)
    kinds = {
        "path": str(path), "Path": path, "bytes": path.read_bytes(), "PIL": img,
        "uint8 (H, W)": gray, "float (H, W)": gray / 255.0, "uint8 (H, W, 3)": rgb, "uint8 (H, W, 1)": gray[..., None],
        "tensor (H, W)": torch.from_numpy(gray), "tensor (C, H, W)": torch.from_numpy(rgb).permute(2, 0, 1),
        "float tensor (1, H, W)": torch.from_numpy(gray / 255.0).float()[None],
    }
    ref = predictor(path)
    assert ref.name == str(path) and ref.input_image.shape == (28, 28)
    for kind, x in kinds.items():
        pred = predictor(x)
        assert not isinstance(pred, list), kind
        np.testing.assert_allclose(pred.input_image, ref.input_image, atol=2e-3, err_msg=kind)
        np.testing.assert_allclose(pred.probabilities, ref.probabilities, atol=1e-4, err_msg=kind)
    preds = predictor([path, gray, img])  # a list gives a list, in order, named
    assert [p.name for p in preds] == [str(path), "input[1]", "input[2]"]
    np.testing.assert_allclose([p.probabilities for p in preds], [ref.probabilities] * 3, atol=1e-4)
    assert predictor([]) == []


def test_an_mnist_like_field_is_taken_as_is(predictor):
    field = preprocess(draw_digit())  # (28, 28) float in 0..1, white ink on black, centred
    as_uint8 = np.round(field * 255).astype(np.uint8)
    np.testing.assert_array_equal(predictor(field).input_image, field)
    np.testing.assert_array_equal(predictor(as_uint8).input_image, as_uint8 / np.float32(255))
    batch = predictor(np.stack([as_uint8, as_uint8[::-1]]))  # (N, H, W)
    assert [p.name for p in batch] == ["array[0]", "array[1]"]
    np.testing.assert_array_equal(batch[1].input_image, as_uint8[::-1] / np.float32(255))
    tensors = predictor(torch.from_numpy(np.stack([as_uint8] * 3))[:, None], name="test")  # (N, C, H, W)
    assert [p.name for p in tensors] == ["test[0]", "test[1]", "test[2]"]
    np.testing.assert_allclose(tensors[0].probabilities, predictor(field).probabilities, atol=1e-3)
    # black ink on white is no MNIST field: it is preprocessed (inverted, cropped, centred) like a file
    np.testing.assert_allclose(predictor(1 - field).input_image, preprocess(Image.fromarray(255 - as_uint8)), atol=1e-6)
    # forced either way
    assert not np.array_equal(predictor(field, preprocess=True).input_image, field)
    np.testing.assert_array_equal(predictor(1 - field, preprocess=False).input_image, 1 - field)


BAD_INPUTS = {
    "normalised floats": (np.full((28, 28), -0.42, dtype=np.float32), "must lie in 0..1"),
    "NaN": (np.full((28, 28), np.nan), "NaN"),
    "16-bit values": (np.full((28, 28), 4000, dtype=np.uint16), "0..255"),
    "text pixels": (np.full((28, 28), "x"), "not an image"),
    "4-D array": (np.zeros((2, 28, 28, 3), dtype=np.uint8), "no image"),
    "empty array": (np.zeros((0, 28), dtype=np.uint8), "empty"),
    "5-channel tensor": (torch.zeros(5, 28, 28), "no image"),
    "1-D tensor": (torch.zeros(784), "no image"),
    "a batch in a list": ([np.zeros((2, 28, 28), dtype=np.uint8)], "a list holds single images"),
    "a dict": ({"image": 1}, "cannot predict a dict"),
    "blank array": (np.zeros((50, 50), dtype=np.uint8), "no ink found"),
    "an empty PIL image": (Image.new("L", (0, 0)), "an empty image (0x0 pixels)"),
    "a meta tensor": (torch.zeros(28, 28, device="meta"), "holds no pixels"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_are_one_line_errors(predictor, case):
    x, fragment = BAD_INPUTS[case]
    with pytest.raises(BadImageError) as info:
        predictor(x)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_a_sparse_tensor_reads_as_its_dense_pixels_and_bad_arguments_are_one_line(predictor):
    """Found by probing the API: a sparse tensor, ``preprocess="yes"`` and ``top(-1)`` were a traceback, a
    silent truthy flag and a list one short."""
    field = np.zeros((28, 28), dtype=np.float32)
    field[6:22, 12:16] = 1.0
    dense = predictor(torch.from_numpy(field))
    sparse = predictor(torch.from_numpy(field).to_sparse())
    assert sparse.probabilities == dense.probabilities
    with pytest.raises(CnnlabError, match="preprocess must be None .automatic., True or False, got 'yes'"):
        predictor(field, preprocess="yes")
    with pytest.raises(CnnlabError, match="a whole number >= 0, got -1"):
        dense.top(-1)
    assert dense.top(0) == [] and len(dense.top(100)) == 10


def test_open_files_and_memoryviews_are_read_like_bytes(predictor, tmp_path):
    """Found by probing the API: ``predictor(open(path, "rb"))``, an ``io.BytesIO`` and a ``memoryview`` were
    "cannot predict a BufferedReader"; a file in the wrong mode or read to its end is one line that says so."""
    path = tmp_path / "seven.png"
    draw_digit().save(path)
    data = path.read_bytes()
    want = predictor(path).probabilities
    with open(path, "rb") as f:
        from_file = predictor(f)
    assert from_file.name == str(path) and from_file.probabilities == want
    assert predictor(memoryview(data)).probabilities == want
    with open(path, "rb") as f:  # in a list each keeps the name it has
        names = [p.name for p in predictor([f, io.BytesIO(data), data])]
    assert names == [str(path), "input[1]", "input[2]"]
    (tmp_path / "text.txt").write_text("x")
    cases = [(open(tmp_path / "text.txt"), "a file opened in text mode; open it in binary mode"),
             (io.StringIO("x"), "file: a file opened in text mode"),
             (open(tmp_path / "out.bin", "wb"), "cannot be read (it is not open for reading)"),
             (io.BytesIO(), "file: empty file (0 bytes)")]
    closed = open(path, "rb")
    closed.close()
    at_end = open(path, "rb")
    at_end.read()
    cases += [(closed, "cannot be read (read of closed file)"), (at_end, "nothing left to read (it stands at its end, byte ")]
    for f, fragment in cases:
        with pytest.raises(BadImageError) as info:
            predictor(f)
        f.close()
        assert fragment in str(info.value) and "\n" not in str(info.value)


def test_taken_as_is_needs_the_field_size(predictor):
    with pytest.raises(BadImageError, match="must be 28x28, got 40x30; let it be preprocessed"):
        predictor(np.zeros((40, 30), dtype=np.uint8), preprocess=False)


# ----------------------------------------------------------------------------- photo-like images (background removal)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.photo_digits import grid_lines, light_field  # noqa: E402
from cnnlab.preprocessing import (  # noqa: E402
    _window, ink_map, keep_digit, label_components, light_paper, mnist_field, otsu_threshold, paper_level,
)


def _photo(light="even", paper=0.92, ink=0.1, grid=0.0, noise=0.0, jpeg=0, seed=0, canvas=(420, 360),
           box=(150, 90, 300, 240), **light_args) -> Image.Image:
    """The "4" of draw_digit photographed: ``light(x, y) * reflectance + noise``, 8-bit, optionally JPEG."""
    rng = np.random.default_rng(seed)
    w, h = canvas
    cover = np.asarray(draw_digit(canvas, box, ink=255, paper=0).filter(ImageFilter.GaussianBlur(1.5)), np.float32) / 255
    refl = np.full((h, w), paper, np.float32)
    if grid:
        refl *= 1 - grid * grid_lines(h, w, rng)
    refl = refl * (1 - cover) + ink * cover
    pixels = refl * light_field(light, h, w, rng, **light_args) + rng.normal(0, noise, (h, w))
    img = Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    return _jpeg(img) if jpeg else img


#: Each photo condition of the user report, as a page (benchmarks/photo_digits.py measures them with a net).
PHOTOS = {
    "linear shading": dict(light="linear", seed=1),
    "radial shading": dict(light="radial", seed=2),
    "soft shadow": dict(light="shadow", seed=3),
    "hard shadow edge through the digit": dict(light="shadow", seed=4, depth=(0.7, 0.7), soft=(0.003, 0.003)),
    "vignetting": dict(light="vignette", seed=5),
    "darker corner": dict(light="corner", seed=6),
    "grey paper + shadow": dict(light="shadow", paper=0.6, ink=0.06, seed=7),
    "grid paper": dict(grid=0.2, seed=8),
    "sensor noise + JPEG": dict(noise=0.05, jpeg=1, seed=9),
    "all at once": dict(light="mixed", paper=0.72, grid=0.2, noise=0.04, jpeg=1, seed=10),
}


@pytest.fixture(scope="module")
def clean_field():
    return preprocess(_photo())


@pytest.mark.parametrize("condition", list(PHOTOS))
def test_photo_background_is_removed(condition, clean_field):
    """Under uneven light, on grey or squared paper, with noise: the 28x28 field holds the digit only."""
    field = preprocess(_photo(**PHOTOS[condition]))
    ring = np.concatenate([field[:2].ravel(), field[-2:].ravel(), field[:, :2].ravel(), field[:, -2:].ravel()])
    assert ring.max() < 0.05  # no slab of background reaching the field's border
    rows, cols = np.flatnonzero(field.max(1) > 0.2), np.flatnonzero(field.max(0) > 0.2)
    assert 19 <= max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 21  # the digit, not digit + background, is 20 px
    ys, xs = np.mgrid[:28, :28] + 0.5
    assert (field * ys).sum() / field.sum() == pytest.approx(14.0, abs=0.3)
    assert (field * xs).sum() / field.sum() == pytest.approx(14.0, abs=0.3)
    assert np.corrcoef(field.ravel(), clean_field.ravel())[0, 1] > 0.95
    assert np.abs(field - clean_field).mean() < 0.04


@pytest.mark.parametrize("condition", ["soft shadow", "hard shadow edge through the digit", "grey paper + shadow"])
def test_polarity_when_the_border_lies_in_a_shadow(condition):
    """The old rule (the median of the border) says "dark paper" when most of the border is in a shadow;
    the strokes' side decides instead. Light ink on a shaded dark board stays dark paper."""
    args = dict(PHOTOS[condition], depth=(0.75, 0.75))
    gray = np.asarray(_photo(**args), np.float32) / 255
    assert light_paper(gray)
    board = np.asarray(_photo(paper=0.1, ink=0.9, light="linear", seed=11), np.float32) / 255
    assert not light_paper(board)


CLEAN = {
    "even paper photo": lambda: _photo(),
    "drawing page canvas (280 px, black on white)": lambda: draw_digit((280, 280), (40, 40, 240, 240)),
    "thin white strokes on black": lambda: draw_digit((280, 280), (40, 40, 240, 240), ink=255, paper=0, width_frac=0.03),
    "light ink on dark paper": lambda: draw_digit(ink=230, paper=40),
    "bold digit filling a white-on-black canvas": lambda: draw_digit((280, 280), (20, 20, 260, 260), ink=255, paper=0,
                                                                      width_frac=0.35),
    "bold digit filling a black-on-white canvas": lambda: draw_digit((280, 280), (20, 20, 260, 260), width_frac=0.35),
    "MNIST-like 28x28 field as a picture": lambda: Image.fromarray(to_uint8(preprocess(draw_digit()))),
    "transparent background (RGBA)": _transparent,
}


def to_uint8(field: np.ndarray) -> np.ndarray:
    return np.round(field * 255).astype(np.uint8)


@pytest.mark.parametrize("case", list(CLEAN))
def test_clean_inputs_are_read_as_before(case):
    """Evenly lit inputs keep the single paper level of the border (the earlier rule), and nothing of a
    lone digit is dropped: the field is what the earlier steps gave."""
    img = CLEAN[case]()
    ink = ink_map(img)
    if img.mode != "RGBA":
        gray = np.asarray(img.convert("L"), np.float32) / 255
        ring = float(np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])))
        assert light_paper(gray) == (ring >= 0.5)
        assert paper_level(gray, ring >= 0.5) == ring
        old = (ring - gray) / ring if ring >= 0.5 else (gray - ring) / (1 - ring)
        np.testing.assert_allclose(ink, np.clip(old, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(keep_digit(ink), ink)
    np.testing.assert_array_equal(preprocess(img), mnist_field(ink))


def test_specks_and_far_marks_are_dropped_but_a_detached_stroke_stays():
    page = np.asarray(draw_digit((400, 400), (120, 100, 280, 260)), np.float32) / 255
    page[20:26, 30:36] = 0  # a speck near the corner
    page[350:353, 10:390] = 0.3  # a long grey line across the page, away from the digit
    page[200:206, 330:336] = 0  # a small speck beside the digit, farther than a quarter of its size
    page[90:96, 150:250] = 0  # a bar just above the digit: a stroke of its own
    page[230:236, 280:400] = 0  # a stroke from the digit's foot to the page's edge, cut by the frame
    ink = keep_digit(ink_map(Image.fromarray(np.round(page * 255).astype(np.uint8))))
    assert ink[20:26, 30:36].max() == 0 and ink[350:353].max() == 0 and ink[200:206, 330:336].max() == 0
    assert ink[90:96, 150:250].min() > 0.9 and ink[230:236, 290:400].min() > 0.9


def test_helpers():
    assert otsu_threshold(np.r_[np.full(90, 0.2), np.full(10, 0.8)]) == pytest.approx(0.5, abs=0.01)
    assert otsu_threshold(np.ones(5)) == 0.5 and otsu_threshold(np.array([])) == 0.5
    rng = np.random.default_rng(0)
    a = rng.random((23, 31)).astype(np.float32)
    for k in (2, 3, 8, 13):
        for reduce in (np.max, np.min, np.mean):
            ref = reduce(np.lib.stride_tricks.sliding_window_view(np.pad(a, ((k // 2, k - 1 - k // 2), (0, 0)), mode="edge"),
                                                                  k, axis=0), axis=-1)
            np.testing.assert_allclose(_window(a, k, reduce, 0), ref, atol=1e-5)
    mask = np.zeros((9, 12), bool)
    mask[1:3, 1:3] = mask[3, 3] = True  # touching diagonally: one component
    mask[6:8, 6:11] = True
    labels = label_components(mask)
    assert len(np.unique(labels[mask])) == 2 and labels[1, 1] == labels[3, 3] and (labels[~mask] == -1).all()


def test_a_run_trained_on_an_image_folder_predicts_its_images_as_it_saw_them(tmp_path, capsys):
    """A run of ``folder:DIR`` (photos of anything, grayscale and resized, not digits): ``cnnlab predict RUN
    img.png`` took every image for a digit (ink found, centred, inverted) and refused plain ones ("no ink
    found"). Now an image is prepared as the folder's images were: the net sees what it was trained on."""
    from cnnlab.data import load_dataset
    from cnnlab.data.folder import convert_image
    from test_datasets_more import make_folder

    root = make_folder(tmp_path / "pics")
    run = tmp_path / "run"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"folder:{root}", "--epochs", "1", "--device", "cpu",
                 "--out", str(run), "--quiet"]) == 0
    predictor = Predictor.from_run(run, device="cpu")
    assert predictor.as_folder and not Predictor.from_run(tiny_checkpoint(tmp_path / "digits.pt"), device="cpu").as_folder
    files = sorted(root.glob("*/*.*"))
    for f in files:
        assert np.array_equal(np.rint(predictor.prepare(f) * 255).astype(np.uint8), convert_image(f)), f
    data = load_dataset(f"folder:{root}")
    x = torch.from_numpy(np.stack([convert_image(f) for f in files])).float().div(255).unsqueeze(1)
    with torch.inference_mode():
        want = torch.softmax(predictor.model((x - data.mean) / data.std), 1)
    got = torch.tensor([p.probabilities for p in predictor([str(f) for f in files])])
    assert torch.allclose(got, want, atol=1e-6)
    flat = tmp_path / "flat.png"
    Image.new("L", (50, 40), 128).save(flat)  # no ink at all: a digit it is not, an image of the folder's kind it is
    capsys.readouterr()
    assert main(["predict", str(run), str(flat)]) == 0 and "flat.png" in capsys.readouterr().out


# ----------------------------------------------------------------------------- thin pens


def _pen_seven(side: int, width: int) -> Image.Image:
    """A '7' drawn with a ``width`` px pen on a ``side`` px white page (a fine pen on a large canvas)."""
    im = Image.new("L", (side, side), 255)
    ImageDraw.Draw(im).line([(0.25 * side, 0.12 * side), (0.75 * side, 0.12 * side), (0.4 * side, 0.9 * side)],
                            fill=0, width=width)
    return im


def test_thin_pen_strokes_are_thickened_to_mnists_width(monkeypatch):
    """Found by probing: a digit drawn with a 1-3 px pen on a 300-1000 px canvas came out of the 20 px box faint
    and uneven (strokes 0.8 px wide, joints brighter than lines; MNIST's are 1.85), and the nets misread about a
    tenth of such digits; on a 1000 px page keep_digit also broke the 1-px strokes into dropped pieces."""
    import cnnlab.preprocessing
    from cnnlab.preprocessing import stroke_width, thicken

    for side, width in ((1000, 1), (600, 2), (300, 1)):
        field = preprocess(_pen_seven(side, width))
        assert 1.3 < stroke_width(field) < 2.6, (side, width)  # MNIST's 10th to 90th percentile: 1.36 to 2.59
        assert field.max() > 0.9  # full-strength ink (the sub-pixel centring shares the peak a little)
        with monkeypatch.context() as m:  # without the thickening: the thin, faint strokes of before
            m.setattr(cnnlab.preprocessing, "THIN_STROKE", 0.0)
            assert stroke_width(preprocess(_pen_seven(side, width))) < 1.0
    # strokes already as wide as MNIST's in the field: the crop is returned as it is, the same object
    thick = np.zeros((100, 100), np.float32)
    thick[10:90, 45:55] = 1.0
    assert thicken(thick, 20 / 100) is thick
    assert stroke_width(thick) == pytest.approx(2 * 800 / (2 * 80 + 2 * 10))


def test_a_box_or_circle_around_the_digit_is_dropped_and_a_zero_round_a_dot_is_kept():
    """Found by probing: a digit written in a form's printed box (or a circle around it) was read with the box:
    the box was taken for the digit, or joined it, and the digit came out small in the field (a digit in an 8-px
    box: 46% read right)."""
    def seven(frame: str | None, line: int = 6) -> Image.Image:  # a '7' well inside the frame, touching nothing
        im = Image.new("L", (400, 400), 255)
        ImageDraw.Draw(im).line([(132, 88), (268, 88), (180, 320)], fill=0, width=14)
        if frame:
            (ImageDraw.Draw(im).rectangle if frame == "box" else ImageDraw.Draw(im).ellipse)(
                [20, 20, 380, 380], outline=0, width=line)
        return im

    alone = preprocess(seven(None))
    for frame in ("box", "circle"):
        for line in (2, 8):
            field = preprocess(seven(frame, line))
            assert np.corrcoef(field.ravel(), alone.ravel())[0, 1] > 0.95, (frame, line)
    # a dot inside a zero is far lighter than the ring: the ring is the digit, not a frame to drop
    zero = Image.new("L", (300, 300), 255)
    draw = ImageDraw.Draw(zero)
    draw.ellipse([90, 40, 210, 260], outline=0, width=14)
    draw.ellipse([143, 143, 157, 157], fill=0)
    field = preprocess(zero)
    ys, xs = np.nonzero(field > 0.2)
    assert ys.max() - ys.min() >= 18 and xs.max() - xs.min() >= 8  # the whole ring (alone, the dot fills the box)


def _seven_on_lines(spacing: int | None, shade: int = 30, tilt: float = 0.0, squared: bool = True) -> Image.Image:
    """A '7' (14-px strokes) on a 400 px page of ruled (or squared) paper: ``shade``-dark lines, 3 px wide, every
    ``spacing`` px, the page turned ``tilt`` degrees; no lines for ``spacing`` None."""
    im = Image.new("L", (400, 400), 255)
    draw = ImageDraw.Draw(im)
    for at in range(7, 400, spacing or 10**6):
        draw.line([(0, at), (400, at)], fill=shade, width=3)
        if squared:
            draw.line([(at, 0), (at, 400)], fill=shade, width=3)
    draw.line([(132, 88), (268, 88), (180, 320)], fill=0, width=14)
    return im.rotate(tilt, resample=Image.Resampling.BICUBIC, fillcolor=255) if tilt else im


def test_lines_of_ruled_and_squared_paper_are_taken_away_but_not_where_a_stroke_crosses_them(monkeypatch):
    """Found by probing: on squared paper with lines as dark as the ink, the lines joined the digit into one
    component with the whole grid (a photo benchmark's "dark grid lines": 91.7%), and a number on ruled paper was
    one component (13 of 60 read)."""
    import cnnlab
    import cnnlab.preprocessing as pp

    net = cnnlab.predictor(model="resnet")
    alone = preprocess(_seven_on_lines(None))
    for spacing, squared, tilt in ((40, True, 0.0), (40, False, 0.0), (25, True, 0.0), (40, True, 1.5), (40, False, -2.0)):
        field = preprocess(_seven_on_lines(spacing, squared=squared, tilt=tilt))
        # the '7' with short stubs of the lines it crosses (dense squared paper: 0.80)
        assert np.corrcoef(field.ravel(), alone.ravel())[0, 1] > 0.75, (spacing, squared, tilt)
        assert net(field).label == "7"
        with monkeypatch.context() as m:  # without the step: the grid stays, and the digit is lost in it
            m.setattr(pp, "paper_lines", lambda mask: (np.zeros_like(mask),) * 2)
            before = preprocess(_seven_on_lines(spacing, squared=squared, tilt=tilt))
        assert np.corrcoef(before.ravel(), alone.ravel())[0, 1] < 0.5, (spacing, squared, tilt)


def test_a_line_of_the_paper_runs_on_past_the_strokes_it_crosses_a_digits_bar_does_not():
    from cnnlab.preprocessing import ruled_lines

    seven = np.zeros((100, 100), bool)  # a tightly cropped, thin '7': its bar spans the image, ending at its stroke
    seven[5:8, :] = True
    seven[8:100, 95:99] = True
    assert not ruled_lines(seven).any()
    ones = np.zeros((100, 100), bool)  # a tightly cropped, thin '11': its strokes span the image, and are all of it
    ones[:, 30:33] = ones[:, 70:73] = True
    assert not ruled_lines(ones).any()
    page = np.zeros((100, 100), bool)  # a stroke with a thin line through it, running on past it on both sides
    page[20:80, 48:53] = True
    page[50:52, :] = True
    lines = ruled_lines(page)
    assert lines[50:52, :45].all() and lines[50:52, 56:].all() and not lines[:, 47:54].any()
    page[10:12, :] = True  # a line like it that touches no stroke goes with it (the paper has lines)
    assert ruled_lines(page)[10:12].all()
    page[50:52, :] = False  # alone, it tells nothing: it stays (it joins nothing either)
    assert not ruled_lines(page).any()
    for shape in ((3, 400), (400, 3), (1, 1), (9, 9)):  # too small, or all ink: no line (and no error)
        assert not ruled_lines(np.ones(shape, bool)).any()


def test_a_closed_stdin_is_named_closed_not_a_terminal(ckpt, capsys, monkeypatch):
    """Found by a tester: `cnnlab predict --model resnet - <&-` said standard input "is a terminal here"."""
    monkeypatch.setattr(sys, "stdin", None)  # what Python makes of a descriptor 0 closed at its start
    assert main(["predict", str(ckpt), "-"]) == 2
    err = capsys.readouterr()[1]
    assert err == ("cnnlab: error: '-' reads one image from standard input, and standard input is closed; send the "
                   "file in: cnnlab predict --model resnet - < digit.png (or name the file)\n")
