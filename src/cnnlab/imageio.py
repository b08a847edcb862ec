"""Opening untrusted image files, for prediction and for image-folder datasets alike.

:func:`open_image` bounds what a file can cost *before* it decodes anything, then decodes it strictly:

- only an allow-list of formats (:data:`ALLOWED_FORMATS`), recognised by content, not by suffix;
- a path must name a regular file (not a directory, pipe, socket or device; opened without blocking), and
  it is read only up to the largest size an image within the pixel cap can have
  (:func:`cnnlab.imagelimits.max_file_bytes`); an OS error (permissions, a name too long) is a refusal too;
- the width x height that the header declares must be at least 1x1 and within ``max_pixels`` (when given),
  checked before decoding; Pillow's own limit (``Image.MAX_IMAGE_PIXELS``, never raised or disabled here)
  is kept too, and its decompression-bomb *warning* is an error here;
- only the first frame of an animated GIF or WebP is decoded, and the frames are never counted (counting
  reads the whole file: thousands of frames cost seconds);
- with ``max_side``: a JPEG at least twice that size is decoded at 1/2, 1/4 or 1/8 scale by the decoder
  itself (``Image.draft``: at least ``max_side`` still), and whatever is still larger is box-reduced by an
  integer factor (:func:`shrink`) right after decoding;
- decoding runs with Pillow's truncated-image tolerance switched off (whatever the caller set) and its
  warnings about odd metadata silenced (they would be stray lines on stderr); any decoder failure is a
  refusal, never a traceback;
- the EXIF orientation is applied, in place and after the reduction (no full-size copy).

Every refusal is a one-line :class:`BadImageError` that names the file, the problem and the fix. The machine
running short while a file is read or decoded (no file descriptor left, ``EMFILE``/``ENFILE``; no memory,
``ENOMEM``/``MemoryError``) is no fault of the file: a :class:`ResourceError` names the resource and its fix
(``cnnlab serve`` answers it 503, "busy, try again"), never "damaged or truncated image" (Pillow opens the
modules of its formats on first use, so a process out of descriptors failed there).

:func:`unit_gray` reads an image of any mode Pillow produces (1, L, P, RGB, CMYK, YCbCr, 16-bit ``I;16``,
32-bit ``I`` and ``F``, with or without alpha) as float grayscale in 0..1 plus its opacity, *scaling* each
bit depth (``Image.convert("L")`` clips 16-bit values at 255: a 16-bit digit becomes a white square), and a 16-bit
colour PNG's transparent colour at the 8 bits its pixels are decoded to (:func:`depth_of_key`).
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import stat
import threading
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from cnnlab.errors import CnnlabError, first_line, printable, short_repr
from cnnlab import fileio
from cnnlab.imagelimits import DEFAULT_MAX_PIXELS, MIN_MAX_PIXELS, max_file_bytes, open_file_limit

__all__ = ["ALLOWED_FORMATS", "ALLOWED_TEXT", "DEFAULT_MAX_PIXELS", "FORMAT_SUFFIXES", "IMAGE_SUFFIXES",
           "SIXTEEN_BIT", "BadImageError", "ResourceError", "check_max_pixels", "check_pixels", "formats_text",
           "is_short_of_resources", "open_file_limit", "open_image", "printable", "short_of", "shrink", "suffixes_for",
           "unit_gray", "upright"]

#: The file suffixes (lower case) of each Pillow format: the one table every scan for images derives
#: its suffixes from, so that a format and its suffixes are never listed apart.
FORMAT_SUFFIXES = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "BMP": (".bmp",),
    "GIF": (".gif",),
    "WEBP": (".webp",),
}


def suffixes_for(formats: tuple[str, ...]) -> tuple[str, ...]:
    """The file suffixes of these Pillow formats, in their order: ``("PNG", "JPEG")`` -> ``(".png", ".jpg", ".jpeg")``."""
    return tuple(suffix for fmt in formats for suffix in FORMAT_SUFFIXES[fmt])


#: Pillow format names accepted from users, and the file suffixes a directory is scanned for.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
IMAGE_SUFFIXES = suffixes_for(ALLOWED_FORMATS)

_FORMAT_NAMES = {"WEBP": "WebP"}


def formats_text(formats: tuple[str, ...]) -> str:
    """``("PNG", "JPEG", "BMP")`` -> ``"PNG, JPEG or BMP"``, for messages."""
    names = [_FORMAT_NAMES.get(f, f) for f in formats]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


ALLOWED_TEXT = formats_text(ALLOWED_FORMATS)  # "PNG, JPEG, BMP, GIF or WebP"


class BadImageError(CnnlabError):
    """A file that is not an acceptable image; the message names the file, the problem and the fix.
    ``reason`` is the message without the file's name, when it was raised here. The message is always
    one line: control characters in it (from a file's name) are escaped."""

    reason: str | None = None

    def __init__(self, message: str = ""):
        super().__init__(printable(str(message)))


def _bad(name: str, reason: str) -> BadImageError:
    err = BadImageError(f"{name}: {reason}")
    err.reason = reason
    return err


class ResourceError(CnnlabError):
    """The machine, not the image: the process ran out of file descriptors or memory while the file was read or
    decoded. Not a :class:`BadImageError` (the same file may read fine a moment later, or with a higher limit);
    ``short_of`` says what ran out in a few words (``too many open files``, ``out of memory``)."""

    def __init__(self, message: str, short_of: str):
        super().__init__(printable(message))
        self.short_of = short_of


#: errno values that say the process or the machine ran out of something, not that the file is bad.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def is_short_of_resources(err: BaseException) -> bool:
    """Whether ``err`` says the process ran out of file descriptors or memory (not that a file is bad)."""
    return isinstance(err, MemoryError) or (isinstance(err, OSError) and err.errno in RESOURCE_ERRNOS)


def short_of(name: str, err: BaseException) -> ResourceError:
    """The one-line :class:`ResourceError` for ``err`` (see :func:`is_short_of_resources`), naming the fix."""
    code = getattr(err, "errno", None)
    if code == errno.EMFILE:
        limit = open_file_limit()
        held = f"this process may have {limit:,} open at once" if limit else "the process's limit"
        return ResourceError(f"{name}: cannot be read now: too many open files ({held}: ulimit -n); raise the limit "
                             f"(ulimit -n {max(4096, 4 * (limit or 0))}) or open fewer files at once, and try again",
                             "too many open files")
    if code == errno.ENFILE:
        return ResourceError(f"{name}: cannot be read now: too many open files on this machine (the system's limit); "
                             "close some programs or raise fs.file-max, and try again", "too many open files")
    return ResourceError(f"{name}: not enough memory to read or decode it now; free some memory (or lower "
                         "--max-pixels) and try again", "out of memory")


def check_max_pixels(max_pixels: int, what: str = "max_pixels") -> int:
    """``max_pixels`` when it is a usable pixel cap (a whole number from one 28x28 field up to Pillow's own
    limit, above which Pillow refuses anyway), else a one-line :class:`CnnlabError` naming it as ``what``: the
    API's argument ``max_pixels``, or the CLI's ``--max-pixels`` (an API caller typed no flag)."""
    ceiling = Image.MAX_IMAGE_PIXELS
    if (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < MIN_MAX_PIXELS
            or (ceiling and max_pixels > ceiling)):
        upper = f"{ceiling:,} (Pillow's own limit)" if ceiling else "any"
        raise CnnlabError(f"{what} must be a whole number from {MIN_MAX_PIXELS:,} to {upper}, got {max_pixels!r}")
    return max_pixels


#: Guards the process-wide settings :func:`_strict_decoding` changes while any thread decodes (how many do now, and
#: what the caller had before the first of them).
_SETTINGS_LOCK = threading.Lock()
_decoding = 0
_saved_settings: tuple = ()


@contextlib.contextmanager
def _strict_decoding():
    """Refuse truncated images while decoding, and silence Pillow's warnings (stray lines on stderr: "Possibly
    corrupt EXIF data"), except the decompression-bomb warning, which is an error (Pillow only *warns* between
    MAX_IMAGE_PIXELS and twice that). Both are process-wide (``LOAD_TRUNCATED_IMAGES``, ``warnings.filters``):
    they are set when the first thread starts decoding and put back as the caller had them when the last one
    ends. (``warnings.catch_warnings`` per image, from several threads at once, restored each other's lists: after
    concurrent predictions every later warning of the process was dropped, for good, 4 runs in 5.)"""
    global _decoding, _saved_settings
    with _SETTINGS_LOCK:
        if _decoding == 0:
            _saved_settings = (warnings.filters, ImageFile.LOAD_TRUNCATED_IMAGES)
            warnings.filters = list(warnings.filters)
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _decoding += 1
    try:
        yield
    finally:
        with _SETTINGS_LOCK:
            _decoding -= 1
            if _decoding == 0:
                warnings.filters, ImageFile.LOAD_TRUNCATED_IMAGES = _saved_settings
                getattr(warnings, "_filters_mutated", lambda: None)()  # as catch_warnings does: caches dropped


# ----------------------------------------------------------------------------- reading


def _read_path(path: Path, name: str, limit: int, allowed: str) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; anything else is a refusal."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it changes nothing for a regular file
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise _bad(name, "no such file; check the path") from None
    except IsADirectoryError:
        raise _bad(name, "a directory, not an image file; give an image file") from None
    except OSError as err:
        if is_short_of_resources(err):
            raise short_of(name, err) from None
        if err.errno == errno.ELOOP:  # as every command says a loop of links, or too many (fileio.link_trouble)
            trouble = fileio.link_trouble(path)
            what, fix = (trouble.what, trouble.fix) if trouble else (fileio.reason(err), fileio.usual_fix(err))
            raise _bad(name, f"cannot be read ({what}); {fix}") from None
        raise _bad(name, f"cannot open it ({err.strerror or type(err).__name__}); "
                         "check the path and the file's permissions") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _bad(name, "a directory, not an image file; give an image file")
        if not stat.S_ISREG(st.st_mode):
            raise _bad(name, "not a regular file (a pipe, socket or device); give an image file")
        if st.st_size > limit:
            raise _too_large(name, st.st_size, limit)
        with open(fd, "rb", closefd=False) as fh:
            data = fileio.read_at_most(fh, limit + 1)
    except OSError as err:
        if is_short_of_resources(err):
            raise short_of(name, err) from None
        raise _bad(name, f"cannot read it ({err.strerror or type(err).__name__}); check the file and its "
                         "permissions") from None
    finally:
        os.close(fd)
    if not data:
        raise _bad(name, f"empty file (0 bytes); give a {allowed} image")
    if len(data) > limit:  # it grew while being read
        raise _too_large(name, len(data), limit)
    return data


def _too_large(name: str, size: int, limit: int) -> BadImageError:
    return _bad(name, f"file of {size:,} bytes, larger than any image within the pixel limit can be "
                      f"({limit:,} bytes); give a smaller image")


def _read_source(source: str | Path | bytes | BinaryIO, name: str | None, limit: int,
                 allowed: str) -> tuple[bytes, str]:
    """``(data, name)`` of a path, bytes or binary file object, refusing empty and oversized data."""
    if isinstance(source, (str, Path)):
        name = name or str(source)
        return _read_path(Path(source), name, limit, allowed), name
    name = name or "upload"
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = source if isinstance(source, bytes) else bytes(source)  # bytes are not copied
    else:
        data = _read_file_object(source, name, limit)
    if not data:
        raise _bad(name, f"empty file (0 bytes); give a {allowed} image")
    if len(data) > limit:
        raise _too_large(name, len(data), limit)
    return data, name


def _read_file_object(f: BinaryIO, name: str, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of an open file (one past the limit tells an oversized file), read in chunks
    (:func:`cnnlab.fileio.read_at_most`: not the limit's memory up front)."""
    start = _position(f)
    try:
        data = fileio.read_at_most(f, limit + 1)
    except (OSError, ValueError) as err:  # a closed file is ValueError; a file opened for writing, OSError
        why = "it is not open for reading" if isinstance(err, io.UnsupportedOperation) else first_line(err)
        raise _bad(name, f"cannot be read ({why}); give a file open for reading ('rb')") from None
    if isinstance(data, str):
        raise _bad(name, "a file opened in text mode; open it in binary mode: open(path, 'rb')")
    if not isinstance(data, (bytes, bytearray)):
        raise _bad(name, f"its read() gave a {type(data).__name__}, not bytes; give a binary file, or the bytes")
    if not data and start:  # read from where it stands: a file read once already has nothing left
        raise _bad(name, f"nothing left to read (it stands at its end, byte {start:,}); seek(0) first if it was "
                         "read already, or give the file afresh")
    return bytes(data)


def _position(f) -> int:
    """Where an open file stands (0 for a pipe, or a file that cannot say)."""
    try:
        return int(f.tell()) if f.seekable() else 0
    except (AttributeError, OSError, ValueError, TypeError):
        return 0


# ----------------------------------------------------------------------------- loading


def open_image(source: str | Path | bytes | BinaryIO, name: str | None = None,
               formats: tuple[str, ...] = ALLOWED_FORMATS, *, max_pixels: int | None = None,
               max_side: int | None = None) -> Image.Image:
    """Open and decode an untrusted image, its cost bounded before decoding (see the module docstring).

    ``source`` is a path, the file's bytes, or a binary file object; ``name`` is what messages call it.
    ``max_pixels`` caps width x height as the header declares them (None: Pillow's limit only);
    ``max_side``, when given, lets the decoded image be reduced to a longer side of at least about that
    (JPEG drafting, then an integer box reduction): enough for callers that scale the image down anyway.
    Returns the first frame, decoded and upright. Raises :class:`BadImageError` for: a missing, unreadable,
    empty or oversized file, something other than a regular file, data that is no image, a format
    outside ``formats``, a truncated or damaged file, an image with no pixels or over the pixel cap,
    and a decompression bomb; :class:`ResourceError` when the process runs out of file descriptors or memory.
    """
    allowed = formats_text(formats)
    cap = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    data, name = _read_source(source, name, max_file_bytes(cap or DEFAULT_MAX_PIXELS), allowed)
    with _strict_decoding():
        try:
            img = Image.open(io.BytesIO(data), formats=formats)
            _check_header(img, name, formats, max_pixels)
            if max_side:
                _draft(img, max_side)
            depth_of_key(img)  # before decoding: the decoder's raw mode tells a 16-bit PNG
            # decode now, the first frame only (n_frames is never asked: it would read every frame);
            # a truncated file fails here, inside the guarded block
            img.load()
            if max_side:
                img = shrink(img, max_side, name)
            ImageOps.exif_transpose(img, in_place=True)  # a phone photo stored sideways: upright, no copy
        except BadImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            size = _header_size(data, formats) if max_pixels is not None else None
            if size:  # over Pillow's limit is over the cap too (check_max_pixels): say it as for any size over it
                check_pixels(name, size[0], size[1], max_pixels)
            raise _bad(
                name, f"refused as a possible decompression bomb ({str(err).split('.')[0]}); "
                "give an image of at most a few megapixels"
            ) from None
        except UnidentifiedImageError:
            raise _bad(name, _identify(data, allowed)) from None
        except Exception as err:  # noqa: BLE001 - any decoder failure on untrusted bytes is a refusal, not a traceback
            if is_short_of_resources(err):  # the process's fault (a plugin's module not opened, no memory), not the file's
                raise short_of(name, err) from None
            raise _bad(name, f"damaged or truncated image ({first_line(err)[:120]}); re-save or re-export the file") from None
    return img


def upright(img: Image.Image, name: str = "image") -> Image.Image:
    """A PIL image a caller opened, turned as its EXIF orientation says (as :func:`open_image` turns a file): a
    turned copy when the tag asks for a turn, else ``img`` itself (the caller's image is never changed). EXIF that
    cannot be read is a :class:`BadImageError`, as in a file."""
    try:
        with _strict_decoding():  # "Possibly corrupt EXIF data" and the like, silenced (thread-safe)
            if img.getexif().get(ORIENTATION_TAG, 1) in (None, 1):
                return img
            return ImageOps.exif_transpose(img)
    except Exception as err:  # noqa: BLE001 - damaged metadata of untrusted bytes is a refusal, not a traceback
        if is_short_of_resources(err):
            raise short_of(name, err) from None
        raise _bad(name, f"damaged or truncated image ({first_line(err)[:120]}); re-save or re-export the file") from None


#: The EXIF tag that says how a photo stored sideways is to be turned (1: as stored).
ORIENTATION_TAG = 0x0112


def _check_header(img: Image.Image, name: str, formats: tuple[str, ...], max_pixels: int | None) -> None:
    """Refuse, from the header alone, a format outside ``formats``, no pixels, or more than ``max_pixels``."""
    # defensive: formats= already restricts the plugins; MPO is how Pillow's JPEG plugin reports a
    # multi-picture JPEG, as many phone cameras write
    if img.format not in formats + (("MPO",) if "JPEG" in formats else ()):
        raise _bad(name, f"{img.format} images are not accepted; convert it to {formats_text(formats)}")
    w, h = img.size
    if w < 1 or h < 1:
        raise _bad(name, f"the image has no pixels ({w}x{h}); give a real image")
    if max_pixels is not None:
        check_pixels(name, w, h, max_pixels)


def _header_size(data: bytes, formats: tuple[str, ...]) -> tuple[int, int] | None:
    """The width and height that the header of ``data`` declares, read by the format's own plugin, for an image
    that ``Image.open`` refused as a decompression bomb before it could tell them (nothing is decoded); None when
    no plugin of ``formats`` reads the header."""
    for fmt in formats:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        try:
            if factory is None or (accept and not accept(data[:16])):
                continue
            with _strict_decoding():
                return tuple(factory(io.BytesIO(data), None).size)
        except Exception:  # noqa: BLE001 - not this format's header: try the next one
            continue
    return _webp_size(data) if "WEBP" in formats else None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """A WebP file's canvas size from its first chunk (Pillow's WebP plugin checks the pixel count inside its own
    open, so :func:`_header_size` could not ask it): VP8X (extended), VP8L (lossless) or VP8 (lossy)."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


def check_pixels(name: str, w: int, h: int, max_pixels: int, limit: str = "--max-pixels",
                 fix: str = "give a smaller image") -> None:
    """Refuse an image of more than ``max_pixels`` (``limit``: how the user sets it), in one line."""
    if w * h > max_pixels:
        raise _bad(name, f"{w}x{h} is {w * h:,} pixels, over the limit of {max_pixels:,} ({limit}); {fix}")


def _draft(img: Image.Image, max_side: int) -> None:
    """Let a JPEG at least twice ``max_side`` be decoded at 1/2, 1/4 or 1/8 scale (no smaller than
    ``max_side``): the decoder then never holds the full-size pixels. Other formats are left as they are."""
    w, h = img.size
    if img.format in ("JPEG", "MPO") and max(w, h) >= 2 * max_side:
        scale = max_side / max(w, h)
        img.draft(img.mode, (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))


#: The first bytes of each accepted format, to tell a damaged header of one from no image at all.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"), (b"GIF8", "GIF"),
               (b"RIFF", "WebP"))


def _identify(data: bytes, allowed: str) -> str:
    """Why Pillow could not open ``data`` with the allowed formats: another format, a damaged header of
    an allowed one, or no image at all.

    Only the header is parsed (``Image.open`` is lazy and nothing is decoded), to name the format.
    """
    try:
        with _strict_decoding(), Image.open(io.BytesIO(data)) as other:
            fmt = other.format
    except Exception:  # noqa: BLE001 - any failure here just means "not an image"
        fmt = None
    if fmt:
        return f"{fmt} images are not accepted; convert it to {allowed}"
    for signature, sniffed in _SIGNATURES:
        if data.startswith(signature) and (sniffed != "WebP" or data[8:12] == b"WEBP"):
            return f"a damaged {sniffed} header (no pixels, or not readable); re-save or re-export the file"
    return _foreign(data) or f"not an image (no {allowed} data found); give an image file"


#: ISO media brands of HEIC/HEIF pictures (the ``ftyp`` box at byte 4): what iPhones and many Android phones save.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def _foreign(data: bytes) -> str | None:
    """What a common file that no plugin opens is (a phone's HEIC photo, a PDF scan, an SVG drawing) and how to
    convert it, for a message better than "not an image"; None for anything else."""
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return ("a HEIC/HEIF photo (the format of iPhones and many phones), which cnnlab cannot decode; convert it "
                "to JPEG or PNG (an iPhone saves JPEGs with Settings > Camera > Formats > Most Compatible)")
    if data.startswith(b"%PDF-"):
        return "a PDF document, not an image; export the page as PNG or JPEG"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<svg", b"<?xml")) and b"<svg" in head:
        return "an SVG drawing (lines, not pixels); export it as PNG"
    return None


# ----------------------------------------------------------------------------- pixels

#: Modes whose pixels box-reduce meaningfully as they are (averaging palette indices, or a transparent
#: colour key, does not).
_REDUCIBLE = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F"})
#: Pillow's modes for 16-bit grayscale (a 16-bit PNG opens as ``I;16``).
SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def shrink(img: Image.Image, max_side: int, name: str = "image") -> Image.Image:
    """``img`` box-reduced by the smallest integer factor that brings its longer side to at most
    ``max_side``; ``img`` itself when it fits already.

    Modes where averaging would change the meaning are converted first, keeping their values: 1-bit to
    ``L``, palette to ``RGB`` (``RGBA`` with transparency), 16-bit gray to 32-bit ``I`` (not clipped),
    a transparent colour key to an alpha channel; anything else to 8-bit gray (and alpha) via :func:`unit_gray`.
    """
    factor = math.ceil(max(img.size) / max_side)
    if factor <= 1:
        return img
    with _strict_decoding():  # Pillow's warnings silenced, as in unit_gray
        return _reducible(img, name).reduce(factor)


def _reducible(img: Image.Image, name: str) -> Image.Image:
    mode, keyed = img.mode, "transparency" in img.info
    if mode in _REDUCIBLE and not keyed:
        return img
    if mode in ("P", "PA", "L") or (mode == "RGB" and (not keyed or _is_eight_bit_key(img.info["transparency"]))):
        return img.convert("RGBA" if keyed or mode == "PA" else "RGB")
    if mode in ("1", "HSV", "LAB") and not keyed:
        return img.convert("L" if mode == "1" else "RGB")
    if mode in SIXTEEN_BIT and not keyed:
        return img.convert("I")
    gray, alpha = unit_gray(img, name)  # the rest (a 16-bit colour key, odd modes): gray and opacity, 8 bits each
    to8 = [Image.fromarray(np.round(a * 255).astype(np.uint8)) for a in ((gray,) if alpha is None else (gray, alpha))]
    return to8[0] if len(to8) == 1 else Image.merge("LA", to8)


def unit_gray(img: Image.Image, name: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """``(gray, alpha)``: the image as float32 ``(H, W)`` grayscale in 0..1, and its opacity in 0..1
    (None when it has no alpha channel and no transparent colour).

    Each bit depth is scaled, never clipped: 1-bit is 0 or 1; 8-bit (L, P, RGB, CMYK, YCbCr..., colour
    through Pillow's ITU-R 601 luma) is divided by 255; 16-bit ``I;16*`` by 65535. 32-bit ``I`` and
    ``F`` carry no depth, so their range decides: values in 0..255 are divided by 255, in 0..65535 by
    65535 (as the ``folder:`` datasets read them), ``F`` in 0..1 is taken as is, and any other range is
    stretched to 0..1. NaN or infinite ``F`` pixels are a :class:`BadImageError`.

    The opacity comes from an alpha band, or from a transparent colour taken at the depth the pixels were decoded
    to (:func:`depth_of_key`); a transparent colour that no pixel of the mode can be is a :class:`BadImageError`.
    """
    mode = img.mode
    try:
        with _strict_decoding():  # Pillow's warnings silenced: a palette's transparency in bytes is one, on stderr
            return _gray(img, mode, name), _alpha(img)
    except (ValueError, TypeError, OverflowError):
        if "transparency" not in img.info:
            raise
        # a key that no pixel of this mode can be (a caller's image: Pillow reads a file's in its mode's shape)
        raise BadImageError(f"{name}: its transparent colour {short_repr(img.info['transparency'])} does not fit an "
                            f"image of mode {mode}; save it with an alpha channel, or without the transparent "
                            "colour") from None


def _gray(img: Image.Image, mode: str, name: str) -> np.ndarray:
    """:func:`unit_gray`'s grayscale, each bit depth scaled."""
    if mode in SIXTEEN_BIT:
        return np.asarray(img).astype(np.float32) / 65535.0
    if mode in ("I", "F"):
        return _wide_gray(np.asarray(img), mode, name)
    if mode == "1":
        return np.asarray(img).astype(np.float32)
    return np.asarray(_luma(img, name), dtype=np.float32) / 255.0


def _wide_gray(a: np.ndarray, mode: str, name: str) -> np.ndarray:
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise BadImageError(f"{name}: the image holds NaN or infinite values; give finite pixels")
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if lo >= 0:
        for top in ((1.0,) if mode == "F" else ()) + (255.0, 65535.0):
            if hi <= top:
                return a / np.float32(top)
    return (a - np.float32(lo)) / np.float32(max(hi - lo, 1e-12))


def _luma(img: Image.Image, name: str) -> Image.Image:
    """8-bit luminance of an 8-bit image of any mode (some, such as premultiplied ``La``, need a step between)."""
    for steps in (("L",), ("RGB", "L"), ("LA", "L")):
        try:
            out = img
            for step in steps:
                out = out.convert(step)
            return out
        except ValueError:
            continue
    raise BadImageError(f"{name}: images of mode {img.mode} cannot be read as grayscale; save it as RGB or grayscale")


def depth_of_key(img: Image.Image) -> None:
    """Before decoding: a 16-bit colour PNG's transparent colour (``tRNS``) made the 8-bit colour its pixels are
    decoded to. Pillow decodes 16-bit RGB to 8-bit ``RGB`` (each sample's high byte) but keeps the key in 16 bits:
    compared with the pixels, ``(65535, 65535, 65535)`` was an OverflowError (a traceback from predict, a 500 from
    serve), and a key under 256 was taken for an 8-bit one (black pixels of a key of 255, white ones kept). Each
    value becomes its high byte, as the pixels' are (a pixel within 1/256 of the key counts as it: the 16-bit
    samples are gone). 16-bit gray (``I;16``) keeps its samples and its key."""
    key = img.info.get("transparency")
    sixteen = any(";16" in str(tile[3]) for tile in img.tile)  # the decoder's raw mode: "RGB;16B"
    if img.format == "PNG" and img.mode == "RGB" and isinstance(key, tuple) and sixteen:
        img.info["transparency"] = tuple(int(v) >> 8 for v in key)


def _is_eight_bit_key(key) -> bool:
    """Whether an RGB image's transparent colour is three values of 0..255 (Pillow's own conversion to RGBA reads it
    right; it compares a 16-bit key's low bytes, and raises on a key of another shape)."""
    return isinstance(key, tuple) and len(key) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in key)


def _eight_bit_key(key: tuple) -> tuple:
    """An RGB image's transparent colour as 8-bit values: a key with a value over 255 is a 16-bit PNG's that
    :func:`depth_of_key` did not see (the image opened by the caller), each value its high byte as the pixels'."""
    return tuple(int(v) >> 8 for v in key) if any(int(v) > 255 for v in key) else key


#: The alpha band of each mode that has one (premultiplied modes call it "a"; LAB's "A" is a colour).
_ALPHA_BANDS = {"LA": "A", "PA": "A", "RGBA": "A", "La": "a", "RGBa": "a"}


def _alpha(img: Image.Image) -> np.ndarray | None:
    """Opacity in 0..1 from an alpha channel or a transparent colour (``tRNS``), else None."""
    band = _ALPHA_BANDS.get(img.mode)
    if band:
        return np.asarray(img.getchannel(band), dtype=np.float32) / 255.0
    key = img.info.get("transparency")
    if key is None:
        return None
    if img.mode in SIXTEEN_BIT or img.mode == "I" or (img.mode == "L" and isinstance(key, int)):
        return (np.asarray(img) != key).astype(np.float32)  # Pillow's I;16 -> RGBA ignores the key
    if img.mode == "RGB" and isinstance(key, tuple):
        key = np.asarray(_eight_bit_key(key), dtype=np.uint8).reshape(3)
        return np.any(np.asarray(img) != key, axis=-1).astype(np.float32)
    try:
        return np.asarray(img.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
    except ValueError:
        return None
