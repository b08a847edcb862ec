"""Test-time augmentation (TTA): each image is also shown to the net shifted, rotated or mirrored, and the
softmax probabilities of these views are averaged. Off by default; ``cnnlab evaluate --tta SPEC`` reports it
beside the plain evaluation, never instead of it (a run's result stays its plain test accuracy).

A set of views is named by a spec string::

    spec  := "none" | part ("+" part)*      the views are every combination of the parts' views
    part  := "shift" [":px=N"]              the image and its four shifts by N pixels (default 1): 5 views
           | "rotate" [":deg=D"]            the image and its rotations by -D and +D degrees (default 10): 3 views
           | "flip"                         the image and its horizontal mirror: 2 views (clothes, never digits)

``shift+rotate`` is 15 views, the first of which is the image itself. Views are deterministic (nothing is
drawn at random), so the same weights give the same figure every time. Pixels a view uncovers get ``fill``,
the normalised value of a black pixel, as in :mod:`cnnlab.augment`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.augment import parse_number, resample, split_spec
from cnnlab.errors import CnnlabError

View = Callable[[torch.Tensor, float], torch.Tensor]  # (normalised batch, fill) -> the batch seen another way

#: part name -> (its key, default, low, high, whole number?); flip takes no key.
_PARTS = {"shift": ("px", 1, 1, 8, True), "rotate": ("deg", 10.0, 0.1, 90.0, False), "flip": (None, None, 0, 0, False)}


def _identity(x: torch.Tensor, fill: float) -> torch.Tensor:
    return x


def _shift(dy: int, dx: int) -> View:
    """Move the image down by ``dy`` and right by ``dx`` whole pixels (negative: up, left)."""

    def view(x: torch.Tensor, fill: float) -> torch.Tensor:
        h, w = x.shape[-2:]
        p = max(abs(dy), abs(dx))
        padded = F.pad(x, (p, p, p, p), value=fill)
        return padded[..., p - dy: p - dy + h, p - dx: p - dx + w]

    return view


def _rotate(degrees: float) -> View:
    """Rotate the image about its centre (bilinear, as the ``affine`` augmentation samples)."""
    a = math.radians(degrees)

    def view(x: torch.Tensor, fill: float) -> torch.Tensor:
        b, c, h, w = x.shape
        theta = torch.tensor([[math.cos(a), -math.sin(a) * h / w, 0.0], [math.sin(a) * w / h, math.cos(a), 0.0]],
                             dtype=x.dtype, device=x.device).expand(b, 2, 3)
        return resample(x, F.affine_grid(theta, [b, c, h, w], align_corners=False), fill)

    return view


def _flip(x: torch.Tensor, fill: float) -> torch.Tensor:
    return x.flip(3)


def _part_views(name: str, value) -> list[View]:
    if name == "shift":
        return [_identity, _shift(-value, 0), _shift(value, 0), _shift(0, -value), _shift(0, value)]
    if name == "rotate":
        return [_identity, _rotate(-value), _rotate(value)]
    return [_identity, _flip]


@dataclass(frozen=True)
class TTA:
    """A parsed spec: ``parts`` is ((name, value), ...) in the order given."""

    parts: tuple[tuple[str, float | int | None], ...]

    @property
    def spec(self) -> str:
        """The canonical spec (every key written out)."""
        return "+".join(name if value is None else f"{name}:{_PARTS[name][0]}={value:g}" for name, value in self.parts)

    @property
    def flips(self) -> bool:
        """Whether a view is a mirror image."""
        return any(name == "flip" for name, _ in self.parts)

    @property
    def count(self) -> int:
        return math.prod(len(_part_views(name, value)) for name, value in self.parts)

    def views(self, x: torch.Tensor, fill: float) -> list[torch.Tensor]:
        """Every combination of the parts' views of the batch ``x``, the image itself first, each in ``x``'s
        memory format (the net runs the same kernels on every view)."""
        return list(self.iter_views(x, fill))

    def iter_views(self, x: torch.Tensor, fill: float) -> Iterator[torch.Tensor]:
        """The views one at a time (memory for one view, whatever their number)."""
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        for combo in itertools.product(*(_part_views(name, value) for name, value in self.parts)):
            v = x
            for view in combo:
                v = view(v, fill)
            yield v.contiguous(memory_format=fmt)

    def log_probs(self, model: nn.Module, x: torch.Tensor, fill: float) -> torch.Tensor:
        """(B, classes) log of the mean softmax probability over the views: usable as logits (its softmax is
        the mean probability, its cross-entropy the loss of the averaged prediction)."""
        total = None
        for v in self.iter_views(x, fill):
            p = model(v).float().softmax(1)
            total = p if total is None else total + p
        return (total / self.count).log()


def _parse_part(text: str, spec: str) -> tuple[str, float | int | None]:
    name, colon, args = (s.strip() for s in text.partition(":"))
    if name not in _PARTS:
        raise CnnlabError(f"--tta {spec!r}: unknown view {name!r}; use {', '.join(_PARTS)} joined by '+', "
                          "e.g. 'shift' or 'shift:px=1+rotate:deg=10'")
    key, default, low, high, whole = _PARTS[name]
    if key is None:
        if colon:
            raise CnnlabError(f"--tta {spec!r}: {name} takes no settings; write it alone, e.g. 'shift+{name}'")
        return name, None
    if not colon or not args:
        return name, default
    k, eq, raw = (s.strip() for s in args.partition("="))
    if not eq or k != key:
        raise CnnlabError(f"--tta {spec!r}: {name} takes one setting, {key}=NUMBER (e.g. '{name}:{key}={default:g}'), "
                          f"got {args!r}")
    return name, parse_number(raw, f"--tta {spec!r}: {name}.{key}", low, high, whole)


def parse_tta(spec: str | None) -> TTA | None:
    """The views ``spec`` names, or None for ``none`` (or None itself). An empty or blank spec (``--tta "$VIEWS"``
    with VIEWS unset) is refused, as ``--augment ""`` is (``config``): it read as no TTA, without a word."""
    if isinstance(spec, str) and not spec.strip():
        raise CnnlabError("--tta is empty (an unset variable?); give none for no test-time augmentation, or leave it "
                          "out")
    parts = split_spec(spec, "--tta", "part", "shift+rotate")
    if parts is None:
        return None
    parsed = tuple(_parse_part(p, spec) for p in parts)
    names = [name for name, _ in parsed]
    if len(set(names)) != len(names):
        raise CnnlabError(f"--tta {spec!r}: each of {', '.join(_PARTS)} may appear once; combine different parts")
    return TTA(parsed)
