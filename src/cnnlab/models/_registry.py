"""Model registry in the style of timm: every public variant is a small registered function
that only sets defaults, and callers build models by name through :func:`create_model`."""

from __future__ import annotations

import contextlib
import numbers
import threading
from typing import Callable, Iterator

import torch
import torch.nn as nn

from cnnlab.errors import CnnlabError, did_you_mean, short_repr

_MODELS: dict[str, Callable[..., nn.Module]] = {}
#: Held while a net draws its initial weights from torch's global generator (one per process, shared by every
#: thread): a seeded build (:func:`seeded`) and any other build by name, so that two threads' draws never interleave.
_DRAWING = threading.RLock()
#: The registered models' size arguments: whole numbers, at least 1 (``depth``, a stack's count of convs, 0).
SIZE_ARGUMENTS = ("in_channels", "num_classes", "image_size", "width", "depth")
#: The most some size arguments may be, and why: beyond them a net's first or last layer alone asks for more
#: memory than a machine has (``num_classes=10**9``: 2 TB of weights, torch's allocation error as a traceback).
SIZE_LIMITS = {
    "in_channels": (1024, "the first conv holds weights for every input channel"),
    "num_classes": (100_000, "the last layer holds a row of weights for every class"),
    "image_size": (1024, "the last layer's weights grow with the square of the image's side"),
    "width": (4096, "each 3x3 conv of a stack holds 9 x width x width weights: 151 million, 600 MB, at 4,096"),
    "depth": (256, "a stack of 256 convs is far past the depths whose training the lecture compares"),
}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    name = fn.__name__
    if name in _MODELS:
        raise RuntimeError(f"model {name!r} registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_summary(name: str) -> str:
    """The first line of a registered model's docstring."""
    doc = (_MODELS[name].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def check_model_name(name: str) -> str:
    """``name`` if a model is registered under it; otherwise one line naming the models there are."""
    if not isinstance(name, str):  # its text matched one: "unknown model PosixPath('resnet') (did you mean 'resnet'?)"
        raise CnnlabError(f"model must be a str (a model name: {', '.join(list_models())}), got {short_repr(name)}")
    if name not in _MODELS:
        raise CnnlabError(
            f"unknown model {short_repr(name)}{did_you_mean(name, list_models())}; choose one of: {', '.join(list_models())}"
        )
    return name


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name; ``kwargs`` override its defaults."""
    fn = _MODELS[check_model_name(name)]
    for key in SIZE_ARGUMENTS:
        value = kwargs.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < (0 if key == "depth" else 1):
            raise CnnlabError(f"model {name!r}: {key} must be a whole number >= {0 if key == 'depth' else 1}, "
                              f"got {short_repr(value)}")
        most, why = SIZE_LIMITS.get(key, (value, ""))
        if value > most:
            raise CnnlabError(f"model {name!r}: {key} must be at most {most:,} ({why}), got {short_repr(value)}")
    try:
        with _DRAWING, float32_default():
            return fn(**kwargs)
    except TypeError as err:
        raise CnnlabError(f"model {name!r} does not accept these arguments {kwargs}: {err}") from None
    except ValueError as err:  # a size the layers cannot take (an image too small for the convs and pools)
        raise CnnlabError(f"model {name!r}: {err}; change that argument") from None


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Nets built inside draw their weights from torch's global generator seeded with ``seed``, and the generator is
    put back as it was after: a run's weights depend on its seed alone, whatever other threads of the process do
    with cnnlab meanwhile (a predictor loaded, another run started), and the caller's own draws stay their own.
    Builds by name in other threads wait (:data:`_DRAWING`); a caller's own ``torch.rand`` in another thread at that
    moment cannot be held back (torch has one global generator), which is why a build here is all that is inside."""
    with _DRAWING, torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU's only: the weights are drawn there
        yield


@contextlib.contextmanager
def float32_default() -> Iterator[None]:
    """torch's default dtype float32 inside, whatever the caller set, and the caller's again after: the nets are
    float32 (their checkpoints, inputs and exports are); under ``torch.set_default_dtype(torch.float64)`` they were
    built float64, and float32 inputs were refused with torch's "Input type (float) and bias type (double)".
    A net built here gets bitwise the weights it gets under torch's own default."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(before)
