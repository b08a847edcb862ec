"""Predict the class of a user's own digit images with a trained run.

The net was trained on MNIST-like 28x28 images (white ink on black, the digit in a 20 px box, centred
by mass), normalised with the dataset's mean and std. :mod:`cnnlab.preprocessing` makes any image of a
digit into such a field (steps 1-7: ink, polarity, background, the digit kept, crop, scale, centre);
:meth:`Predictor.tensor` normalises it (step 8). docs/predict.md shows what works and what does not,
with accuracies measured on photo-like, typed and pen digits (``benchmarks/``).

Untrusted files are opened defensively by :func:`cnnlab.imageio.open_image` (an allow-list of
formats, the decoding cost bounded before decoding by a pixel cap, ``max_pixels``, and a reduced decode
of large images, truncation and decompression bombs refused); every refusal is a one-line
:class:`BadImageError`, and :func:`predict_paths` reports it for that file and goes on with the others.

A :class:`Predictor` is callable: ``predictor(x)`` takes a path, bytes, a binary file, a PIL image, a numpy array, a
torch tensor, or a list of these (the rules are in :meth:`Predictor.__call__`); ``predictor.read_number(x)`` reads
every digit written in a row in an image (a :class:`NumberPrediction`). The CLI
(``cnnlab predict``, through :func:`predict_paths`) and the web app (``cnnlab serve``) both use it.
"""

from __future__ import annotations

import contextlib
import glob
import io
import operator
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, PngImagePlugin

from cnnlab.checkpoint import (checkpoint_stamp, load_checkpoint_and_digest, model_from_checkpoint, refuse_diverged,
                               resolve_checkpoint)
from cnnlab.data.folder import SIZE as FOLDER_SIZE
from cnnlab.data.folder import gray_square, read_as_class
from cnnlab.dataset_names import PAPER_SPLIT, dataset_kind, directory_of, paper_of
from cnnlab.devices import resolve_device
from cnnlab.errors import CheckpointError, CnnlabError, first_line, printable, short_repr, yes_no
from cnnlab.fileio import as_path, atomic_write_bytes, is_dir, open_if_regular, set_aside, temp_part
from cnnlab.pretrained import load_pretrained
from cnnlab.runs import LATEST, resolve_run
from cnnlab.text import plural
from cnnlab.imageio import (
    ALLOWED_TEXT, DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, BadImageError, check_max_pixels, check_pixels, open_image,
    unit_gray, upright,
)
from cnnlab.preprocessing import (
    MNIST_FIELD, THICK_NOTE, WORK_SIDE, NumberFields, alpha_is_ink, clothes_field, digit_and_marks, number_fields,
    number_lines, thick_strokes, to_uint8_image,
)

#: Float pixels may stray this far outside 0..1 (rounding) before an array is refused as not 0..1.
RANGE_TOLERANCE = 1e-3
#: An image of the other paper than the net's training images gets a note (:attr:`Prediction.paper`) only where
#: those were clearly on one paper: their recorded mean this far or farther from :data:`PAPER_SPLIT` (MNIST as PNGs:
#: 0.13; black letters on white paper: about 0.9). Between, no paper is told.
PAPER_MARGIN = 0.15
#: What ``preprocess=None`` means (:meth:`Predictor.__call__`), said where another value is refused.
AUTOMATIC = "automatic"
#: The batch of every pass of the net in :meth:`Predictor.probabilities`. A field's probabilities moved in their last
#: digits with the size of the batch it was run in (the CPU's kernels are chosen by it: on 2 threads, batch 1 gave
#: one set of bits and 2-512 another; on 1 thread Inception had a third from 16 up), so a file predicted with others
#: got other numbers than alone, or than from ``cnnlab serve``. At one size they depend neither on the other images
#: in the batch nor on the place in it (measured: both lecture nets and basic_cnn, shipped and trained, MNIST,
#: Fashion-MNIST and folder nets, either memory format, 1-3 threads, batches of 8, 16 and 32). 8 costs little either
#: way: a single image (each request of the server) runs 8 fields, a folder runs at batch 256's speed
#: (docs/predict.md, "One file, one answer").
NET_BATCH = 8
#: ``save_input_image`` also writes the input enlarged this many times (nearest-neighbour): 28 px -> 280 px.
ENLARGE = 10


# ----------------------------------------------------------------------------- prediction


@dataclass(eq=False)  # each is its own: == compared the field arrays (ValueError), now identity
class Prediction:
    """One image's result: the classes ranked by probability, and the 28x28 input the net saw."""

    name: str
    probabilities: list[float]
    classes: list[str]
    input_image: np.ndarray = field(repr=False)  # (H, W) float32 in 0..1
    #: How many digits the preprocessing saw side by side in the image (:func:`cnnlab.preprocessing.select_number`);
    #: 2 or more: the image holds a number, and the net read one digit of it (or several squeezed into its field).
    #: :meth:`Predictor.read_number` reads each. 1 for an input taken as is.
    marks: int = 1
    #: The strokes' width in the field (px of 28) when a digit's are wider than almost any of MNIST's
    #: (:data:`cnnlab.preprocessing.THICK_NOTE`): a small digit drawn with a broad pen, which the nets misread;
    #: 0.0 otherwise, and for nets that read clothes or an image folder's pictures.
    thick: float = 0.0
    #: ``"light"`` or ``"dark"``: the paper of an image the net read as it is (an image folder's net; any net with
    #: ``preprocess=False``) where its training images were clearly on the other one (their mean,
    #: :attr:`trained_mean`): light marks on dark paper read against a mostly light image. Nothing is inverted
    #: silently: :meth:`paper_note` says to invert it if its marks are the ink. "" otherwise.
    paper: str = ""
    #: The mean of the net's training images (0..1), as its run recorded it: what :attr:`paper` is told against.
    trained_mean: float = 0.0

    def __repr__(self) -> str:
        """One line: the image's name, the likeliest class and its probability (the probabilities of every class, and
        the classes, are its attributes: 1,000 classes were kilobytes)."""
        label, probability = self.top(1)[0] if self.classes else (None, None)
        marks = f", marks={self.marks}" if self.marks != 1 else ""
        return f"Prediction(name={short_repr(self.name)}, label={short_repr(label)}, probability={probability!r}{marks})"

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` likeliest classes with their probabilities; ``k`` is any whole number >= 0 (an ``int``, a numpy
        or a 0-d torch integer: anything with ``__index__``; not a bool or a float)."""
        boolean = isinstance(k, (bool, np.bool_)) or (isinstance(k, torch.Tensor) and k.dtype == torch.bool)
        try:
            n = None if boolean else operator.index(k)
        except TypeError:
            n = None
        if n is None or n < 0:
            raise CnnlabError(f"top(k): k is how many classes to list, a whole number >= 0, got {k!r}")
        order = np.argsort(self.probabilities)[::-1][:n]
        return [(self.classes[i], float(self.probabilities[i])) for i in order]

    @property
    def label(self) -> str:
        """The likeliest class, by its name (``"7"``, ``"Dress"``): ``top(1)``'s."""
        return self.top(1)[0][0]

    def to_dict(self, k: int = 3) -> dict:
        """The result as ``cnnlab predict --json`` writes it: ``file``, ``prediction`` (:attr:`label`) and ``top``
        (the ``k`` likeliest classes, each ``class`` and ``probability``); ``digits_seen``, ``image_paper`` and
        ``thick_strokes`` only where :attr:`marks`, :attr:`paper` and :attr:`thick` have something to say."""
        out = {"file": self.name, "prediction": self.label,
               "top": [{"class": c, "probability": p} for c, p in self.top(k)]}
        out = out if self.marks < 2 else {**out, "digits_seen": self.marks}
        out = out if not self.paper else {**out, "image_paper": self.paper}
        return out if not self.thick else {**out, "thick_strokes": round(self.thick, 1)}

    def thick_note(self) -> str:
        """What :attr:`thick` means for the reader, or "" when the strokes are not too thick."""
        if not self.thick:
            return ""
        return (f"its strokes are {self.thick:.1f} px wide in the 28x28 field the net saw, where 99.9% of MNIST's "
                f"digits have under {THICK_NOTE} px: the net often misreads such digits; write or draw the digit "
                "larger, or with a thinner pen")

    def paper_note(self) -> str:
        """What :attr:`paper` means for the reader, or "" when the image's paper is the net's training images'."""
        if not self.paper:
            return ""
        marks = "light marks on dark" if self.paper == "light" else "dark marks on light"
        return (f"the image is mostly {self.paper}, where the net's training images were {marks} paper (their mean "
                f"{self.trained_mean:.2f}); this net reads images as they are, nothing is inverted: if the image's "
                f"marks are its ink, invert it ({marks}) and predict again")


@dataclass(eq=False)
class NumberPrediction:
    """A number read from one image (:meth:`Predictor.read_number`): its digits left to right, each a
    :class:`Prediction` of its own field."""

    name: str
    digits: list[Prediction]
    #: A point, a comma or a minus, by the index of the digit it comes before (found by their shape, not by the net).
    signs: list[tuple[int, str]] = field(default_factory=list)
    #: Marks as heavy as a digit away from the number's row (another line, a word): not read.
    left_out: int = 0
    #: Which row of the image, from the top (1, 2, ...), when every row was read (:meth:`Predictor.read_lines`); 0 else.
    line: int = 0
    #: Digits read whole though much wider than high (by index into ``digits``: how many times): digits that touch
    #: may have been read as one there (:data:`cnnlab.preprocessing.WIDE_NOTE`).
    wide: dict[int, float] = field(default_factory=dict)
    #: Why this row of a page could not be read (:meth:`Predictor.read_lines`: a digit that is one dot or blob), the
    #: one line ``cnnlab predict --lines`` says for it; its ``digits`` none, its :attr:`label` "" and its
    #: :attr:`probability` 0. "" for a number read; the page's other rows are read all the same.
    refused: str = ""

    def __repr__(self) -> str:
        """One line: the image's name, the number read, how sure, and how many digits (each a :class:`Prediction`
        in :attr:`digits`)."""
        line = f", line={self.line}" if self.line else ""
        refused = f", refused={short_repr(self.refused)}" if self.refused else ""
        return (f"NumberPrediction(name={short_repr(self.name)}, label={short_repr(self.label)}, "
                f"probability={self.probability!r}, digits={len(self.digits)}{line}{refused})")

    @property
    def label(self) -> str:
        """The number as the digits' most likely classes, left to right, with its signs (``"2026"``, ``"-3.5"``)."""
        signs = dict(self.signs)
        return "".join(signs.get(i, "") + d.label for i, d in enumerate(self.digits))

    @property
    def probability(self) -> float:
        """The product of the digits' top probabilities: how sure the net is of the whole number (0 for a row
        :attr:`refused`)."""
        return 0.0 if self.refused else float(np.prod([d.top(1)[0][1] for d in self.digits]))

    @property
    def input_image(self) -> np.ndarray:
        """The digits' fields side by side, as the net saw them, ``(H, W * digits)`` (``(0, 0)`` for a row
        :attr:`refused`)."""
        if not self.digits:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate([d.input_image for d in self.digits], axis=1)

    def to_dict(self, k: int = 3) -> dict:
        """The number as ``cnnlab predict --number --json`` writes it: ``file``, ``number`` (:attr:`label`),
        ``probability`` and ``digits`` (each its ``prediction`` and ``top`` ``k`` classes, and ``thick_strokes`` where
        its :attr:`Prediction.thick` says its strokes are too wide); ``line``, ``wide_digits`` and ``left_out`` only
        where :attr:`line`, :attr:`wide` and :attr:`left_out` have something to say; a row :attr:`refused`:
        ``file``, ``line`` and ``error``, as a file that could not be read (:meth:`Failure.to_dict`)."""
        if self.refused:
            return self.failure().to_dict()
        out = {"file": self.name, "number": self.label, "probability": self.probability,
               "digits": [{"prediction": d.label, "top": [{"class": c, "probability": p} for c, p in d.top(k)],
                           **({"thick_strokes": round(float(d.thick), 1)} if d.thick else {})} for d in self.digits]}
        out = out if not self.line else {"file": self.name, "line": self.line, **out}
        out = out if not self.wide else {**out, "wide_digits": sorted(self.wide)}
        return out if not self.left_out else {**out, "left_out": self.left_out}

    def failure(self) -> "Failure":
        """A row :attr:`refused`, as ``cnnlab predict`` reports an image it could not read."""
        return Failure(self.name, self.refused, self.line)

    def thick_note(self) -> str:
        """Which digits have strokes too thick for the net (each digit's :attr:`Prediction.thick`), and what it
        means, or "" when none has: a number written with a broad pen is misread as its digits are."""
        thick = [(i, d) for i, d in enumerate(self.digits) if d.thick]
        if not thick:
            return ""
        which = ", ".join(f"{i + 1} ('{d.label}', {d.thick:.1f} px)" for i, d in thick)
        return (f"{'digit' if len(thick) == 1 else 'digits'} {which}: strokes that wide in the 28x28 field the net "
                f"saw, where 99.9% of MNIST's digits have under {THICK_NOTE} px: the net often misreads such digits; "
                "write the number larger, or with a thinner pen")


@dataclass
class Failure:
    """A file that could not be predicted (or one row of a page, :attr:`line`), and the one-line reason."""

    name: str
    error: str
    #: The row of the page that could not be read (``--lines``: :attr:`NumberPrediction.refused`); 0 for a file.
    line: int = 0

    def to_dict(self) -> dict:
        """``{"file": ..., "error": ...}`` (with ``"line"`` for a row of a page), as ``cnnlab predict --json`` writes
        a file it could not predict."""
        return {"file": self.name, **({"line": self.line} if self.line else {}), "error": self.error}


def _dataset_shown(name: str) -> str:
    """A dataset's name without the folders above it (``folder:/home/me/pics`` is ``folder:pics``)."""
    found = directory_of(name)
    return f"{found[0]}:{found[1].name}" if found else name


def _checkpoint_shown(source: str, state: dict, digest: str) -> dict:
    """The file a predictor's net was loaded from, as a page or a script may name it (:attr:`Predictor.checkpoint`):
    ``file`` (the run folder's name and the file's, no folders above it; the shipped weights' file), ``step`` and
    ``epochs`` (the optimiser steps and whole epochs it had trained; None where it does not say: the shipped
    weights) and ``sha256`` (of the file's bytes as loaded; None where not known)."""
    entry = state.get("pretrained")
    if entry is not None:
        return {"file": entry.file, "step": None, "epochs": None, "sha256": entry.sha256}
    trained = state.get("train_state") or state.get("progress") or {}  # format 2's, or format 1's
    counts = {key: trained.get(key) if isinstance(trained, dict) else None for key in ("step", "epoch")}
    counts = {key: value if type(value) is int else None for key, value in counts.items()}
    path = Path(source).absolute() if source else None
    return {"file": printable(f"{path.parent.name}/{path.name}") if path else None, "step": counts["step"],
            "epochs": counts["epoch"], "sha256": digest or None}


def checkpoint_line(checkpoint: dict) -> str:
    """:attr:`Predictor.checkpoint` in a few words, for a log line: ``step 60, 1 epoch, sha256 0123456789ab``."""
    step, epochs, digest = checkpoint.get("step"), checkpoint.get("epochs"), checkpoint.get("sha256")
    parts = ([f"step {step:,}"] if step is not None else []) + ([plural(epochs, "epoch")] if epochs is not None else [])
    return ", ".join(parts + ([f"sha256 {digest[:12]}"] if digest else []))


class Predictor:
    """A trained net with its run's preprocessing: image in, class probabilities out.

    Built from a checkpoint dict (``model``, ``data`` with classes, mean, std, in_channels and
    image_size, ``state_dict``); :meth:`from_run` loads one from a run directory or ``.pt`` file.
    ``max_pixels`` caps the images it reads (width x height): from paths and bytes, checked before decoding; arrays,
    tensors and PIL images before any work on them (a 10000x10000 array took 1.2 GB to read: its pixels as floats).
    """

    def __init__(self, state: dict, device: str | torch.device = "cpu", source: str = "",
                 max_pixels: int = DEFAULT_MAX_PIXELS, digest: str = ""):
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
        #: Trained on an image folder (``folder:DIR``): images are prepared as that folder's were (grayscale,
        #: resized), not as digits (the ink found, centred, inverted to white on black).
        self.as_folder = dataset_kind(str(data.get("name", ""))) == "folder" and self.image_size == FOLDER_SIZE
        #: Trained on Fashion-MNIST: an image is one piece of clothing, prepared as that dataset's were
        #: (:func:`cnnlab.preprocessing.clothes_field`), not as a digit (its strokes found, boxed in 20 px).
        self.as_clothes = str(data.get("name", "")) == "fashion-mnist"
        #: The dataset the net was trained on, as a page may name it: ``mnist``, ``fashion-mnist``, ``idx:NAME`` or
        #: ``folder:NAME`` (the folder's own name, not its path).
        self.dataset = _dataset_shown(str(data.get("name", "")))
        #: The dataset as the run recorded it (``folder:/home/me/pics``, its whole path): where ``--show-input``
        #: may not write (:func:`read_by_training_data`).
        self.data_name = str(data.get("name", ""))
        #: ``"dark"`` or ``"light"``: the paper of the net's training images, by their recorded mean
        #: (:func:`cnnlab.dataset_names.paper_of`; MNIST's and Fashion-MNIST's are dark).
        self.paper = paper_of(self.mean)
        #: The file the net was loaded from: ``{"file", "step", "epochs", "sha256"}`` (``_checkpoint_shown``).
        self.checkpoint = _checkpoint_shown(source, state, digest)
        #: The checkpoint file's stat (and its sidecar's, and its run's status.json's) as :meth:`from_file` found them
        #: before loading it (:func:`cnnlab.checkpoint.checkpoint_stamp`): ``cnnlab serve`` loads it again when it
        #: changes. None: not from a file.
        self.stamp: tuple | None = None

    def __repr__(self) -> str:
        """One line: the net, its data and classes, where it runs, and where its weights came from."""
        return (f"Predictor(model={self.model_name!r}, dataset={short_repr(self.dataset)}, classes={len(self.classes)}, "
                f"preparation={self.preparation!r}, device={str(self.device)!r}, source={short_repr(self.source)})")

    @property
    def preparation(self) -> str:
        """How an image is made into what the net reads: ``"as is"`` (an image folder's net: grayscale, resized, not
        inverted), ``"clothes"`` (:func:`cnnlab.preprocessing.clothes_field`) or ``"digit"`` (white ink on black,
        centred: :func:`cnnlab.preprocessing.preprocess`)."""
        return "as is" if self.as_folder else "clothes" if self.as_clothes else "digit"

    def image_paper(self, field_01: np.ndarray) -> str:
        """``"light"`` or ``"dark"``: the paper of a field read as it is (most of its pixels light, or dark) where the
        net's training images were clearly on the other one (:data:`PAPER_MARGIN`); "" otherwise."""
        if abs(self.mean - PAPER_SPLIT) < PAPER_MARGIN:
            return ""
        seen = "light" if float(np.median(field_01)) > PAPER_SPLIT else "dark"
        return seen if seen != self.paper else ""

    @classmethod
    def from_run(cls, run: str | Path, which: str | None = None, device: str = "auto",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> "Predictor":
        """The net of a run: a run folder (its ``which`` checkpoint, ``"last"`` unless given, or ``"best"``), a ``.pt``
        file written by cnnlab (a ``which`` given must name it: ``which="last"`` beside a best.pt is refused, not
        answered from best.pt: :func:`cnnlab.checkpoint.resolve_checkpoint`), ``"latest"`` (the newest run under
        ``runs/``) or a :class:`cnnlab.Run`; on ``device``
        (``"auto"``: a GPU if there is one), reading images up to ``max_pixels`` (width x height)."""
        check_max_pixels(max_pixels)  # before the checkpoint is read
        given = resolve_run(run) if isinstance(run, str) and run == LATEST else run
        path = resolve_checkpoint(given, which)
        refuse_diverged(path, file_given=path == Path(given))  # its best.pt named as what was given takes it
        return cls.from_file(path, device=device, max_pixels=max_pixels)

    @classmethod
    def from_file(cls, path: str | Path, device: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS) -> "Predictor":
        """The net of the checkpoint file ``path`` itself, never a run folder's (a folder there is refused: what
        ``cnnlab serve`` loads again when the file it serves changes). As everywhere a run's net answers, the last.pt
        of a run whose training diverged is refused (:func:`cnnlab.checkpoint.refuse_diverged`). A ``path`` that is no
        path (None, a number, ``""``) is one line, as :meth:`from_run`'s."""
        check_max_pixels(max_pixels)
        path = as_path(path, "a checkpoint file", CheckpointError)
        if is_dir(path):  # not load_checkpoint's "pass a run directory": a run folder is from_run's
            raise CheckpointError(f"{path}: a folder, not a checkpoint file; give its checkpoint "
                                  f"({path / 'last.pt'}), or Predictor.from_run({str(path)!r}) for a run folder's net")
        refuse_diverged(path)
        stamp = checkpoint_stamp(path)  # before the load: a file replaced meanwhile reads as changed, loaded again
        state, digest = load_checkpoint_and_digest(path, file_given=True)  # a damaged one's fix names the file to give
        predictor = cls(state, device=device, source=str(path), max_pixels=max_pixels, digest=digest)
        predictor.stamp = stamp
        return predictor

    @classmethod
    def pretrained(cls, model: str, dataset: str = "mnist", device: str = "auto",
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> "Predictor":
        """The shipped weights of ``model`` on ``dataset`` (see ``cnnlab models``), verified before use."""
        check_max_pixels(max_pixels)
        state = load_pretrained(model, dataset)
        return cls(state, device=device, source=f"pretrained {state['pretrained'].name}", max_pixels=max_pixels)

    def tensor(self, fields_01: Iterable[np.ndarray]) -> torch.Tensor:
        """Step 8: stack 0..1 fields into a normalised ``(B, C, H, W)`` batch on the model's device."""
        x = torch.from_numpy(np.stack(list(fields_01))).unsqueeze(1)  # (B, 1, H, W)
        x = (x - self.mean) / self.std
        if self.in_channels != 1:
            x = x.expand(-1, self.in_channels, -1, -1)  # a gray digit for a colour net: same on every channel
        return x.to(self.device)

    def prepare(self, source, name: str | None = None, preprocess: bool | None = None) -> np.ndarray:
        """One image as the ``(H, W)`` float32 field in 0..1 the net reads (before normalisation).

        ``source``: a path or bytes (opened defensively, within :attr:`max_pixels`), a PIL image, or a numpy
        array ((H, W) or (H, W, C) with C = 1, 2, 3 or 4; uint8 0..255 or float 0..1). ``preprocess`` as in
        :meth:`__call__`.
        Bad input raises a one-line :class:`BadImageError`."""
        return self.prepared(source, name, preprocess)[0]

    def prepared(self, source, name: str | None = None, preprocess: bool | None = None) -> tuple[np.ndarray, int]:
        """:meth:`prepare`'s field, and how many digits were seen side by side (:attr:`Prediction.marks`)."""
        preprocess = yes_no("preprocess", preprocess, none=AUTOMATIC)  # (0 or np.False_: not "is False")
        name = name or (str(source) if isinstance(source, (str, Path)) else "image")
        if isinstance(source, np.ndarray):
            self._check_pixels(source.shape[:2], name)
            img = unit_image(source, name)  # (H, W) or (H, W, C) float32 in 0..1
            if self.as_folder and preprocess is not False:
                return _folder_field(to_pil(img)), 1
            if img.ndim == 2 and preprocess is None and is_mnist_field(img, self.image_size):
                return self._mnist_field(img, name), 1
            if preprocess is False:
                return self._as_field(img, name), 1
            source = to_pil(img)  # colour: read as the L, LA, RGB or RGBA file of these pixels is
        source = self._open(source, name)
        if preprocess is False:
            return self._as_field(unit_gray(source, name)[0], name), 1
        if self.as_folder:
            return _folder_field(source), 1
        if preprocess is None and source.size == (self.image_size, self.image_size):
            gray, alpha = unit_gray(source, name)
            if not alpha_is_ink(alpha) and is_mnist_field(gray, self.image_size):
                return self._mnist_field(gray, name), 1  # a field saved as a file, in colour or opaque: as its array is
        if self.as_clothes:
            return clothes_field(source, size=self.image_size, name=name), 1
        return digit_and_marks(source, size=self.image_size, name=name)

    def _check_pixels(self, shape: tuple, name: str) -> None:
        """An array's or a PIL image's (height, width) within :attr:`max_pixels`, else a one-line BadImageError."""
        if len(shape) == 2:
            check_pixels(name, shape[1], shape[0], self.max_pixels, "max_pixels",
                         "reduce it first (a[::k, ::k], or PIL's Image.reduce(k)), or raise max_pixels")

    def _open(self, source, name: str) -> Image.Image:
        """A PIL image turned upright by its EXIF orientation, as a file is (refused when empty); anything else
        opened defensively (:func:`open_image`)."""
        if isinstance(source, Image.Image):
            if 0 in source.size:
                raise BadImageError(f"{name}: an empty image ({source.width}x{source.height} pixels); give one with pixels")
            self._check_pixels(source.size[::-1], name)
            return upright(source, name)  # a phone photo's EXIF orientation, as a file's (open_image)
        # a folder's images were decoded whole: no reduced decoding
        return open_image(source, name, max_pixels=self.max_pixels, max_side=None if self.as_folder else WORK_SIDE)

    def number_fields(self, source, name: str | None = None, *, lines: bool = False,
                      halves: bool = True) -> NumberFields | list[NumberFields]:
        """A number written in a row in one image, as one field per digit, left to right, and its signs
        (:func:`cnnlab.preprocessing.number_fields`; a wide digit read as two where the net is surer of its halves).
        With ``lines``, every row of digits, top to bottom, a :class:`NumberFields` each
        (:func:`cnnlab.preprocessing.number_lines`). ``source`` as in :meth:`prepare`; arrays are always preprocessed.
        ``halves=False``: the fields as found, the net not run (:meth:`halves_where_surer` decides on the halves)."""
        name = name or (str(source) if isinstance(source, (str, Path)) else "image")
        if self.as_folder or self.as_clothes:
            what = "an image folder reads whole images" if self.as_folder else "Fashion-MNIST reads one piece of clothing"
            raise CnnlabError(f"{self.source}: a net trained on {what}, not the digits of a number; classify the "
                              "image (predictor(x), or cnnlab predict without --number or --lines)")
        if isinstance(source, np.ndarray):
            self._check_pixels(source.shape[:2], name)
            source = to_pil(unit_image(source, name))
        img = self._open(source, name)
        decide = self.halves_where_surer if halves else (lambda found: found)
        if lines:
            return [decide(found) for found in number_lines(img, size=self.image_size, name=name)]
        return decide(number_fields(img, size=self.image_size, name=name))

    def halves_where_surer(self, found: NumberFields) -> NumberFields:
        """Wide digits read as two that touch where the net is surer of the halves than of the whole (the net's
        pass: under a caller's lock where the model is shared, as the drawing page's is)."""
        if not found.splits:
            return found
        keys = list(found.splits)
        whole = self.probabilities([found.fields[i] for i in keys]).max(axis=1)
        halves = self.probabilities([f for i in keys for f in found.splits[i]]).max(axis=1).reshape(-1, 2).prod(axis=1)
        return found.split({i for i, w, h in zip(keys, whole, halves) if h > w})

    def _mnist_field(self, gray: np.ndarray, name: str) -> np.ndarray:
        """A grayscale MNIST field (:func:`is_mnist_field`) taken as is, whatever held it (an array, a tensor, a PIL
        image or a file; L, LA, RGB or RGBA, opaque): a blank one is refused (it was classified: '1', 40%)."""
        if float(np.ptp(gray)) < 1 / 255:
            raise BadImageError(f"{name}: no ink found (a blank {self.image_size}x{self.image_size} field); "
                                "draw or write a digit, or pass preprocess=False to classify it as it is")
        return self._as_field(gray, name)

    def _as_field(self, img: np.ndarray, name: str) -> np.ndarray:
        """An image taken as is: grayscale (luminance for colour), and already ``image_size`` square."""
        if img.ndim == 3:
            img = np.asarray(to_pil(img).convert("L"), dtype=np.float32) / 255.0
        if img.shape != (self.image_size, self.image_size):
            raise BadImageError(f"{name}: taken as is (preprocess=False) it must be {self.image_size}x{self.image_size}, "
                                f"got {img.shape[0]}x{img.shape[1]}; let it be preprocessed (preprocess=None or True)")
        return np.array(img, dtype=np.float32)

    @torch.inference_mode()
    def probabilities(self, fields_01: list[np.ndarray]) -> np.ndarray:
        """``(B, classes)`` softmax probabilities of prepared fields, every pass of the net a batch of
        :data:`NET_BATCH` (the last one filled with blank fields, whose rows are dropped): a field's numbers are the
        same to the last bit whatever else is predicted with it (:data:`NET_BATCH` says why)."""
        out = []
        for i in range(0, len(fields_01), NET_BATCH):
            chunk = list(fields_01[i : i + NET_BATCH])
            blank = np.zeros_like(chunk[0])
            logits = self.model(self.tensor(chunk + [blank] * (NET_BATCH - len(chunk)))).float()
            out.append(logits.softmax(1)[: len(chunk)].cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def predictions(self, names: list[str], fields_01: list[np.ndarray],
                    marks: list[int] | None = None, as_is: bool | None = None) -> list[Prediction]:
        """Prepared fields, predicted in batches, as :class:`Prediction` objects named ``names`` (with the
        digits seen side by side in each image, ``marks``, when given). ``as_is``: the fields are the images as they
        are, not a digit's or a clothes' steps (default: for an image folder's net), so their paper is told against
        the training images' (:attr:`Prediction.paper`)."""
        probs = self.probabilities(fields_01)
        marks = marks or [1] * len(names)
        digits = not (self.as_folder or self.as_clothes)
        as_is = self.as_folder if as_is is None else as_is
        return [Prediction(n, [float(v) for v in p], self.classes, f, m, thick_strokes(f) if digits else 0.0,
                           self.image_paper(f) if as_is else "", self.mean)
                for n, p, f, m in zip(names, probs, fields_01, marks)]

    def read_number(self, x, *, name: str | None = None) -> NumberPrediction | list[NumberPrediction]:
        """Read a number: every digit written in a row in the image, left to right (``"2026"``), each classified
        on its own field. ``x`` as in :meth:`__call__` (one image gives one :class:`NumberPrediction`, a batch or a
        list gives a list); every image is preprocessed. A wide digit is read as two that touch where the net is surer
        of its halves; a point, a comma and a leading minus are read by their shape (docs/predict.md, "Numbers")."""
        items, single = split_inputs(x, name, self.image_size)
        numbers = [self.number(item_name, self.number_fields(source, item_name)) for item_name, source in items]
        return numbers[0] if single else numbers

    def read_lines(self, x, *, name: str | None = None) -> list[NumberPrediction] | list[list[NumberPrediction]]:
        """Read every row of digits in the image, top to bottom, each as :meth:`read_number` reads its one row:
        a list of :class:`NumberPrediction` (``.line`` 1, 2, ...) for one image, a list of such lists for a batch
        or a list. Rows are told apart by the gaps between them (docs/predict.md, "Several lines"). A row that cannot
        be read is one with no digits and its refusal (``.refused``); a page none of whose rows can be read raises."""
        items, single = split_inputs(x, name, self.image_size)
        pages = [self.lines(item_name, self.number_fields(source, item_name, lines=True)) for item_name, source in items]
        return pages[0] if single else pages

    def number(self, name: str, found: NumberFields, line: int = 0) -> NumberPrediction:
        """A number's digit fields (:meth:`number_fields`), predicted, as one :class:`NumberPrediction` (a row of a
        page that could not be read: its refusal, :attr:`NumberPrediction.refused`)."""
        if found.refused:
            return NumberPrediction(name, [], line=line, refused=found.refused)
        names = [f"{name}[{i}]" for i in range(len(found.fields))]
        return NumberPrediction(name, self.predictions(names, found.fields), found.signs, found.left_out, line,
                                found.wide)

    def lines(self, name: str, rows: list[NumberFields]) -> list[NumberPrediction]:
        """Each row's fields (:meth:`number_fields` with ``lines``) as a :class:`NumberPrediction`, numbered from 1."""
        return [self.number(name, found, line) for line, found in enumerate(rows, 1)]

    def __call__(self, x, *, name: str | None = None, preprocess: bool | None = None) -> Prediction | list[Prediction]:
        """Predict ``x``: one image gives one :class:`Prediction`, a batch or a list gives a list.

        ``x`` is one of:

        - a path (``str`` or ``Path``), the file's ``bytes`` (or a ``bytearray`` or ``memoryview`` of them), or
          a file open for reading in binary mode (``open(path, "rb")``, ``io.BytesIO``; read from where it
          stands): PNG, JPEG, BMP, GIF or WebP, opened defensively;
        - a PIL image;
        - a numpy array: one image (H, W), or (H, W, C) when the last axis has 1, 2, 3 or 4 entries
          (gray, gray+alpha, RGB, RGBA: read as a PIL image of that mode is), or a batch (N, H, W); uint8 (or any
          integers) in 0..255, float in 0..1 (``np.matrix`` and other subclasses as the plain array);
        - a torch tensor: one image (H, W) or (C, H, W) with C = 1, 2, 3 or 4, or a batch (N, C, H, W) (a
          ``(N, H, W)`` of N = 2, 3 or 4 at the net's input size, N gray images or one colour image, is refused:
          ``t.unsqueeze(1)`` for the images, ``t.unsqueeze(0)`` for the colour image; channels last, ``(H, W, C)``,
          is refused naming ``t.permute(2, 0, 1)``);
          same value ranges (a tensor normalised with the dataset's mean and std is refused: un-normalise it);
          a quantized tensor is dequantized, a sparse one made dense; a nested one is refused (give its images
          as a list);
        - a list or tuple of single images of any of these kinds, mixed freely.

        Preprocessing (``preprocess=None``, the default): files, bytes and PIL images always go through
        the MNIST-style steps of :func:`preprocess` (grayscale, polarity, background removal, the digit kept,
        crop, 20 px box, centre of mass).
        A numpy or tensor image is taken **as is** (scaled to 0..1) when it already is an MNIST-like field:
        a single-channel ``image_size`` x ``image_size`` (28x28) image whose outermost ring of pixels is
        mostly dark (median below 0.5), i.e. white ink on black (a blank one is refused: no ink); any other
        array is preprocessed like a file. ``preprocess=True`` forces the steps, ``preprocess=False`` takes every input as is (a bool, Python's
        or numpy's; 0, 1 and other values that only compare equal to one are refused) (it must
        then be ``image_size`` square; colour becomes luminance). An image read as it is (``preprocess=False``, or any
        image for an image folder's net) that is mostly light where the net's training images were light marks on
        dark paper, or the other way round, is predicted as it is, with a note (:attr:`Prediction.paper`).
        ``name`` names the input in messages and in the result (default: the path, or "bytes", "image", "array",
        "tensor", with ``[i]`` for the i-th item of a batch or list). Bad input raises a one-line :class:`BadImageError`.
        """
        preprocess = yes_no("preprocess", preprocess, none=AUTOMATIC)  # before the images are read
        items, single = split_inputs(x, name, self.image_size)
        prepared = [self.prepared(source, item_name, preprocess) for item_name, source in items]
        preds = self.predictions([n for n, _ in items], [f for f, _ in prepared], [m for _, m in prepared],
                                 as_is=self.as_folder or preprocess is False)
        return preds[0] if single else preds


# ----------------------------------------------------------------------------- inputs of Predictor.__call__


def split_inputs(x, name: str | None = None, size: int | None = None) -> tuple[list[tuple[str, Any]], bool]:
    """``([(name, one image), ...], single)``: the images in ``x`` (tensors become ``(H, W[, C])`` numpy
    arrays, batches are split) and whether ``x`` was a single image. ``size``: the net's input side, where a
    tensor ``(2..4, size, size)`` is refused as ambiguous (:func:`_tensor_images`). Raises :class:`BadImageError`."""
    if isinstance(x, (str, Path)):
        return [(name or str(x), x)], True
    if isinstance(x, (bytes, bytearray, memoryview, Image.Image)):
        return [(name or ("image" if isinstance(x, Image.Image) else "bytes"), x)], True
    if callable(getattr(x, "read", None)):  # an open binary file: open(path, "rb"), io.BytesIO, a web upload
        return [(name or _file_name(x), x)], True
    if isinstance(x, torch.Tensor):
        return _tensor_images(x, name or "tensor", size)
    if isinstance(x, np.ndarray):
        return _array_images(x, name or "array")
    if isinstance(x, (list, tuple)):
        items = []
        for i, item in enumerate(x):
            named = isinstance(item, (str, Path)) or _file_name(item) != "file"  # a path, or a file opened by path
            default = None if named else f"{name or 'input'}[{i}]"
            sub, single = split_inputs(item, default, size)
            if not single:
                raise BadImageError(f"{default or item}: a list holds single images, not batches; "
                                    "pass the batch on its own, or list its images")
            items += sub
        return items, False
    raise BadImageError(f"{name or 'input'}: cannot predict a {type(x).__name__}; give a path, bytes, a binary file, "
                        "a PIL image, a numpy array, a torch tensor, or a list of them")


def _file_name(f) -> str:
    """What messages call an open file: its path when it has one (``open()``'s files do), else "file"."""
    path = getattr(f, "name", None) if callable(getattr(f, "read", None)) else None
    return str(path) if isinstance(path, (str, Path)) else "file"


#: The channels an image's last axis (numpy, PIL's layout) or first axis (a tensor) may have: gray, gray+alpha
#: (``np.asarray(img.convert("LA"))``, torchvision's 2-channel images), RGB, RGBA.
CHANNELS = (1, 2, 3, 4)


def _array_images(a: np.ndarray, name: str) -> tuple[list[tuple[str, np.ndarray]], bool]:
    a = np.asarray(a)  # an ndarray subclass (np.matrix: its rows stay 2-D when indexed) as the plain array it is
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in CHANNELS):
        return [(name, a)], True
    if a.ndim == 3:
        return [(f"{name}[{i}]", img) for i, img in enumerate(a)], False
    raise BadImageError(f"{name}: an array of shape {a.shape} is no image; give (H, W), (H, W, C) with C = 1, 2, 3 "
                        "or 4, or a batch (N, H, W)")


def _tensor_images(t: torch.Tensor, name: str, size: int | None = None) -> tuple[list[tuple[str, np.ndarray]], bool]:
    """A tensor's images: ``(H, W)`` and ``(C, H, W)`` one, ``(N, C, H, W)`` a batch. ``(N, size, size)`` with N = 2,
    3 or 4 at the net's own input side is refused: N gray images (torchvision's ``MNIST(...).data[:N]``, and what a
    numpy ``(N, H, W)`` is here) or one colour image, and no rule tells them apart."""
    if t.is_nested:  # its shape cannot even be asked
        raise BadImageError(f"{name}: a nested tensor (images of different sizes in one tensor) is no image; give its "
                            "images as a list: list(t.unbind())")
    shape = tuple(t.shape)
    if t.ndim not in (2, 3, 4) or (t.ndim >= 3 and shape[-3] not in CHANNELS):
        raise BadImageError(f"{name}: a tensor of shape {shape} is no image; give (H, W), (C, H, W) with C = 1, 2, 3 "
                            f"or 4, or a batch (N, C, H, W){_layout_hint(shape, size)}")
    if t.ndim == 3 and shape[0] > 1 and shape[1:] == (size, size):
        n = shape[0]
        raise BadImageError(f"{name}: a tensor of shape {shape} at the net's input size is either {n} gray images "
                            f"or one image of {n} channels; give t.unsqueeze(1), shape ({n}, 1, {size}, {size}), for "
                            f"{n} images, or t.unsqueeze(0), shape (1, {n}, {size}, {size}), for one colour image")
    if t.is_meta:
        raise BadImageError(f"{name}: a tensor on the meta device holds no pixels; give one with data")
    a = _tensor_pixels(t, name)
    if a.ndim == 2:
        return [(name, a)], True
    if a.ndim == 3:
        return [(name, np.moveaxis(a, 0, -1))], True  # (C, H, W) -> (H, W, C)
    return [(f"{name}[{i}]", np.moveaxis(img, 0, -1)) for i, img in enumerate(a)], False


def _layout_hint(shape: tuple[int, ...], size: int | None) -> str:
    """The fix for a tensor of 3 or 4 axes whose channels are not where a tensor has them, by its shape: channels
    last (``(H, W, C)``, what ``torch.from_numpy(np.asarray(pil_image))`` gives; a batch ``(N, H, W, C)``) moved
    first with ``permute`` (and one colour image at the net's input ``size`` made a batch of one, which
    :func:`_tensor_images` does not take for C gray images); a first axis that can only be a count of gray images
    (``(N, H, W)``, its last axis no channel count) given its channel axis with ``unsqueeze(1)``. (``t.unsqueeze(1)``
    of an (H, W, C) tensor made H strips of W x C pixels, each refused as having no ink.)"""
    if len(shape) not in (3, 4) or shape[-3] in CHANNELS:
        return ""
    if shape[-1] in CHANNELS and len(shape) == 4:
        return (f"; for images with their channels last, as numpy and PIL lay them out, give t.permute(0, 3, 1, 2), "
                f"shape {(shape[0], shape[3], *shape[1:3])}")
    if shape[-1] in CHANNELS:
        one = shape[-1] > 1 and shape[:2] == (size, size)  # (C, size, size) alone reads as C gray images
        fix, became = ("t.permute(2, 0, 1).unsqueeze(0)", (1, shape[2], *shape[:2])) if one else \
            ("t.permute(2, 0, 1)", (shape[2], *shape[:2]))
        return f"; for an image with its channels last, as numpy and PIL lay it out, give {fix}, shape {became}"
    return "; for N gray images (N, H, W) give t.unsqueeze(1)" if len(shape) == 3 else ""


def _tensor_pixels(t: torch.Tensor, name: str) -> np.ndarray:
    """A tensor's values as a numpy array on the CPU: a quantized tensor dequantized (the values it stands for), a
    sparse one made dense, a conjugate or negative view resolved; floats other than float32/64 as float32."""
    try:
        a = t.detach()
        a = a.dequantize() if a.is_quantized else a
        a = a.cpu()
        a = a.to_dense() if a.layout != torch.strided else a  # sparse (COO, CSR...), mkldnn
        a = a.resolve_conj().resolve_neg()
        return (a.float() if a.is_floating_point() and a.dtype not in (torch.float32, torch.float64) else a).numpy()
    except (RuntimeError, TypeError, NotImplementedError) as err:  # a tensor subclass or layout numpy cannot hold
        raise BadImageError(f"{name}: the tensor's pixels cannot be read ({first_line(err)[:120]}); give a plain "
                            "tensor: t.detach().cpu().to_dense()") from None


def unit_image(a: np.ndarray, name: str = "array") -> np.ndarray:
    """A numpy image as float32 in 0..1, ``(H, W)`` or ``(H, W, C)`` (C = 1 is squeezed away).

    uint8 and other integers must lie in 0..255 (divided by 255), booleans are 0 or 1, floats must be
    finite and in 0..1. Anything else is a one-line :class:`BadImageError` that says what to pass."""
    a = np.asarray(a)  # np.matrix and other subclasses: the plain array (a matrix's rows would stay 2-D)
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
    if not np.isfinite(a).all():  # checked in the array's own type: a float64 of 1e300 is finite, and is no pixel
        raise BadImageError(f"{name}: the array holds NaN or infinite values; give finite pixels in 0..1")
    lo, hi = float(a.min()), float(a.max())
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise BadImageError(f"{name}: float pixels must lie in 0..1, got {lo:.3g}..{hi:.3g}; divide 0..255 values by 255, "
                            "or undo a normalisation (x * std + mean)")
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def is_mnist_field(img: np.ndarray, size: int = MNIST_FIELD) -> bool:
    """Whether a 0..1 image is already what the net reads: one channel, ``size`` x ``size``, and the
    median of its outermost ring of pixels dark (below 0.5), i.e. white ink on a black field."""
    if img.shape != (size, size):
        return False
    ring = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    return float(np.median(ring)) < 0.5


def to_pil(img: np.ndarray) -> Image.Image:
    """A 0..1 float image, ``(H, W)``, ``(H, W, 2)``, ``(H, W, 3)`` or ``(H, W, 4)``, as an L, LA, RGB or RGBA
    picture (read from then on as a file of that mode is: a transparent image's opacity is its ink)."""
    mode = {2: "L"}.get(img.ndim) or {2: "LA", 3: "RGB", 4: "RGBA"}[img.shape[-1]]
    return Image.fromarray(np.round(img * 255).astype(np.uint8), mode=mode)


def expand_inputs(items: Iterable[str], left_out: list[Path] | None = None) -> tuple[list[Path], list[Failure]]:
    """Paths from arguments: a directory gives its image entries (by suffix, sorted, not recursive: files, and
    also what is no folder but cannot be read as a file, a dangling symlink, a symlink loop, a FIFO, so that
    they are reported as when named); a pattern with ``*``, ``?`` or ``[`` is expanded (for shells that did
    not); others stay as given. The input images that ``--show-input`` wrote (:func:`written_input_image`)
    found in a directory or by a pattern are left out, and added to ``left_out`` when it is given; named
    one by one, they are read. Nothing matched, and a path the system refuses to look at (permissions, a
    name too long), is a :class:`Failure` of its own."""
    paths: list[Path] = []
    failures: list[Failure] = []
    for item in items:
        try:
            found, problem = _expand(item, left_out if left_out is not None else [])
        except OSError as err:
            reason = err.strerror or type(err).__name__
            found, problem = [], f"cannot read it ({reason}); check the path and its permissions"
        if problem:
            failures.append(Failure(item, printable(f"{item}: {problem}")))
        paths.extend(found)
    return paths, failures


def _expand(item: str, left_out: list[Path]) -> tuple[list[Path], str | None]:
    """``(paths, problem)`` for one argument of :func:`expand_inputs`; OS errors are the caller's."""
    p = Path(item)
    if p.is_dir():
        # not is_dir(), not is_file(): a dangling link, a link loop or a FIFO is listed, and refused when read
        found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and not q.is_dir())
        return _leave_out_written(found, left_out, "directory holds", f"no {ALLOWED_TEXT} files (by suffix)")
    if not p.exists() and glob.has_magic(item):
        return _leave_out_written(_glob_files(p), left_out, "the pattern matches", "no files; check it")
    return [p], None


def _leave_out_written(found: list[Path], left_out: list[Path], what: str, none: str) -> tuple[list[Path], str | None]:
    """``(found less the input images that --show-input wrote, problem)``: those go to ``left_out``; the problem
    (``what`` and ``none``: "directory holds no ...") when nothing is found, or nothing else."""
    if not found:
        return [], f"{what} {none}"
    written = {q for q in found if written_input_image(q)}
    if len(written) == len(found):
        return [], f"{what} only input images that --show-input wrote ({len(found)}); name one to predict it"
    left_out.extend(q for q in found if q in written)
    return [q for q in found if q not in written], None


#: How ``--show-input`` names what it writes (:func:`save_input_image`): ``<stem>.input.png``, ``<stem>.input.x10.png``.
INPUT_IMAGE_NAME = re.compile(r"\.input(\.x\d+)?\.png$")
#: The PNG text chunk (keyword, text) that marks an image as written by :func:`save_input_image`.
INPUT_IMAGE_MARK = ("Software", "cnnlab predict --show-input")
_MARK_BYTES = b"tEXt" + INPUT_IMAGE_MARK[0].encode() + b"\0" + INPUT_IMAGE_MARK[1].encode()


def written_input_image(path: Path) -> bool:
    """Whether ``path`` is an input image that ``--show-input`` wrote: named so (:data:`INPUT_IMAGE_NAME`), a
    regular file, and marked so in its first bytes (:data:`INPUT_IMAGE_MARK`, written before the pixels). A
    user's own file of that name is not. Never blocks (a FIFO is opened without waiting) and never raises."""
    if not INPUT_IMAGE_NAME.search(path.name):
        return False
    try:
        fh, _ = open_if_regular(path)
        if fh is None:
            return False
        with fh:
            return _MARK_BYTES in fh.read(256)
    except OSError:
        return False


def _folder_field(img: Image.Image) -> np.ndarray:
    """An image as an image folder's were prepared for training (``data.folder.gray_square``), in 0..1."""
    return gray_square(img).astype(np.float32) / 255


def _glob_files(pattern: Path) -> list[Path]:
    """The files a pattern names, sorted, as a shell's globstar would: ``**`` descends into directories but not
    into symlinks to them (``glob.glob`` follows them: two links to ``..`` under a ``**`` made a walk that never
    ended), and ``*`` does not match names that start with a dot unless the pattern's part does. Everything but
    folders is kept: a dangling symlink, a symlink loop or a FIFO is then reported when read, as when named."""
    parts = pattern.parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base, rest = Path(*parts[:first]) if first else Path("."), Path(*parts[first:])
    if rest.name == "**":  # the shell's 'dir/**' names the files below too; pathlib's, only the folders
        rest = rest / "*"
    dotted = any(part.startswith(".") for part in rest.parts)
    return sorted(q for q in base.glob(str(rest))  # not is_dir(): a dangling link or a FIFO is listed, and refused
                  if (dotted or not any(x.startswith(".") for x in q.relative_to(base).parts)) and not q.is_dir())


#: The argument that names standard input, and what results call the image read from it.
STDIN, STDIN_NAME = "-", "stdin"


#: How many images :func:`predict_chunks` prepares before it predicts them and hands them on (the net runs them
#: :data:`NET_BATCH` at a time, so a file's numbers are the same in any chunk, and alone).
CHUNK = 256


def predict_paths(predictor: Predictor, items: Iterable[str], stdin: BinaryIO | None = None,
                  number: bool = False, left_out: list[Path] | None = None, lines: bool = False,
                  ) -> tuple[list[Prediction] | list[NumberPrediction], list[Failure]]:
    """Predict every image named by ``items`` (files, directories, globs; ``-`` is one image read from
    ``stdin``, a binary file, when one is given); with ``number``, read each as a number
    (:meth:`Predictor.read_number`); with ``lines``, every row of digits of each, top to bottom, one
    :class:`NumberPrediction` a row (:meth:`Predictor.read_lines`). ``left_out`` as in :func:`expand_inputs`.

    Bad files become :class:`Failure` entries and the rest are still predicted. Everything is held until the
    end: :func:`predict_chunks` hands the results on as they come (``cnnlab predict`` prints them so).
    """
    paths, failures = expand_inputs(items, left_out)
    preds: list = []
    for done, failed in predict_chunks(predictor, paths, stdin, number=number, lines=lines):
        preds += done
        failures += failed
    return preds, failures


def predict_chunks(predictor: Predictor, paths: list[Path], stdin: BinaryIO | None = None, *, number: bool = False,
                   lines: bool = False, size: int | None = None) -> Iterator[tuple[list, list[Failure]]]:
    """``(results, failures)`` of ``paths`` (:func:`expand_inputs`'s), in their order, every ``size`` images read
    (:data:`CHUNK` unless given; and once more for the rest): memory stays that of a chunk, and what is done is
    handed on before the next chunk is read. ``stdin``, ``number`` and ``lines`` as in :func:`predict_paths`; a row
    of a page that cannot be read (``lines``) is a failure, after the chunk's files that could not be read. Each
    image's numbers are those it gets alone, whatever ``size`` and the other images (:data:`NET_BATCH`)."""
    size = size or CHUNK
    names, prepared, failures, read_stdin = [], [], [], False
    for path in paths:
        from_stdin = stdin is not None and str(path) == STDIN
        name = STDIN_NAME if from_stdin else str(path)
        try:
            if from_stdin and read_stdin:
                raise BadImageError(f"{STDIN}: standard input was read already (one image); give - once")
            read_stdin |= from_stdin
            source = stdin if from_stdin else path
            prepared.append(predictor.number_fields(source, name, lines=lines) if number or lines
                            else predictor.prepared(source, name))
            names.append(name)
        except BadImageError as err:
            failures.append(Failure(name, str(err)))
        if len(failures) >= size and len(prepared) < size:  # a run of bad files: said as they come, the batch kept
            yield [], failures
            failures = []
        if len(prepared) >= size:
            yield _predicted(predictor, names, prepared, number, lines, failures)
            names, prepared, failures = [], [], []
    if prepared or failures:
        yield _predicted(predictor, names, prepared, number, lines, failures)


def _predicted(predictor: Predictor, names: list[str], prepared: list, number: bool, lines: bool,
               failures: list[Failure]) -> tuple[list, list[Failure]]:
    """The results of prepared images (:func:`predict_chunks`), and the failures with a page's rows refused."""
    if lines:  # a row that cannot be read is said as a file is, the page's other rows read
        read = [row for n, rows in zip(names, prepared) for row in predictor.lines(n, rows)]
        return [row for row in read if not row.refused], failures + [row.failure() for row in read if row.refused]
    if number:
        return [predictor.number(n, fields) for n, fields in zip(names, prepared)], failures
    return predictor.predictions(names, [f for f, _ in prepared], [m for _, m in prepared]), failures


def save_input_image(pred: Prediction | NumberPrediction, directory: str | Path, taken: set[str] | None = None, *,
                     enlarge: int = ENLARGE) -> Path:
    """Write the 28x28 image the net saw as ``DIR/<file stem>.input.png`` and, because that is tiny on a
    screen, a copy enlarged ``enlarge`` times with nearest-neighbour (every pixel a sharp square) as
    ``DIR/<file stem>.input.x10.png`` (280x280; none when ``enlarge`` is 1 or less). The two are written as one
    (:func:`_write_pair`): both are the new image's, or neither changed (the new small image beside an earlier
    image's enlarged one, when the second could not be written). Returns the path of the 28x28 image.

    ``taken`` holds the names already written in this batch: a later input with the same stem gets
    ``<stem>-2.input.png`` (and ``<stem>-2.input.x10.png``), ``-3``... (chosen before writing, so that
    nothing is overwritten). Both files carry cnnlab's mark (:data:`INPUT_IMAGE_MARK`): an image that an earlier
    run wrote is replaced, and a folder or pattern given to ``predict`` leaves them out. Any other file of such
    a name (a user's own ``a.input.png``, a link, a folder) is never replaced: the next free name is taken
    (:func:`foreign_input_names` tells which stood in the way)."""
    directory = Path(directory)
    stem = Path(pred.name).stem
    base, n = stem, 2
    while ((taken is not None and f"{base}.input.png" in taken)
           or foreign_input_names(directory, base, enlarge)):
        base, n = f"{stem}-{n}", n + 1
    if taken is not None:
        taken.add(f"{base}.input.png")
    img = to_uint8_image(pred.input_image)
    out = directory / f"{base}.input.png"
    if enlarge > 1:  # the longer name first: a stem that fits one name only writes neither (no half pair left)
        temp_part(directory / f"{base}.input.x{enlarge}.png")
    if enlarge > 1:
        big = img.resize((img.width * enlarge, img.height * enlarge), Image.Resampling.NEAREST)
        _write_pair(out, _png_bytes(img), directory / f"{base}.input.x{enlarge}.png", _png_bytes(big))
    else:
        atomic_write_bytes(out, _png_bytes(img))
    return out


def _write_pair(first: Path, data: bytes, second: Path, other: bytes) -> None:
    """``first`` and ``second`` written as a pair: ``first``'s new version is written and synced, then ``second``
    whole, then ``first`` is renamed into place (:func:`cnnlab.fileio.atomic_write_bytes`' ``just_before``). A
    ``second`` that cannot be written (a full disk, ``ulimit -f``) leaves both as they were; a rename of ``first``
    that fails puts ``second``'s earlier version back (set aside as the new one was renamed in, and kept until
    then: :func:`cnnlab.fileio.set_aside`)."""
    held = []  # second's earlier version, set aside as the new one is renamed in, until the pair is complete

    def aside():
        held.append(set_aside([second]))
        return lambda done: None if done else held[0](False)

    def second_written():
        atomic_write_bytes(second, other, just_before=aside)

        def completed(done: bool) -> None:
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(second)
            held[0](done)
        return completed

    atomic_write_bytes(first, data, just_before=second_written)


def read_by_training_data(data_name: str, folder: str | Path) -> tuple[str, str] | None:
    """``(DIR, CLASS)`` where images written into ``folder`` would be read by a load of the ``folder:DIR`` dataset
    ``data_name`` (a predictor's :attr:`Predictor.data_name`) as images of its class folder ``CLASS``
    (:func:`cnnlab.data.folder.read_as_class`): ``--show-input`` beside ``DIR/a/000.png`` made the net's input
    images training images of class ``a``, and into ``DIR/report`` a class of them. None where no load reads them
    (another dataset, a folder outside ``DIR``, a hidden one)."""
    return read_as_class(data_name, folder)


def foreign_input_names(directory: str | Path, base: str, enlarge: int = ENLARGE) -> list[Path]:
    """The files at ``DIR/<base>.input.png`` and ``DIR/<base>.input.x10.png`` that are there but were not
    written by ``--show-input`` (:func:`written_input_image`): :func:`save_input_image` never replaces them."""
    names = [f"{base}.input.png"] + ([f"{base}.input.x{enlarge}.png"] if enlarge > 1 else [])
    paths = [Path(directory) / name for name in names]
    return [p for p in paths if os.path.lexists(p) and not written_input_image(p)]


def _png_bytes(img: Image.Image) -> bytes:
    """A PNG of ``img`` marked as written by ``--show-input`` (:data:`INPUT_IMAGE_MARK`, before the pixels)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(*INPUT_IMAGE_MARK)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()
