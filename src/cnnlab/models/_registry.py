"""Model registry in the style of timm: every public variant is a small registered function
that only sets defaults, and callers build models by name through :func:`create_model`."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from cnnlab.errors import CnnlabError, did_you_mean

_MODELS: dict[str, Callable[..., nn.Module]] = {}


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


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name; ``kwargs`` override its defaults."""
    try:
        fn = _MODELS[name]
    except KeyError:
        raise CnnlabError(
            f"unknown model {name!r}{did_you_mean(name, list_models())}; choose one of: {', '.join(list_models())}"
        ) from None
    try:
        return fn(**kwargs)
    except TypeError as err:
        raise CnnlabError(f"model {name!r} does not accept these arguments {kwargs}: {err}") from None
