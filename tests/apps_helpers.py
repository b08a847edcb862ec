"""Helpers shared by the predict, export and serve tests: tiny checkpoints and generated digits."""

from __future__ import annotations

import contextlib
import signal
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from cnnlab.checkpoint import save_checkpoint
from cnnlab.config import TrainConfig
from cnnlab.models import create_model

CLASSES = [str(i) for i in range(10)]
#: A "4"-like shape as strokes in the unit square: (x0, y0, x1, y1) segments.
STROKES = [(0.55, 0.0, 0.05, 0.65), (0.05, 0.65, 0.75, 0.65), (0.55, 0.0, 0.55, 1.0)]


def tiny_checkpoint(path: Path, model: str = "basic_cnn", dataset_dir: Path | None = None, seed: int = 0,
                    classes: list[str] | None = None, dataset: str | None = None, mean: float = 0.1307) -> Path:
    """A cnnlab checkpoint of ``model`` with random weights and MNIST's normalisation (or another recorded ``mean``:
    the paper of its training images); ``classes`` (the digits by default) and ``dataset`` (``mnist``, or
    ``idx:DATASET_DIR``) as its run recorded them."""
    torch.manual_seed(seed)
    classes = classes or CLASSES
    args = {"in_channels": 1, "num_classes": len(classes), "image_size": 28}
    net = create_model(model, **args)
    dataset = dataset or (f"idx:{dataset_dir}" if dataset_dir else "mnist")
    cfg = TrainConfig(model=model, dataset=dataset, device="cpu").to_dict()
    data = {"name": dataset, "classes": classes, "mean": mean, "std": 0.3081, "in_channels": 1,
            "image_size": 28, "train_size": 0, "test_size": 0, "source": "test"}
    save_checkpoint(path, {"model": {"name": model, "args": args}, "config": cfg, "data": data,
                           "state_dict": net.state_dict()})
    return path


def mnist_like_fields(folder: Path, names: list[str]) -> None:
    """MNIST-like 28x28 fields (a white bar on black), one PNG per name: read as they are, quickly."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        a = np.zeros((28, 28), np.uint8)
        a[4:24, 10 + i % 6:14 + i % 6] = 255
        Image.fromarray(a).save(folder / name)


def draw_digit(canvas=(300, 300), box=(50, 50, 250, 250), ink=0, paper=255, mode="L", width_frac=0.12) -> Image.Image:
    """The STROKES shape drawn into ``box`` (x0, y0, x1, y1) of a ``canvas``-sized image."""
    img = Image.new(mode, canvas, paper)
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    width = max(1, round(width_frac * max(w, h)))
    for a, b, c, e in STROKES:
        d.line([(x0 + a * w, y0 + b * h), (x0 + c * w, y0 + e * h)], fill=ink, width=width, joint="curve")
    return img


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` gray pixels with almost no data: a decompression-bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class Blocked(Exception):
    """Raised by :func:`deadline`: not an ``OSError`` (as ``TimeoutError`` is), which a reader may catch and go on
    to block on the next file."""


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""
    def boom(*_):
        raise Blocked(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def peak_bytes(fn) -> tuple[int, Exception | None]:
    """Peak traced memory (numpy's arrays included, other threads' too) while ``fn`` runs, and what it raised."""
    tracemalloc.start()
    try:
        fn()
        raised = None
    except Exception as err:  # noqa: BLE001 - returned for the test to judge
        raised = err
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, raised


def quiet(_msg: str) -> None:
    """A ``log`` that says nothing."""


def one_line(err, *fragments: str) -> str:
    """The message of a ``pytest.raises`` error: one line, holding every one of ``fragments``."""
    msg = str(err.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg
