"""A strict, streaming reader and a writer for the IDX format that MNIST-like datasets ship in.

Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension, then the body in C order. Every check raises :class:`DataError`
with a one-line message; nothing here uses ``assert`` for validation.

Reading is a stream, gzip or not (by magic, not by name): the header is checked from the first bytes,
a declared size beyond :data:`MAX_IDX_BYTES` is refused before the body is read, the body is read (and
inflated) straight into one array of exactly the declared size, and one byte more is an error. So memory
stays at the declared size whatever the file holds: a gzip bomb costs a few kilobytes, not gigabytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cnnlab.data.safefs import open_regular, read_bounded, read_error
from cnnlab.errors import DataError

UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
#: The largest unpacked IDX file accepted: EMNIST ByClass's train images, the largest MNIST-like file
#: there is, are 547 MB (697,932 images of 28x28); 1 GiB also holds 262,144 images of 64x64.
MAX_IDX_BYTES = 1 << 30
_CHUNK = 1 << 22  # bytes read (or inflated) at a time


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    out = b""
    while len(out) < n:
        more = stream.read(n - len(out))
        if not more:
            break
        out += more
    return out


#: IDX type codes other than unsigned bytes, as a file of the user's own may hold them.
_IDX_TYPES = {0x09: "signed bytes (int8)", 0x0B: "16-bit integers (int16)", 0x0C: "32-bit integers (int32)",
              0x0D: "32-bit floats (float32)", 0x0E: "64-bit floats (float64)"}


def _own_fix(ndim: int, problem: str, detail=None) -> str:
    """What to do about an IDX file the user wrote (``idx:DIR``): a fix about the file, never "fetch it again"."""
    what = "labels" if ndim == 1 else "images"
    if problem == "type":
        return (f"it holds {_IDX_TYPES.get(detail, f'IDX type 0x{detail:02x}')}, and {what} must be unsigned bytes "
                f"(IDX type 0x08): write them as uint8 (numpy: array.astype(np.uint8), {what} in 0..255)")
    if problem == "dims" and detail is not None:
        return ("the dimensions look little-endian, and IDX headers are big-endian: write each dimension as a "
                "big-endian uint32 (struct.pack('>I', n))")
    return {"magic": "it is not an IDX file: write the header as two zero bytes, 0x08 (unsigned bytes), the number "
                     "of dimensions, then each dimension as a big-endian uint32",
            "dims": f"write the header's dimensions as the {what}' shape (big-endian uint32s)",
            "short": f"the file holds fewer bytes than its header declares: write all the {what} after the header",
            "long": f"the file holds more bytes than its header declares: write the header with the {what}' full "
                    "shape, and uint8 data (one byte per value) after it"}[problem]


def _little_endian(dims: tuple[int, ...], limit: int) -> bool:
    swapped = [int.from_bytes(d.to_bytes(4, "big"), "little") for d in dims]
    return 0 < math.prod(swapped) <= limit


def _read_header(stream: BinaryIO, name: str, ndim: int, limit: int,
                 own: bool = False) -> tuple[bytes, tuple[int, ...]]:
    """The header's bytes and dimensions, checked: magic, type, dimension count, declared size. ``own``: a file of
    the user's (``idx:DIR``), whose fix is about writing it, not fetching it again."""
    head = _read_exact(stream, 4)
    if len(head) < 4:
        fix = "write it again" if own else "delete it and fetch again"
        raise DataError(f"{name}: file is {len(head)} bytes, too short for an IDX header; {fix}")
    zero, code, got_ndim = struct.unpack(">HBB", head)
    if zero != 0 or code != UBYTE:
        fix = _own_fix(ndim, "type" if zero == 0 else "magic", code) if own else \
            "it is not an uncompressed IDX file of bytes: fetch it again"
        raise DataError(f"{name}: bad IDX magic 0x{head.hex()} (expected 0x0000080{ndim}, unsigned bytes); {fix}")
    if got_ndim != ndim:
        raise DataError(f"{name}: IDX file has {got_ndim} dimensions, expected {ndim}; is it the right file?")
    raw_dims = _read_exact(stream, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        fix = "write it again" if own else "fetch it again"
        raise DataError(f"{name}: truncated IDX header ({4 + len(raw_dims)} bytes, need {4 + 4 * ndim}); {fix}")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    declared = math.prod(dims)  # Python integers: [2^31, 2^31, 2^31] is 2^93, not a wrapped 0
    if declared > limit:
        fix = _own_fix(ndim, "dims", True if _little_endian(dims, limit) else None) if own else \
            "it is damaged or not an MNIST-like dataset: fetch it again"
        raise DataError(
            f"{name}: IDX header declares dimensions {list(dims)}, {declared:,} bytes, more than an MNIST-like "
            f"file can be (at most {limit:,}); {fix}"
        )
    return head + raw_dims, dims


def read_idx_stream(stream: BinaryIO, name: str, ndim: int, want_md5: bool = False,
                    limit: int = MAX_IDX_BYTES, own: bool = False) -> tuple[np.ndarray, str | None]:
    """An uncompressed IDX stream -> (array of its dimensions, MD5 of all its bytes when ``want_md5``).

    The array is new and writable; nothing beyond the header's declared size is ever read but one byte.
    ``own``: the user's own file (``idx:DIR``): errors say how to write it right, not to fetch it again.
    """
    header, dims = _read_header(stream, name, ndim, limit, own)
    h = hashlib.md5(header) if want_md5 else None
    expected = math.prod(dims)
    flat = np.empty(expected, dtype=np.uint8)
    view = memoryview(flat)
    pos = 0
    while pos < expected:
        n = stream.readinto(view[pos:pos + _CHUNK])
        if not n:
            break
        if h is not None:
            h.update(view[pos:pos + n])
        pos += n
    if pos < expected:
        raise DataError(f"{name}: IDX body truncated: {pos} bytes for dimensions {list(dims)} "
                        f"(expected {expected}); {_own_fix(ndim, 'short') if own else 'fetch it again'}")
    if stream.read(1):
        raise DataError(f"{name}: IDX body has trailing bytes: more than {expected} bytes for dimensions "
                        f"{list(dims)}; {_own_fix(ndim, 'long') if own else 'fetch it again'}")
    return flat.reshape(dims), (h.hexdigest() if h is not None else None)


def _unpacked(stream: BinaryIO) -> BinaryIO:
    """``stream`` itself, or a gzip stream over it when it starts with gzip's magic (it must be seekable)."""
    start = stream.tell()
    magic = stream.read(2)
    stream.seek(start)
    return gzip.GzipFile(fileobj=stream, mode="rb") if magic == GZIP_MAGIC else stream


#: What to do about a damaged download: there is no file to delete.
DOWNLOAD_FIX = "try again later, or another mirror"


#: What to do about a damaged gzip file of the user's own (``idx:DIR``): nothing to fetch.
OWN_GZIP_FIX = "compress the IDX file again (gzip -k FILE), or keep it uncompressed"


def _guarded(name: str, fn, downloaded: bool = False, own: bool = False):
    """Run ``fn()``; gzip and operating-system errors become one-line :class:`DataError`\\ s naming ``name``
    (``downloaded``: a download, which is cut off or damaged on its way, not a file to delete; ``own``: the user's
    own file, to write again, not to fetch)."""
    try:
        return fn()
    except EOFError as err:
        if downloaded:
            raise DataError(f"{name}: the download was cut off (its gzip stream ends early: {err}); "
                            f"{DOWNLOAD_FIX}") from None
        raise DataError(f"{name}: corrupt gzip file, it ends early ({err}): truncated; "
                        f"{OWN_GZIP_FIX if own else 'delete it and fetch again'}") from None
    except (gzip.BadGzipFile, zlib.error) as err:
        fix = f"the download is damaged: {DOWNLOAD_FIX}" if downloaded else \
            OWN_GZIP_FIX if own else "delete it and fetch again"
        raise DataError(f"{name}: corrupt gzip file ({err}); {fix}") from None
    except OSError as err:
        raise read_error(name, err) from None


def read_idx(path: str | Path, ndim: int, want_md5: bool = False,
             own: bool = False) -> tuple[np.ndarray, str | None, os.stat_result]:
    """The IDX file at ``path`` (raw or gzip) -> (array, MD5 of the unpacked bytes or None, the file's stat);
    ``own``: the user's own file (``idx:DIR``), whose errors say how to write it right."""
    fh, st = open_regular(path, "an IDX file")
    with fh:
        array, digest = _guarded(str(path), lambda: read_idx_stream(_unpacked(fh), str(path), ndim, want_md5,
                                                                    own=own), own=own)
    return array, digest, st


def decode_idx_bytes(data: bytes, name: str, ndim: int, want_md5: bool = False) -> tuple[np.ndarray, str | None]:
    """IDX bytes, raw or gzip (a download) -> (array, MD5 of the unpacked bytes or None); bounded like files."""
    return _guarded(name, lambda: read_idx_stream(_unpacked(io.BytesIO(data)), name, ndim, want_md5))


class _Prefixed(io.RawIOBase):
    """``head``, bytes already read from ``rest``, then ``rest``: a stream read once (a download), which cannot
    seek back over the two bytes that said whether it is gzip."""

    def __init__(self, head: bytes, rest: BinaryIO):
        super().__init__()
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self.head:
            n = min(len(buf), len(self.head))
            buf[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.rest.readinto(buf)


def read_idx_download(stream: BinaryIO, name: str, ndim: int, limit: int = MAX_IDX_BYTES) -> tuple[np.ndarray, str]:
    """A download as it arrives (raw or gzip, by magic) -> (array, MD5 of the unpacked bytes), never held whole:
    memory is the array, of the size its header declares, at most ``limit`` bytes. ``stream``'s own errors (a
    cap, a deadline) pass through as they are; a cut-off or damaged gzip stream is named as a download's."""
    def read():
        head = _read_exact(stream, 2)
        buffered = io.BufferedReader(_Prefixed(head, stream), _CHUNK)
        unpacked = gzip.GzipFile(fileobj=buffered, mode="rb") if head == GZIP_MAGIC else buffered
        return read_idx_stream(unpacked, name, ndim, want_md5=True, limit=limit)
    return _guarded(name, read, downloaded=True)


def decode_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Parse uncompressed IDX bytes holding unsigned bytes with ``ndim`` dimensions; ``name`` is for messages."""
    return read_idx_stream(io.BytesIO(data), name, ndim)[0]


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes for a uint8 array (the inverse of :func:`decode_idx`)."""
    if array.dtype != np.uint8:
        raise DataError(f"IDX writer takes uint8 arrays, got {array.dtype}")
    return idx_header(array.shape) + np.ascontiguousarray(array).tobytes()


def idx_header(shape: tuple[int, ...]) -> bytes:
    return struct.pack(">HBB", 0, UBYTE, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by magic, not by name); at most an IDX file's worth."""
    fh, _ = open_regular(path, "an IDX file")
    with fh:
        return _guarded(str(path), lambda: read_bounded(_unpacked(fh), MAX_IDX_BYTES + 4 + 4 * 4, str(path)))
