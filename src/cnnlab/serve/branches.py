"""Per-branch activation energy of Inception modules, for the drawing page.

The energy of a branch is the mean of its squared outputs over channels and positions: how
strongly that branch (pool, 1x1, 5x5, 3x3) responds to this input. Shares are the energies of
one module's four branches divided by their sum, which is what the page draws as bars.

The hooks are those of :mod:`cnnlab.analysis.branches` (``watch_outputs``), which see each
module's concatenated output and are removed when the context ends; nothing is recomputed. The
modules are found by the analysis' :func:`~cnnlab.analysis.branches.inception_modules` too.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from cnnlab.analysis.branches import branch_slices, inception_modules, watch_outputs


@contextmanager
def record_branch_energy(model: nn.Module) -> Iterator[dict[str, dict[str, float]]]:
    """While active, every forward pass on this thread fills the yielded dict: ``{module: {branch: energy}}``.

    Energies are of the first image of the batch (the page sends one image at a time). A pass on another thread
    (another request's) is not recorded: the hooks are the model's, and they saw every pass while active.
    """
    energies: dict[str, dict[str, float]] = {}
    slices = branch_slices()
    owner = threading.get_ident()

    def record(name: str, output: torch.Tensor) -> None:
        if threading.get_ident() != owner:
            return
        first = output[:1].detach().float()  # (1, 88, H, W)
        energies[name] = {b: float(first[:, s].pow(2).mean()) for b, s in slices.items()}

    with watch_outputs(model, list(inception_modules(model)), record):
        yield energies


def shares(energies: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each module's branch energies as fractions of that module's total."""
    out = {}
    for name, per_branch in energies.items():
        total = sum(per_branch.values()) or 1.0
        out[name] = {b: e / total for b, e in per_branch.items()}
    return out
