"""Predict the class of a user's own digit images with a trained run.

The net was trained on MNIST-like 28x28 images: white ink on black, the digit scaled so that its
longer side is 20 px and placed so that its centre of mass sits at the centre of the 28x28 field,
then normalised with the dataset's mean and std. A photo or a drawing looks nothing like that, so
:func:`preprocess` rebuilds the same conditions step by step (each step is documented there).

Untrusted files are opened defensively by :func:`cnnlab.imageio.open_image` (an allow-list of
formats, decoded up front, truncation and decompression bombs refused); every refusal is a one-line
:class:`BadImageError`, and :func:`predict_paths` reports it for that file and goes on with the others.

The CLI (``cnnlab predict``) and the web app (``cnnlab serve``) both call :class:`Predictor`.
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from cnnlab.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
from cnnlab.devices import resolve_device
from cnnlab.errors import CnnlabError
from cnnlab.imageio import ALLOWED_TEXT, IMAGE_SUFFIXES, BadImageError, open_image

#: MNIST's geometry: the digit's longer side is 20 px inside a 28 px field (LeCun et al.).
MNIST_BOX, MNIST_FIELD = 20, 28
#: Images larger than this (longer side, px) are first box-reduced by an integer factor; the ink
#: ends up at 20 px anyway and this bounds the memory of the float steps (a 2048^2 float32 is 16 MiB).
WORK_SIDE = 2048
#: A pixel counts as ink for the bounding box when it has at least this fraction of the
#: strongest ink: keeps JPEG ringing and paper texture out of the box.
INK_THRESHOLD = 0.2
#: Less contrast than this (on a 0..1 scale) between the strongest ink and the paper is a blank image.
MIN_CONTRAST = 0.08


# ----------------------------------------------------------------------------- preprocessing


def ink_map(img: Image.Image) -> np.ndarray:
    """Steps 1-2: grayscale, then "ink" in 0..1 with the paper at 0, whatever the polarity.

    1. Grayscale: colour images become luminance (Pillow's ITU-R 601 ``L``). A transparent image
       (PNG/WebP/GIF with alpha) is different: its background is *transparent*, not light or dark,
       so the opacity is the ink.
    2. Polarity: the paper's level is the median of the image's outermost ring of pixels (a digit
       rarely fills the border). Light paper means dark ink, so the image is inverted; either way
       the paper is then stretched to 0 and the strongest possible ink to 1:
       ``ink = (paper - gray) / paper`` on light paper, ``(gray - paper) / (1 - paper)`` on dark.

    Very large images are box-reduced first (integer factor, to at most :data:`WORK_SIDE`).
    """
    longer = max(img.size)
    if longer > WORK_SIDE:
        img = img.reduce(math.ceil(longer / WORK_SIDE))
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        alpha = np.asarray(img.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
        if alpha.min() < 0.99:  # some transparency: the opaque strokes are the ink
            return alpha
    gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0  # (H, W) in 0..1
    ring = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    paper = float(np.median(ring))
    if paper >= 0.5:  # light paper, dark ink: invert
        ink = (paper - gray) / max(paper, 1e-6)
    else:
        ink = (gray - paper) / max(1.0 - paper, 1e-6)
    return np.clip(ink, 0.0, 1.0)


def mnist_field(ink: np.ndarray, size: int = MNIST_FIELD, name: str = "image") -> np.ndarray:
    """Steps 3-5: crop to the ink, scale to a 20 px box, centre by mass in a 28x28 field.

    3. Crop to the bounding box of the pixels holding at least :data:`INK_THRESHOLD` of the
       strongest ink.
    4. Scale so that the longer side is 20 px (``size * 20 / 28`` for other sizes), keeping the
       aspect ratio: area averaging (box filter) when shrinking, bicubic when enlarging, as MNIST
       was anti-aliased. The result is stretched so that its strongest ink is 1.
    5. Place it in the ``size`` x ``size`` field so that its centre of mass is at the field's
       centre; the shift is sub-pixel (bilinear) and is clamped so that no ink leaves the field.

    Returns ``(size, size)`` float32 in 0..1, white ink on black like MNIST.
    """
    peak = float(ink.max()) if ink.size else 0.0
    if peak < MIN_CONTRAST:
        raise BadImageError(f"{name}: no ink found (the image is blank or has almost no contrast); draw or write a digit")
    rows = np.flatnonzero((ink >= INK_THRESHOLD * peak).any(axis=1))
    cols = np.flatnonzero((ink >= INK_THRESHOLD * peak).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (h, w)

    box = max(1, round(size * MNIST_BOX / MNIST_FIELD))
    h, w = crop.shape
    scale = box / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
    small = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize((new_w, new_h), resample))
    small = np.clip(small, 0.0, None)
    small = small / max(float(small.max()), 1e-6)

    # centre of mass of the patch, in pixel-centre coordinates (index + 0.5)
    total = float(small.sum())
    cy = float((small.sum(axis=1) * (np.arange(new_h) + 0.5)).sum()) / total
    cx = float((small.sum(axis=0) * (np.arange(new_w) + 0.5)).sum()) / total
    # top-left offset that puts (cy, cx) at (size/2, size/2), kept inside the field
    oy = min(max(size / 2 - cy, 0.0), float(size - new_h))
    ox = min(max(size / 2 - cx, 0.0), float(size - new_w))
    iy, ix = int(math.floor(oy)), int(math.floor(ox))
    fy, fx = oy - iy, ox - ix
    pad = np.zeros((size + 1, size + 1), dtype=np.float32)  # one spare row/column for the bilinear spill
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 1, fy * fx)):
        if weight > 0:
            pad[iy + dy : iy + dy + new_h, ix + dx : ix + dx + new_w] += weight * small
    return np.clip(pad[:size, :size], 0.0, 1.0)


def preprocess(img: Image.Image, size: int = MNIST_FIELD, name: str = "image") -> np.ndarray:
    """MNIST-style preprocessing of any image: steps 1-5 of :func:`ink_map` and :func:`mnist_field`.

    Step 6, the dataset's normalisation ``(x - mean) / std``, is done by :meth:`Predictor.tensor`
    because mean and std belong to the run. Returns ``(size, size)`` float32 in 0..1.
    """
    return mnist_field(ink_map(img), size=size, name=name)


def to_uint8_image(field_01: np.ndarray) -> Image.Image:
    """The 28x28 image the net saw, as a grayscale picture (white ink on black)."""
    return Image.fromarray(np.round(field_01 * 255).astype(np.uint8), mode="L")


# ----------------------------------------------------------------------------- prediction


@dataclass
class Prediction:
    """One image's result: the classes ranked by probability, and the 28x28 input the net saw."""

    name: str
    probabilities: list[float]
    classes: list[str]
    input_image: np.ndarray = field(repr=False)  # (H, W) float32 in 0..1

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(self.classes[i], float(self.probabilities[i])) for i in order]

    @property
    def label(self) -> str:
        return self.top(1)[0][0]

    def to_dict(self, k: int = 3) -> dict:
        return {"file": self.name, "prediction": self.label,
                "top": [{"class": c, "probability": p} for c, p in self.top(k)]}


@dataclass
class Failure:
    """A file that could not be predicted, and the one-line reason."""

    name: str
    error: str

    def to_dict(self) -> dict:
        return {"file": self.name, "error": self.error}


class Predictor:
    """A trained net with its run's preprocessing: image in, class probabilities out.

    Built from a checkpoint dict (``model``, ``data`` with classes, mean, std, in_channels and
    image_size, ``state_dict``); :meth:`from_run` loads one from a run directory or ``.pt`` file.
    """

    def __init__(self, state: dict, device: str | torch.device = "cpu", source: str = ""):
        data = state.get("data") or {}
        missing = [k for k in ("classes", "mean", "std") if k not in data]
        if missing:
            raise CnnlabError(f"{source or 'checkpoint'}: records no {', '.join(missing)} of its data; "
                              "retrain it with this cnnlab to predict with it")
        self.device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
        self.model: nn.Module = model_from_checkpoint(state).to(self.device).eval()
        self.model_name: str = state["model"]["name"]
        self.classes = [str(c) for c in data["classes"]]
        self.mean, self.std = float(data["mean"]), float(data["std"])
        self.in_channels = int(data.get("in_channels", 1))
        self.image_size = int(data.get("image_size", MNIST_FIELD))
        self.source = source

    @classmethod
    def from_run(cls, run: str | Path, which: str = "last", device: str = "auto") -> "Predictor":
        path = resolve_checkpoint(run, which)
        return cls(load_checkpoint(path), device=device, source=str(path))

    def tensor(self, fields_01: Iterable[np.ndarray]) -> torch.Tensor:
        """Step 6: stack 0..1 fields into a normalised ``(B, C, H, W)`` batch on the model's device."""
        x = torch.from_numpy(np.stack(list(fields_01))).unsqueeze(1)  # (B, 1, H, W)
        x = (x - self.mean) / self.std
        if self.in_channels != 1:
            x = x.expand(-1, self.in_channels, -1, -1)  # a gray digit for a colour net: same on every channel
        return x.to(self.device)

    def prepare(self, source, name: str | None = None) -> np.ndarray:
        """Open (defensively) and preprocess one image: a ``(H, W)`` float field in 0..1."""
        img = source if isinstance(source, Image.Image) else open_image(source, name)
        return preprocess(img, size=self.image_size, name=name or "image")

    @torch.inference_mode()
    def probabilities(self, fields_01: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """``(B, classes)`` softmax probabilities of prepared fields."""
        out = []
        for i in range(0, len(fields_01), batch_size):
            logits = self.model(self.tensor(fields_01[i : i + batch_size])).float()
            out.append(logits.softmax(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def predict_one(self, source, name: str | None = None) -> Prediction:
        """Predict a single image (path, bytes or PIL image); bad input raises :class:`BadImageError`."""
        field_01 = self.prepare(source, name)
        probs = self.probabilities([field_01])[0]
        return Prediction(name or "image", [float(p) for p in probs], self.classes, field_01)


def expand_inputs(items: Iterable[str]) -> tuple[list[Path], list[Failure]]:
    """Paths from arguments: a directory gives its image files (by suffix, sorted, not recursive);
    a pattern with ``*``, ``?`` or ``[`` is expanded (for shells that did not); others stay as given.
    Nothing matched is a :class:`Failure` of its own."""
    paths: list[Path] = []
    failures: list[Failure] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                failures.append(Failure(item, f"{item}: directory holds no {ALLOWED_TEXT} files (by suffix)"))
            paths.extend(found)
        elif not p.exists() and glob.has_magic(item):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True) if Path(q).is_file())
            if not found:
                failures.append(Failure(item, f"{item}: the pattern matches no files; check it"))
            paths.extend(found)
        else:
            paths.append(p)
    return paths, failures


def predict_paths(predictor: Predictor, items: Iterable[str]) -> tuple[list[Prediction], list[Failure]]:
    """Predict every image named by ``items`` (files, directories, globs).

    Bad files become :class:`Failure` entries and the rest are still predicted, in one batch.
    """
    paths, failures = expand_inputs(items)
    names, fields = [], []
    for path in paths:
        try:
            fields.append(predictor.prepare(path, str(path)))
            names.append(str(path))
        except BadImageError as err:
            failures.append(Failure(str(path), str(err)))
    probs = predictor.probabilities(fields)
    preds = [Prediction(n, [float(v) for v in p], predictor.classes, f) for n, p, f in zip(names, probs, fields)]
    return preds, failures


def save_input_image(pred: Prediction, directory: str | Path, taken: set[str] | None = None) -> Path:
    """Write the 28x28 image the net saw as ``DIR/<file stem>.input.png``; returns its path.

    ``taken`` holds the names already written in this batch: a later input with the same stem gets
    ``<stem>-2.input.png``, ``-3``... (chosen before writing, so that nothing is overwritten)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = Path(pred.name).stem
    name, n = f"{stem}.input.png", 2
    while taken is not None and name in taken:
        name, n = f"{stem}-{n}.input.png", n + 1
    if taken is not None:
        taken.add(name)
    out = directory / name
    to_uint8_image(pred.input_image).save(out)
    return out
