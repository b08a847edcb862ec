"""Predict the class of a user's own digit images with a trained run.

The net was trained on MNIST-like 28x28 images: white ink on black, the digit scaled so that its
longer side is 20 px and placed so that its centre of mass sits at the centre of the 28x28 field,
then normalised with the dataset's mean and std. A photo or a drawing looks nothing like that, so
:func:`preprocess` rebuilds the same conditions step by step (each step is documented there).

Untrusted files are opened defensively by :func:`cnnlab.imageio.open_image` (an allow-list of
formats, the decoding cost bounded before decoding by a pixel cap, ``max_pixels``, and a reduced decode
of large images, truncation and decompression bombs refused); every refusal is a one-line
:class:`BadImageError`, and :func:`predict_paths` reports it for that file and goes on with the others.

A :class:`Predictor` is callable: ``predictor(x)`` takes a path, bytes, a PIL image, a numpy array, a
torch tensor, or a list of these (the rules are in :meth:`Predictor.__call__`). The CLI
(``cnnlab predict``, through :func:`predict_paths`) and the web app (``cnnlab serve``) both use it.
"""

from __future__ import annotations

import glob
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from cnnlab.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
from cnnlab.devices import resolve_device
from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_write_bytes
from cnnlab.pretrained import load_pretrained
from cnnlab.imageio import (
    ALLOWED_TEXT, DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, BadImageError, check_max_pixels, open_image, printable, shrink,
    unit_gray,
)

#: MNIST's geometry: the digit's longer side is 20 px inside a 28 px field (LeCun et al.).
MNIST_BOX, MNIST_FIELD = 20, 28
#: Images larger than this (longer side, px) are box-reduced by an integer factor (JPEGs decoded at
#: reduced scale) before anything else: the ink ends up at 20 px anyway, even a digit a tenth of the
#: image wide keeps 100 px, and this bounds the memory of the float steps (a 1024^2 float32 is 4 MiB).
WORK_SIDE = 1024
#: A pixel counts as ink for the bounding box when it has at least this fraction of the
#: strongest ink: keeps JPEG ringing and paper texture out of the box.
INK_THRESHOLD = 0.2
#: Less contrast than this (on a 0..1 scale) between the strongest ink and the paper is a blank image.
MIN_CONTRAST = 0.08
#: Float pixels may stray this far outside 0..1 (rounding) before an array is refused as not 0..1.
RANGE_TOLERANCE = 1e-3
#: ``save_input_image`` also writes the input enlarged this many times (nearest-neighbour): 28 px -> 280 px.
ENLARGE = 10


# ----------------------------------------------------------------------------- preprocessing


def ink_map(img: Image.Image, name: str = "image") -> np.ndarray:
    """Steps 1-2: grayscale, then "ink" in 0..1 with the paper at 0, whatever the polarity.

    1. Grayscale in 0..1, scaled from the image's bit depth (:func:`cnnlab.imageio.unit_gray`: 16-bit
       images are divided by 65535, not clipped): colour images become luminance (Pillow's ITU-R 601
       ``L``). A transparent image (PNG/WebP/GIF with alpha, or a transparent colour) is different:
       its background is *transparent*, not light or dark, so the opacity is the ink.
    2. Polarity: the paper's level is the median of the image's outermost ring of pixels (a digit
       rarely fills the border). Light paper means dark ink, so the image is inverted; either way
       the paper is then stretched to 0 and the strongest possible ink to 1:
       ``ink = (paper - gray) / paper`` on light paper, ``(gray - paper) / (1 - paper)`` on dark.

    Very large images are box-reduced first (integer factor, to at most :data:`WORK_SIDE`; any mode,
    :func:`cnnlab.imageio.shrink`).
    """
    gray, alpha = unit_gray(shrink(img, WORK_SIDE), name)  # (H, W) float32 in 0..1 each
    if alpha is not None and alpha.min() < 0.99:  # some transparency: the opaque strokes are the ink
        return alpha
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
    return mnist_field(ink_map(img, name), size=size, name=name)


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
    ``max_pixels`` caps the images it opens from paths and bytes (width x height, checked before decoding).
    """

    def __init__(self, state: dict, device: str | torch.device = "cpu", source: str = "",
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.max_pixels = check_max_pixels(max_pixels)
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
    def from_run(cls, run: str | Path, which: str = "last", device: str = "auto",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> "Predictor":
        check_max_pixels(max_pixels)  # before the checkpoint is read
        path = resolve_checkpoint(run, which)
        return cls(load_checkpoint(path), device=device, source=str(path), max_pixels=max_pixels)

    @classmethod
    def pretrained(cls, model: str, dataset: str = "mnist", device: str = "auto",
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> "Predictor":
        """The shipped weights of ``model`` on ``dataset`` (see ``cnnlab models``), verified before use."""
        check_max_pixels(max_pixels)
        state = load_pretrained(model, dataset)
        return cls(state, device=device, source=f"pretrained {state['pretrained'].name}", max_pixels=max_pixels)

    def tensor(self, fields_01: Iterable[np.ndarray]) -> torch.Tensor:
        """Step 6: stack 0..1 fields into a normalised ``(B, C, H, W)`` batch on the model's device."""
        x = torch.from_numpy(np.stack(list(fields_01))).unsqueeze(1)  # (B, 1, H, W)
        x = (x - self.mean) / self.std
        if self.in_channels != 1:
            x = x.expand(-1, self.in_channels, -1, -1)  # a gray digit for a colour net: same on every channel
        return x.to(self.device)

    def prepare(self, source, name: str | None = None, preprocess: bool | None = None) -> np.ndarray:
        """One image as the ``(H, W)`` float32 field in 0..1 the net reads (before normalisation).

        ``source``: a path or bytes (opened defensively, within :attr:`max_pixels`), a PIL image, or a numpy
        array ((H, W) or (H, W, C) with C = 1, 3 or 4; uint8 0..255 or float 0..1). ``preprocess`` as in
        :meth:`__call__`.
        Bad input raises a one-line :class:`BadImageError`."""
        name = name or (str(source) if isinstance(source, (str, Path)) else "image")
        if isinstance(source, np.ndarray):
            img = unit_image(source, name)  # (H, W) or (H, W, C) float32 in 0..1
            if preprocess is None:
                preprocess = not is_mnist_field(img, self.image_size)
            return preprocess_array(img, self.image_size, name) if preprocess else self._as_field(img, name)
        if not isinstance(source, Image.Image):
            source = open_image(source, name, max_pixels=self.max_pixels, max_side=WORK_SIDE)
        if preprocess is False:
            return self._as_field(unit_gray(source, name)[0], name)
        return mnist_field(ink_map(source, name), size=self.image_size, name=name)  # = preprocess(), shadowed here

    def _as_field(self, img: np.ndarray, name: str) -> np.ndarray:
        """An image taken as is: grayscale (luminance for colour), and already ``image_size`` square."""
        if img.ndim == 3:
            img = np.asarray(to_pil(img).convert("L"), dtype=np.float32) / 255.0
        if img.shape != (self.image_size, self.image_size):
            raise BadImageError(f"{name}: taken as is (preprocess=False) it must be {self.image_size}x{self.image_size}, "
                                f"got {img.shape[0]}x{img.shape[1]}; let it be preprocessed (preprocess=None or True)")
        return np.array(img, dtype=np.float32)

    @torch.inference_mode()
    def probabilities(self, fields_01: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """``(B, classes)`` softmax probabilities of prepared fields."""
        out = []
        for i in range(0, len(fields_01), batch_size):
            logits = self.model(self.tensor(fields_01[i : i + batch_size])).float()
            out.append(logits.softmax(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def predictions(self, names: list[str], fields_01: list[np.ndarray]) -> list[Prediction]:
        """Prepared fields, predicted in batches, as :class:`Prediction` objects named ``names``."""
        probs = self.probabilities(fields_01)
        return [Prediction(n, [float(v) for v in p], self.classes, f) for n, p, f in zip(names, probs, fields_01)]

    def __call__(self, x, *, name: str | None = None, preprocess: bool | None = None) -> Prediction | list[Prediction]:
        """Predict ``x``: one image gives one :class:`Prediction`, a batch or a list gives a list.

        ``x`` is one of:

        - a path (``str`` or ``Path``) or the file's ``bytes``: PNG, JPEG, BMP, GIF or WebP, opened defensively;
        - a PIL image;
        - a numpy array: one image (H, W), or (H, W, C) when the last axis has 1, 3 or 4 entries
          (gray, RGB, RGBA), or a batch (N, H, W); uint8 (or any integers) in 0..255, float in 0..1;
        - a torch tensor: one image (H, W) or (C, H, W) with C = 1, 3 or 4, or a batch (N, C, H, W);
          same value ranges (a tensor normalised with the dataset's mean and std is refused: un-normalise it);
        - a list or tuple of single images of any of these kinds, mixed freely.

        Preprocessing (``preprocess=None``, the default): files, bytes and PIL images always go through
        the MNIST-style steps of :func:`preprocess` (grayscale, polarity, crop, 20 px box, centre of mass).
        A numpy or tensor image is taken **as is** (scaled to 0..1) when it already is an MNIST-like field:
        a single-channel ``image_size`` x ``image_size`` (28x28) image whose outermost ring of pixels is
        mostly dark (median below 0.5), i.e. white ink on black; any other array is preprocessed like a
        file. ``preprocess=True`` forces the steps, ``preprocess=False`` takes every input as is (it must
        then be ``image_size`` square; colour becomes luminance). ``name`` names the input in messages
        and in the result (default: the path, or "bytes", "image", "array", "tensor", with ``[i]`` for
        the i-th item of a batch or list). Bad input raises a one-line :class:`BadImageError`.
        """
        items, single = split_inputs(x, name)
        fields = [self.prepare(source, item_name, preprocess) for item_name, source in items]
        preds = self.predictions([n for n, _ in items], fields)
        return preds[0] if single else preds


# ----------------------------------------------------------------------------- inputs of Predictor.__call__


def split_inputs(x, name: str | None = None) -> tuple[list[tuple[str, Any]], bool]:
    """``([(name, one image), ...], single)``: the images in ``x`` (tensors become ``(H, W[, C])`` numpy
    arrays, batches are split) and whether ``x`` was a single image. Raises :class:`BadImageError`."""
    if isinstance(x, (str, Path)):
        return [(name or str(x), x)], True
    if isinstance(x, (bytes, bytearray, Image.Image)):
        return [(name or ("bytes" if isinstance(x, (bytes, bytearray)) else "image"), x)], True
    if isinstance(x, torch.Tensor):
        return _tensor_images(x, name or "tensor")
    if isinstance(x, np.ndarray):
        return _array_images(x, name or "array")
    if isinstance(x, (list, tuple)):
        items = []
        for i, item in enumerate(x):
            default = None if isinstance(item, (str, Path)) else f"{name or 'input'}[{i}]"
            sub, single = split_inputs(item, default)
            if not single:
                raise BadImageError(f"{default or item}: a list holds single images, not batches; "
                                    "pass the batch on its own, or list its images")
            items += sub
        return items, False
    raise BadImageError(f"{name or 'input'}: cannot predict a {type(x).__name__}; give a path, bytes, a PIL image, "
                        "a numpy array, a torch tensor, or a list of them")


def _array_images(a: np.ndarray, name: str) -> tuple[list[tuple[str, np.ndarray]], bool]:
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 3, 4)):
        return [(name, a)], True
    if a.ndim == 3:
        return [(f"{name}[{i}]", img) for i, img in enumerate(a)], False
    raise BadImageError(f"{name}: an array of shape {a.shape} is no image; give (H, W), (H, W, C) with C = 1, 3 or 4, "
                        "or a batch (N, H, W)")


def _tensor_images(t: torch.Tensor, name: str) -> tuple[list[tuple[str, np.ndarray]], bool]:
    shape = tuple(t.shape)
    if t.ndim not in (2, 3, 4) or (t.ndim >= 3 and shape[-3] not in (1, 3, 4)):
        raise BadImageError(f"{name}: a tensor of shape {shape} is no image; give (H, W), (C, H, W) with C = 1, 3 or 4, "
                            "or a batch (N, C, H, W)")
    a = t.detach().cpu()
    a = (a.float() if a.is_floating_point() and a.dtype not in (torch.float32, torch.float64) else a).numpy()
    if a.ndim == 2:
        return [(name, a)], True
    if a.ndim == 3:
        return [(name, np.moveaxis(a, 0, -1))], True  # (C, H, W) -> (H, W, C)
    return [(f"{name}[{i}]", np.moveaxis(img, 0, -1)) for i, img in enumerate(a)], False


def unit_image(a: np.ndarray, name: str = "array") -> np.ndarray:
    """A numpy image as float32 in 0..1, ``(H, W)`` or ``(H, W, C)`` (C = 1 is squeezed away).

    uint8 and other integers must lie in 0..255 (divided by 255), booleans are 0 or 1, floats must be
    finite and in 0..1. Anything else is a one-line :class:`BadImageError` that says what to pass."""
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.size == 0:
        raise BadImageError(f"{name}: empty array of shape {a.shape}; give an image with pixels")
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise BadImageError(f"{name}: integer pixels must lie in 0..255, got {lo}..{hi}; rescale the image")
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.floating):
        raise BadImageError(f"{name}: pixels of type {a.dtype} are not an image; give uint8 (0..255) or float (0..1)")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise BadImageError(f"{name}: the array holds NaN or infinite values; give finite pixels in 0..1")
    lo, hi = float(a.min()), float(a.max())
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise BadImageError(f"{name}: float pixels must lie in 0..1, got {lo:.3g}..{hi:.3g}; divide 0..255 values by 255, "
                            "or undo a normalisation (x * std + mean)")
    return np.clip(a, 0.0, 1.0)


def is_mnist_field(img: np.ndarray, size: int = MNIST_FIELD) -> bool:
    """Whether a 0..1 image is already what the net reads: one channel, ``size`` x ``size``, and the
    median of its outermost ring of pixels dark (below 0.5), i.e. white ink on a black field."""
    if img.shape != (size, size):
        return False
    ring = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    return float(np.median(ring)) < 0.5


def to_pil(img: np.ndarray) -> Image.Image:
    """A 0..1 float image, ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``, as an L, RGB or RGBA picture."""
    mode = {2: "L"}.get(img.ndim) or {3: "RGB", 4: "RGBA"}[img.shape[-1]]
    return Image.fromarray(np.round(img * 255).astype(np.uint8), mode=mode)


def preprocess_array(img: np.ndarray, size: int = MNIST_FIELD, name: str = "array") -> np.ndarray:
    """The MNIST-style steps of :func:`preprocess` for a 0..1 numpy image (as if it were a file)."""
    return preprocess(to_pil(img), size=size, name=name)


def expand_inputs(items: Iterable[str]) -> tuple[list[Path], list[Failure]]:
    """Paths from arguments: a directory gives its image files (by suffix, sorted, not recursive);
    a pattern with ``*``, ``?`` or ``[`` is expanded (for shells that did not); others stay as given.
    Nothing matched, and a path the system refuses to look at (permissions, a name too long), is a
    :class:`Failure` of its own."""
    paths: list[Path] = []
    failures: list[Failure] = []
    for item in items:
        try:
            found, problem = _expand(item)
        except OSError as err:
            reason = err.strerror or type(err).__name__
            found, problem = [], f"cannot read it ({reason}); check the path and its permissions"
        if problem:
            failures.append(Failure(item, printable(f"{item}: {problem}")))
        paths.extend(found)
    return paths, failures


def _expand(item: str) -> tuple[list[Path], str | None]:
    """``(paths, problem)`` for one argument of :func:`expand_inputs`; OS errors are the caller's."""
    p = Path(item)
    if p.is_dir():
        found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        return found, None if found else f"directory holds no {ALLOWED_TEXT} files (by suffix)"
    if not p.exists() and glob.has_magic(item):
        found = sorted(Path(q) for q in glob.glob(item, recursive=True) if Path(q).is_file())
        return found, None if found else "the pattern matches no files; check it"
    return [p], None


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
    return predictor.predictions(names, fields), failures


def save_input_image(pred: Prediction, directory: str | Path, taken: set[str] | None = None, *,
                     enlarge: int = ENLARGE) -> Path:
    """Write the 28x28 image the net saw as ``DIR/<file stem>.input.png`` and, because that is tiny on a
    screen, a copy enlarged ``enlarge`` times with nearest-neighbour (every pixel a sharp square) as
    ``DIR/<file stem>.input.x10.png`` (280x280; none when ``enlarge`` is 1 or less). Both are written
    atomically. Returns the path of the 28x28 image.

    ``taken`` holds the names already written in this batch: a later input with the same stem gets
    ``<stem>-2.input.png`` (and ``<stem>-2.input.x10.png``), ``-3``... (chosen before writing, so that
    nothing is overwritten)."""
    directory = Path(directory)
    stem = Path(pred.name).stem
    base, n = stem, 2
    while taken is not None and f"{base}.input.png" in taken:
        base, n = f"{stem}-{n}", n + 1
    if taken is not None:
        taken.add(f"{base}.input.png")
    img = to_uint8_image(pred.input_image)
    out = directory / f"{base}.input.png"
    atomic_write_bytes(out, _png_bytes(img))
    if enlarge > 1:
        big = img.resize((img.width * enlarge, img.height * enlarge), Image.Resampling.NEAREST)
        atomic_write_bytes(directory / f"{base}.input.x{enlarge}.png", _png_bytes(big))
    return out


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
