"""Opening untrusted image files, for prediction and for image-folder datasets alike.

:func:`open_image` accepts only an allow-list of formats, decodes the whole image up front with
Pillow's truncated-image tolerance switched off (whatever the caller set), keeps Pillow's pixel
limit and turns its decompression-bomb *warning* into an error too, and applies the EXIF
orientation. Every refusal is a one-line :class:`BadImageError` that names the file, the problem
and the fix.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, ImageOps, ImageSequence, UnidentifiedImageError

from cnnlab.errors import CnnlabError

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
    ``reason`` is the message without the file's name, when it was raised here."""

    reason: str | None = None


def _bad(name: str, reason: str) -> BadImageError:
    err = BadImageError(f"{name}: {reason}")
    err.reason = reason
    return err


@contextlib.contextmanager
def _strict_decoding():
    """Refuse truncated images while decoding, restoring the caller's ``LOAD_TRUNCATED_IMAGES`` after."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


# ----------------------------------------------------------------------------- loading


def open_image(source: str | Path | bytes | BinaryIO, name: str | None = None,
               formats: tuple[str, ...] = ALLOWED_FORMATS) -> Image.Image:
    """Open and fully decode an untrusted image; returns the (first frame of the) image, loaded.

    ``source`` is a path, the file's bytes, or a binary file object; ``name`` is what messages
    call it. Raises :class:`BadImageError` for: a missing or zero-byte file, data that is no
    image, a format outside :data:`ALLOWED_FORMATS`, a truncated file, and a decompression bomb
    (more pixels than ``Image.MAX_IMAGE_PIXELS``, which is never raised or disabled here).
    An EXIF Orientation tag is applied, so photos come out upright.
    """
    allowed = formats_text(formats)
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or str(path)
        if not path.exists():
            raise _bad(name, "no such file; check the path")
        if not path.is_file():
            raise _bad(name, "not a regular file; give an image file")
        if path.stat().st_size == 0:
            raise _bad(name, f"empty file (0 bytes); give a {allowed} image")
        data: bytes | BinaryIO = path.read_bytes()
    elif isinstance(source, (bytes, bytearray)):
        name = name or "upload"
        if len(source) == 0:
            raise _bad(name, f"empty file (0 bytes); give a {allowed} image")
        data = bytes(source)
    else:
        name = name or "upload"
        data = source.read()
        if not data:
            raise _bad(name, f"empty file (0 bytes); give a {allowed} image")
    fp = io.BytesIO(data)
    with warnings.catch_warnings(), _strict_decoding():
        # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; refuse those too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fp, formats=formats)
            # defensive: formats= already restricts the plugins; MPO is how Pillow's JPEG plugin
            # reports a multi-picture JPEG, as many phone cameras write
            if img.format not in formats + (("MPO",) if "JPEG" in formats else ()):
                raise _bad(name, f"{img.format} images are not accepted; convert it to {allowed}")
            if getattr(img, "n_frames", 1) > 1:  # animated GIF/WebP: the first frame
                img = next(iter(ImageSequence.Iterator(img)))
            img.load()  # decode now: a truncated file fails here, inside the guarded block
            # a phone photo is stored sideways with an EXIF Orientation tag: turn it upright
            img = ImageOps.exif_transpose(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise _bad(
                name, f"refused as a possible decompression bomb ({str(err).split('.')[0]}); "
                "give an image of at most a few megapixels"
            ) from None
        except UnidentifiedImageError:
            raise _bad(name, f"{_identify(data, allowed)}") from None
        except BadImageError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise _bad(name, f"damaged or truncated image ({msg[:120]}); re-save or re-export the file") from None
    return img


def _identify(data: bytes, allowed: str) -> str:
    """Why Pillow could not open ``data`` with the allowed formats: another format, or no image.

    Only the header is parsed (``Image.open`` is lazy and nothing is decoded), to name the format.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as other:
                fmt = other.format
    except Exception:  # noqa: BLE001 - any failure here just means "not an image"
        fmt = None
    if fmt:
        return f"{fmt} images are not accepted; convert it to {allowed}"
    return f"not an image (no {allowed} data found); give an image file"
