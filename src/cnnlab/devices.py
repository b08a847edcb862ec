"""Devices and CPU threads: which device a command runs on, and how many threads torch uses."""

from __future__ import annotations

import torch

from cnnlab.errors import CnnlabError


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
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise CnnlabError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CnnlabError("--device cuda: this torch build or machine has no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not _mps_available():
        raise CnnlabError("--device mps: MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def set_threads(threads: int) -> None:
    """Intra-op CPU threads for torch; 0 keeps torch's default."""
    if threads > 0:
        torch.set_num_threads(threads)
