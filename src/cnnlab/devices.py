"""Devices and CPU threads: which device a command runs on, and how many threads torch uses."""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Iterator

import torch

from cnnlab.errors import CnnlabError, short_repr
from cnnlab.hostmem import usable_cpus
from cnnlab.text import plural


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    index = name[len("cuda:"):] if name.startswith("cuda:") else None
    if name not in ("cpu", "cuda", "mps") and not (index is not None and index.isdigit() and index.isascii()):
        raise CnnlabError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {short_repr(name)}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CnnlabError(f"--device {name}: this torch build or machine has no CUDA GPU; use --device cpu or auto")
    if index is not None and int(index) >= torch.cuda.device_count():  # torch's error came at the first .to()
        count = torch.cuda.device_count()
        raise CnnlabError(f"--device {name}: this machine has {count} CUDA GPU{'s' if count != 1 else ''} "
                          f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''}); pick one of them")
    if name == "mps" and not _mps_available():
        raise CnnlabError("--device mps: MPS is not available here; use --device cpu or auto")
    return torch.device(name)


#: The device types whose ``torch.autocast`` a caller of the library may have on around a call.
AUTOCAST_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


@contextlib.contextmanager
def callers_autocast_off() -> Iterator[None]:
    """The caller's ``torch.autocast`` (of any device type) off inside, and on again after: a run's precision is its
    config's alone (:func:`training_autocast` turns bf16 on for the training steps), and evaluations stay float32.
    Under a notebook's ``torch.autocast("cpu", dtype=torch.bfloat16)`` a run trained and evaluated in bf16 while its
    config.json said fp32 (19% where the same run reaches 67%). A device type whose autocast is not on is not
    touched: outside any autocast this changes nothing. The caller's float32 precision goes the same way
    (:func:`default_float32_precision`)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(default_float32_precision())
        for kind in AUTOCAST_DEVICE_TYPES:
            if torch.is_autocast_enabled(kind):
                stack.enter_context(torch.autocast(kind, enabled=False))
        yield


#: torch's float32 precision settings (``torch.backends``' ``fp32_precision``, which ``torch.set_float32_matmul_precision``
#: and the ``allow_tf32`` flags set too) with their values in a torch the caller has not told otherwise: every
#: backend and op ``none`` (float32 itself) but cuDNN's convolutions and RNNs, TF32 by torch's default. A parent
#: (``""``, ``cudnn``) comes before its ops: setting it sets them.
FP32_PRECISION_DEFAULTS = (("", "none"), ("cuda.matmul", "none"), ("cudnn", "none"), ("cudnn.conv", "tf32"),
                           ("cudnn.rnn", "tf32"), ("mkldnn", "none"), ("mkldnn.matmul", "none"),
                           ("mkldnn.conv", "none"), ("mkldnn.rnn", "none"))
#: How many runs and evaluations of this process compute under :func:`default_float32_precision` now (threads of
#: one process share torch's settings), and the caller's settings that the last of them puts back.
_PRECISION_HELD: list = [0, None]
_PRECISION_LOCK = threading.Lock()


def _fp32_settings() -> list:
    """The ``torch.backends`` objects of :data:`FP32_PRECISION_DEFAULTS` with their defaults (none in a torch
    without them: only ``torch.set_float32_matmul_precision`` then)."""
    if not hasattr(torch.backends, "fp32_precision"):
        return []
    return [(functools.reduce(getattr, path.split("."), torch.backends) if path else torch.backends, value)
            for path, value in FP32_PRECISION_DEFAULTS]


@contextlib.contextmanager
def default_float32_precision() -> Iterator[None]:
    """torch's float32 precision at its default inside ("highest": float32 matrix products and convolutions, where a
    caller's ``torch.set_float32_matmul_precision("medium")`` made oneDNN multiply in bfloat16 on a CPU that has it,
    and "high" TF32 on a CUDA GPU), and the caller's again after, exactly as it was (the legacy setting and each
    backend's ``fp32_precision``). A run's precision is its config's alone: under a notebook's "medium" a run
    trained other weights, and evaluated other losses, while its config.json said fp32. Outside any such setting
    the run computes what it computed, bit for bit. Process-wide (torch's setting is): the first of several threads'
    runs takes the caller's settings, the last puts them back."""
    with _PRECISION_LOCK:
        if _PRECISION_HELD[0] == 0:
            _PRECISION_HELD[1] = _precision_defaulted()
        _PRECISION_HELD[0] += 1
    try:
        yield
    finally:
        with _PRECISION_LOCK:
            _PRECISION_HELD[0] -= 1
            if _PRECISION_HELD[0] == 0:
                legacy, saved = _PRECISION_HELD[1]
                torch.set_float32_matmul_precision(legacy)
                for backend, value in saved:
                    backend.fp32_precision = value


def _precision_defaulted() -> tuple[str, list]:
    """Set torch's float32 precision to its defaults; returns the caller's (what :func:`default_float32_precision`
    puts back). Each backend's setting is read first and set to its default, so that the legacy one can be read
    whatever mix of torch's two APIs set them (torch refuses to read it then), and set to "highest" in turn."""
    settings = _fp32_settings()
    saved = [(backend, backend.fp32_precision) for backend, _ in settings]
    for backend, value in settings:
        backend.fp32_precision = value
    legacy = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    for backend, value in settings:  # (which wrote "ieee" into the matmul ops: the same products, under other names)
        backend.fp32_precision = value
    return legacy, saved


def training_autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """What the training steps' forward pass runs under: nothing (fp32), or bf16 autocast (``--precision bf16``,
    the fast recipe's default). A CUDA GPU without bfloat16 is refused here, in one line, before anything is
    written, instead of by torch's RuntimeError at the first step; on MPS torch itself falls back to fp32 with
    a warning where bfloat16 is missing."""
    if precision != "bf16":
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise CnnlabError(f"--precision bf16: {torch.cuda.get_device_name(device)} cannot compute in bfloat16 "
                          "(the fast recipe's steps use it); add --precision fp32")
    return StepAutocast(device.type)


class StepAutocast:
    """bf16 autocast around one training step, its cache of weights cast to bf16 emptied when it ends. torch empties
    that cache only when the outermost autocast ends: inside a caller's ``torch.autocast`` (turned off for the run,
    :func:`callers_autocast_off`, yet still outermost) a step reused the casts of the weights the steps before had
    updated, and a run trained other weights. Where it is the outermost, its own exit has emptied the cache already:
    the same steps, bit for bit. Entered again for each step."""

    def __init__(self, device_type: str):
        self._autocast = torch.autocast(device_type=device_type, dtype=torch.bfloat16)

    def __enter__(self) -> None:
        self._autocast.__enter__()

    def __exit__(self, *exc) -> None:
        try:
            self._autocast.__exit__(*exc)
        finally:
            torch.clear_autocast_cache()


def set_threads(threads: int) -> str | None:
    """Intra-op CPU threads for torch; 0 keeps torch's default. Returns a warning when ``threads`` is more than
    the CPUs this process may run on: OpenMP's threads then wait on each other, and a step is many times slower
    (the residual net on 2 CPUs: 200 steps took 77 s at 16 threads, 3.5 s at the default)."""
    if threads <= 0:
        return None
    torch.set_num_threads(threads)
    usable = usable_cpus() or threads
    if threads <= usable:
        return None
    return (f"warning: --threads {threads} is more than the {plural(usable, 'CPU')} this process can use, which makes every "
            f"step many times slower; use --threads {usable} or leave it out")
