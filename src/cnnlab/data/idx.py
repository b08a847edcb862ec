"""A strict reader and writer for the IDX format that MNIST-like datasets ship in.

Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension, then the body in C order. Every check raises :class:`DataError`
with a one-line message; nothing here uses ``assert`` for validation.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.catalog import ROLES
from cnnlab.errors import DataError

UBYTE = 0x08


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def decode_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Parse IDX bytes holding unsigned bytes with ``ndim`` dimensions; ``name`` is for messages."""
    if len(data) < 4:
        raise DataError(f"{name}: file is {len(data)} bytes, too short for an IDX header; delete it and fetch again")
    zero, code, got_ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code != UBYTE:
        raise DataError(
            f"{name}: bad IDX magic 0x{data[:4].hex()} (expected 0x0000080{ndim}, unsigned bytes); "
            "it is not an uncompressed IDX file of bytes: fetch it again"
        )
    if got_ndim != ndim:
        raise DataError(f"{name}: IDX file has {got_ndim} dimensions, expected {ndim}; is it the right file?")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, need {header}); fetch it again")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(data) - header
    if body != expected:
        what = "truncated" if body < expected else "has trailing bytes"
        raise DataError(
            f"{name}: IDX body {what}: {body} bytes for dimensions {list(dims)} (expected {expected}); fetch it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes for a uint8 array (the inverse of :func:`decode_idx`)."""
    if array.dtype != np.uint8:
        raise DataError(f"IDX writer takes uint8 arrays, got {array.dtype}")
    header = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by magic, not by name)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: corrupt gzip file ({err}); delete it and fetch again") from None
    return raw


def images_labels_to_tensors(images: np.ndarray, labels: np.ndarray, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 28, 28) uint8 and (N,) uint8 arrays -> (N, 1, H, W) uint8 and (N,) int64 tensors."""
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{name}: {images.shape[0]} images but {labels.shape[0]} labels; the image and label files do not belong together"
        )
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, H, W) uint8
    y = torch.from_numpy(labels.astype(np.int64))  # (N,)
    return x, y


def decode_splits(files: dict[str, bytes], where: str) -> tuple[torch.Tensor, ...]:
    """The four IDX files' bytes, by role -> train images, train labels, test images, test labels.

    ``where`` names the source in messages; both splits must hold images of one shape.
    """
    arrays = {role: decode_idx(data, f"{where} {ROLES[role][0]}", ROLES[role][1]) for role, data in files.items()}
    train = images_labels_to_tensors(arrays["train_images"], arrays["train_labels"], f"{where} train split")
    test = images_labels_to_tensors(arrays["test_images"], arrays["test_labels"], f"{where} test split")
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(f"{where}: train images are {tuple(train[0].shape[1:])} but test images {tuple(test[0].shape[1:])}")
    return (*train, *test)
