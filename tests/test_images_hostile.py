"""Hostile and unusual images for cnnlab predict and serve (docs/reliability.md lists each fault and its test):
the cost of decoding bounded before decoding, every bit depth and mode scaled (never clipped) to the same
28x28 input, and every other fault a one-line error."""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import GifImagePlugin, Image, ImageFile

from apps_helpers import draw_digit, png_header_only, tiny_checkpoint
from cnnlab import imageio
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.imageio import BadImageError, open_image
from cnnlab.imagelimits import DEFAULT_MAX_PIXELS, max_file_bytes
from cnnlab.predict import Predictor, expand_inputs, predict_paths
from cnnlab.preprocessing import preprocess


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("run") / "last.pt").parent


@pytest.fixture(scope="module")
def predictor(run):
    return Predictor.from_run(run, device="cpu")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png16(a: np.ndarray, color_type: int, extra: bytes = b"") -> bytes:
    """A 16-bit PNG (Pillow writes none but gray): ``a`` is (H, W) for colour type 0 (gray), (H, W, 2) for
    4 (gray + alpha), (H, W, 3) for 2 (RGB), (H, W, 4) for 6 (RGBA); ``extra`` chunks go before the data."""
    h, w = a.shape[:2]
    rows = a.astype(">u2").reshape(h, -1)
    raw = b"".join(b"\0" + rows[i].tobytes() for i in range(h))  # filter type 0 on every row
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg
    return msg


def alike(got: np.ndarray, ref: np.ndarray, mean: float = 0.04) -> bool:
    """Nearly the same 28x28 input (the criterion of test_predict's variants)."""
    return float(np.abs(got - ref).mean()) < mean and float(np.corrcoef(got.ravel(), ref.ravel())[0, 1]) > 0.97


# ----------------------------------------------------------------------------- the cost of decoding


def test_pixel_cap_refuses_from_the_header_before_decoding(predictor, monkeypatch):
    """9000x9000 (81 MP) is under Pillow's own limit (89 MP): only the cap stops it, before any decoding
    (decoding it cost 620 MB, and eight uploads at once took serve to 5 GB)."""
    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the image was decoded")

    with monkeypatch.context() as m:
        m.setattr(ImageFile.ImageFile, "load", no_decoding)
        with pytest.raises(BadImageError) as info:
            predictor(png_header_only(9000, 9000), name="big.png")
        assert one_line(info) == ("big.png: 9000x9000 is 81,000,000 pixels, over the limit of 16,777,216 "
                                  "(--max-pixels); give a smaller image")
        with pytest.raises(BadImageError, match="over the limit of 10,000"):
            open_image(png_header_only(101, 100), "x.png", max_pixels=10_000)
    assert predictor.max_pixels == DEFAULT_MAX_PIXELS == 4096 * 4096
    assert open_image(encode(draw_digit((100, 100)), "PNG"), max_pixels=10_000).size == (100, 100)  # at the cap


def test_large_jpeg_is_decoded_at_reduced_scale(monkeypatch):
    """A JPEG four times the working size is decoded at 1/4 scale by libjpeg itself (Image.draft): the
    full-size pixels never exist, and no box reduction is needed after."""
    data = encode(draw_digit((4096, 3072), (1000, 500, 3000, 2500)).convert("RGB"), "JPEG", quality=90)
    reduced = []
    real_reduce = Image.Image.reduce
    monkeypatch.setattr(Image.Image, "reduce",
                        lambda self, *a, **k: reduced.append(self.size) or real_reduce(self, *a, **k))
    img = open_image(data, "photo.jpg", max_side=1024)
    assert img.size == (1024, 768) and reduced == []
    assert alike(preprocess(img), preprocess(draw_digit()))


@pytest.mark.parametrize("mode, fmt", [("P", "GIF"), ("P", "PNG"), ("1", "PNG"), ("I;16", "PNG"), ("LA", "PNG"),
                                       ("RGBA", "WEBP")])
def test_large_images_of_any_mode_are_reduced_after_decoding(predictor, mode, fmt):
    """Images over the working size are box-reduced in a mode where averaging keeps the meaning (a palette
    image, 1-bit or 16-bit could not be reduced as they are: a large GIF was a ValueError traceback)."""
    big = draw_digit((2400, 1800), (700, 300, 1900, 1500), ink=40, paper=220)
    img = open_image(encode(as_mode(big, mode), fmt), "big", max_side=1024)
    assert max(img.size) <= 1024
    assert alike(predictor(img).input_image, predictor(draw_digit(ink=40, paper=220)).input_image)


# ----------------------------------------------------------------------------- bit depths and modes


def as_mode(gray: Image.Image, mode: str) -> Image.Image:
    """The 8-bit gray image ``gray`` as an image of ``mode`` that looks the same: 16-bit values are the 8-bit
    ones times 257, 32-bit ``I`` likewise, ``F`` in 0..1, alpha opaque, 1-bit thresholded at the middle."""
    a = np.asarray(gray)
    wide = a.astype(np.uint32) * 257  # 0..255 -> 0..65535
    if mode in ("I;16", "I;16L", "I;16B"):
        return Image.frombytes(mode, gray.size, wide.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    if mode == "I":
        return Image.fromarray(wide.astype(np.int32))
    if mode == "F":
        return Image.fromarray(a.astype(np.float32) / 255)
    if mode == "1":
        return gray.point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE)
    steps = {"PA": ("P", "PA"), "La": ("LA", "La"), "RGBa": ("RGBA", "RGBa"), "HSV": ("RGB", "HSV"),
             "LAB": ("RGB", "LAB"), "RGBX": ("RGB", "RGBX")}.get(mode, (mode,))
    for step in steps:
        gray = gray.convert(step)
    return gray


#: A digit in dark gray on light gray: clipping 16-bit values at 255 turns both into white (no ink).
INK, PAPER = 40, 220

FILES = {  # name: the file's bytes, from the 8-bit gray digit
    "1-bit PNG": lambda d: encode(as_mode(d, "1"), "PNG"),
    "L PNG": lambda d: encode(d, "PNG"),
    "LA PNG": lambda d: encode(d.convert("LA"), "PNG"),
    "P PNG": lambda d: encode(d.convert("P"), "PNG"),
    "RGB PNG": lambda d: encode(d.convert("RGB"), "PNG"),
    "RGBA PNG": lambda d: encode(d.convert("RGBA"), "PNG"),
    "16-bit gray PNG (I;16)": lambda d: encode(as_mode(d, "I;16"), "PNG"),
    "16-bit gray+alpha PNG": lambda d: png16(np.stack([np.asarray(d) * 257.0, np.full(d.size[::-1], 65535)], -1), 4),
    "16-bit RGB PNG": lambda d: png16(np.repeat((np.asarray(d) * 257.0)[..., None], 3, -1), 2),
    "16-bit RGBA PNG": lambda d: png16(np.dstack([np.asarray(d) * 257.0] * 3 + [np.full(d.size[::-1], 65535)]), 6),
    "L JPEG": lambda d: encode(d, "JPEG", quality=95),
    "RGB JPEG": lambda d: encode(d.convert("RGB"), "JPEG", quality=95),
    "CMYK JPEG": lambda d: encode(d.convert("CMYK"), "JPEG", quality=95),
    "GIF": lambda d: encode(d, "GIF"),
    "1-bit BMP": lambda d: encode(as_mode(d, "1"), "BMP"),
    "L BMP": lambda d: encode(d, "BMP"),
    "RGB BMP": lambda d: encode(d.convert("RGB"), "BMP"),
    "RGBA WebP (lossless)": lambda d: encode(d.convert("RGBA"), "WEBP", lossless=True),
}
MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV", "LAB",
         "I;16", "I;16L", "I;16B", "I", "F"]


@pytest.fixture(scope="module")
def reference(predictor):
    return predictor(draw_digit(ink=INK, paper=PAPER))


@pytest.mark.parametrize("kind", list(FILES))
def test_every_file_depth_reads_as_the_same_digit(predictor, reference, kind):
    data = FILES[kind](draw_digit(ink=INK, paper=PAPER))
    got = predictor(data, name=kind)
    lossy = "JPEG" in kind or "1-bit" in kind
    assert alike(got.input_image, reference.input_image, mean=0.04 if lossy else 0.01), kind
    assert got.label == reference.label
    if not lossy:
        np.testing.assert_allclose(got.probabilities, reference.probabilities, atol=0.01)


@pytest.mark.parametrize("mode", MODES)
def test_every_pil_mode_reads_as_the_same_digit(predictor, reference, mode):
    img = as_mode(draw_digit(ink=INK, paper=PAPER), mode)
    assert img.mode == mode
    got = predictor(img)
    assert alike(got.input_image, reference.input_image, mean=0.04 if mode == "1" else 0.01), mode
    assert got.label == reference.label


def test_sixteen_bit_values_are_scaled_not_clipped():
    gray, alpha = imageio.unit_gray(as_mode(Image.new("L", (4, 4), 100), "I;16"))
    assert alpha is None and gray.dtype == np.float32 and np.allclose(gray, 100 / 255)
    for mode, top in (("I", 65535.0), ("F", 65535.0)):  # no depth: the range decides
        img = Image.fromarray(np.full((4, 4), 30000, dtype=np.int32 if mode == "I" else np.float32))
        assert np.allclose(imageio.unit_gray(img)[0], 30000 / top)
    assert np.allclose(imageio.unit_gray(Image.fromarray(np.full((4, 4), 200, np.int32)))[0], 200 / 255)
    stretched = imageio.unit_gray(Image.fromarray(np.array([[-5.0, 95.0e6]], np.float32)))[0]
    assert stretched.min() == 0 and stretched.max() == 1


def test_transparent_colour_of_a_16_bit_png_is_its_background(predictor, reference):
    """A 16-bit gray PNG whose paper is the transparent colour (tRNS): the opacity is the ink (Pillow's own
    16-bit to RGBA conversion ignores the key)."""
    d = np.asarray(draw_digit(ink=INK, paper=PAPER)).astype(np.uint16) * 257
    data = png16(d, 0, extra=chunk(b"tRNS", struct.pack(">H", PAPER * 257)))
    assert alike(predictor(data).input_image, reference.input_image, mean=0.02)


def test_nan_in_a_float_image_is_a_one_line_error(predictor):
    img = Image.fromarray(np.full((28, 28), np.nan, dtype=np.float32))
    with pytest.raises(BadImageError) as info:
        predictor(img, name="nan.tif")
    assert "NaN or infinite" in one_line(info)


# ----------------------------------------------------------------------------- hostile files


def test_animated_gif_frames_are_never_counted_or_decoded(predictor, monkeypatch):
    """Thousands of frames: only the first is read; counting them (n_frames) would read them all."""
    rng = np.random.default_rng(0)
    first = draw_digit((64, 64), (8, 8, 56, 56))
    noise = [Image.fromarray(rng.integers(0, 2, (64, 64), dtype=np.uint8) * 255) for _ in range(2000)]
    data = encode(first, "GIF", save_all=True, append_images=noise)
    frames = []
    real_seek = GifImagePlugin.GifImageFile._seek
    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_seek",
                        lambda self, frame, *a, **k: frames.append(frame) or real_seek(self, frame, *a, **k))
    got = predictor(data, name="anim.gif")
    assert set(frames) == {0}
    assert alike(got.input_image, predictor(first).input_image, mean=0.001)


def test_text_chunk_bombs_are_refused_and_big_text_is_ignored(predictor):
    ok = encode(draw_digit(), "PNG")
    bomb = ok[:33] + chunk(b"zTXt", b"comment\0\0" + zlib.compress(b"a" * 50_000_000)) + ok[33:]  # 50 MB from 50 KB
    with pytest.raises(BadImageError) as info:
        open_image(bomb, "bomb.png")
    assert "Decompressed data too large" in one_line(info)
    big_text = ok[:33] + chunk(b"tEXt", b"comment\0" + b"a" * 3_000_000) + ok[33:]
    np.testing.assert_allclose(predictor(big_text).probabilities, predictor(ok).probabilities, atol=1e-6)


def exif_blob(entries: int, data_size: int, orientation: int = 3) -> bytes:
    """EXIF (big-endian TIFF) whose first IFD holds an Orientation tag and ``entries`` tags that all claim
    the whole ``data_size``-byte data block: Pillow would read it once per tag."""
    n = entries + 1
    data_at = 8 + 2 + 12 * n + 4
    ifd = struct.pack(">H", n) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    ifd += b"".join(struct.pack(">HHII", 0x8000 + i, 7, data_size, data_at) for i in range(entries))
    return b"MM\0*" + struct.pack(">I", 8) + ifd + struct.pack(">I", 0) + b"\0" * data_size


def test_huge_exif_block_is_bounded_and_quiet(predictor):
    """A 2.4 MB EXIF block whose 30,000 tags each claim 2 MB: the orientation is still applied, nothing
    is read 30,000 times, and none of Pillow's 60,000 warnings ("Tag data larger than file") reaches stderr."""
    upside_down = encode(draw_digit().rotate(180), "PNG")
    data = upside_down[:33] + chunk(b"eXIf", exif_blob(30_000, 2_000_000)) + upside_down[33:]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = predictor(data, name="exif.png")
    assert caught == []
    assert alike(got.input_image, predictor(draw_digit()).input_image, mean=0.001)


def _gif_header_only(w: int, h: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HH", w, h) + b"\0\0\0" + b"," + struct.pack("<HHHH", 0, 0, w, h) + b"\0"
            + b"\x02\x02\x44\x01\0;")


def _bmp_header_only(w: int, h: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 62, 0, 0, 62) + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize("data, fmt", [
    (png_header_only(0, 10), "PNG"), (png_header_only(10, 0), "PNG"), (_gif_header_only(0, 0), "GIF"),
    (_bmp_header_only(0, 10), "BMP"),
])
def test_image_with_no_pixels(data, fmt):
    with pytest.raises(BadImageError) as info:
        open_image(data, "zero")
    assert one_line(info) == f"zero: a damaged {fmt} header (no pixels, or not readable); re-save or re-export the file"


def test_extreme_aspect_ratio_is_answered(predictor):
    img = Image.new("L", (20_000, 3), 255)
    img.paste(0, (9_000, 0, 11_000, 3))
    got = predictor(encode(img, "PNG"), name="line.png")  # reduced to 1000x1, then preprocessed as usual
    assert got.input_image.shape == (28, 28) and got.input_image.max() > 0.4  # one row, centred between two


def test_paths_that_are_no_regular_files(tmp_path):
    with pytest.raises(BadImageError) as info:
        open_image(tmp_path)
    assert one_line(info).endswith("a directory, not an image file; give an image file")
    with pytest.raises(BadImageError, match="not a regular file"):
        open_image("/dev/null")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    outcome = []  # opening a FIFO must not wait for a writer

    def open_fifo():
        try:
            open_image(fifo)
        except BadImageError as err:
            outcome.append(str(err))

    t = threading.Thread(target=open_fifo, daemon=True)
    t.start()
    t.join(30)
    assert outcome == [f"{fifo}: not a regular file (a pipe, socket or device); give an image file"]


def test_permission_and_read_errors_are_one_line(tmp_path, monkeypatch, run, capsys):
    """Root reads everything, so the OS errors are faked where cnnlab meets them."""
    path = tmp_path / "locked.png"
    draw_digit().save(path)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as m:
        m.setattr(imageio.os, "open", denied)
        with pytest.raises(BadImageError) as info:
            open_image(path)
        message = f"{path}: cannot open it (Permission denied); check the path and the file's permissions"
        assert one_line(info) == message
        assert main(["predict", str(run), str(path)]) == 1
        err = capsys.readouterr().err
        assert err.splitlines()[0] == f"cnnlab: skipped {message}"
        assert "Traceback" not in err
    with monkeypatch.context() as m:
        m.setattr(imageio, "open", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, "Input/output error")),
                  raising=False)
        with pytest.raises(BadImageError, match=r"cannot read it \(Input/output error\)"):
            open_image(path)
    with monkeypatch.context() as m:  # a folder argument the system will not list
        m.setattr(Path, "iterdir", denied)
        paths, failures = expand_inputs([str(tmp_path)])
        assert paths == [] and [f.error for f in failures] == [
            f"{tmp_path}: cannot read it (Permission denied); check the path and its permissions"]


def test_name_too_long_is_one_line(predictor, tmp_path):
    name = str(tmp_path / ("a" * 300 + ".png"))  # over NAME_MAX: the system refuses to look it up
    preds, failures = predict_paths(predictor, [name])
    assert preds == [] and len(failures) == 1 and "(File name too long)" in failures[0].error


def test_file_larger_than_any_image_within_the_cap_is_not_read(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    limit = max_file_bytes(784)
    with open(path, "wb") as fh:  # sparse: costs no disk
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.truncate(limit + 1)
    with pytest.raises(BadImageError) as info:
        open_image(path, "huge.png", max_pixels=784)
    assert one_line(info) == (f"huge.png: file of {limit + 1:,} bytes, larger than any image within the pixel "
                              f"limit can be ({limit:,} bytes); give a smaller image")


def test_control_characters_in_names_stay_on_one_line(tmp_path, run, capsys):
    bad = tmp_path / "two\nlines.png"
    bad.write_bytes(b"not an image")
    good = tmp_path / "ok\r.png"
    draw_digit().save(good, "PNG")
    assert main(["predict", str(run), str(bad), str(good)]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 2 and "two\\nlines.png: not an image" in err  # the failure, and the count
    assert out.count("\n") == 1 and out.startswith(str(tmp_path / "ok\\r.png"))
    assert str(BadImageError("a\nb")) == "a\\nb"


# ----------------------------------------------------------------------------- the --max-pixels option


def test_max_pixels_option(run, tmp_path, capsys, monkeypatch):
    path = tmp_path / "digit.png"
    draw_digit().save(path)  # 300x300
    assert main(["predict", str(run), str(path), "--max-pixels", "10000", "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["error"] == (f"{path}: 300x300 is 90,000 pixels, over the limit of 10,000 (--max-pixels); "
                                "give a smaller image")
    assert main(["predict", str(run), str(path), "--max-pixels", "90000"]) == 0
    capsys.readouterr()
    for bad in ("5", "200000000"):
        assert main(["predict", str(run), str(path), "--max-pixels", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--max-pixels must be a whole number from 784 to 89,478,485" in err
    with pytest.raises(CnnlabError, match="^max_pixels must be"):  # the API's argument: its caller typed no flag
        Predictor.from_run(run, max_pixels=10)

    import cnnlab.cli.serve as cli_serve

    seen = {}
    monkeypatch.setattr(cli_serve, "run_server", lambda run, **kw: seen.update(kw))
    assert main(["serve", str(run), "--port", "0"]) == 0 and seen["max_pixels"] == DEFAULT_MAX_PIXELS  # (--port 0:
    # the port is tried before torch's import, and 8000 may be taken here)
    assert main(["serve", str(run), "--max-pixels", "1000000", "--port", "0"]) == 0 and seen["max_pixels"] == 1_000_000
    monkeypatch.undo()
    assert main(["serve", str(run), "--max-pixels", "5", "--port", "0"]) == 2  # refused before any server starts
    assert "--max-pixels 5 is below the drawing page's 280x280 canvas (78,400 pixels)" in capsys.readouterr().err


def test_a_phone_photo_a_pdf_or_an_svg_is_named_with_the_way_to_convert_it():
    """Found by probing: an iPhone's HEIC photo, a scanned PDF and an SVG drawing were all "not an image (no PNG,
    JPEG, BMP, GIF or WebP data found)": the first is an image, and none of them said what to do."""
    cases = {
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200): "a HEIC/HEIF photo (the format of iPhones",
        b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1heic" + bytes(200): "convert it to JPEG or PNG (an iPhone saves",
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj" + bytes(100): "a PDF document, not an image; export the page as PNG",
        b'\xef\xbb\xbf<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>': "an SVG drawing (lines, not",
        b'<svg width="28" height="28"><path d="M14 4 L14 24"/></svg>': "export it as PNG",
        b"just some text, not a picture": "not an image (no PNG, JPEG, BMP, GIF or WebP data found)",
    }
    for data, fragment in cases.items():
        with pytest.raises(BadImageError) as info:
            open_image(data, "upload")
        assert fragment in str(info.value) and "\n" not in str(info.value), data[:20]
