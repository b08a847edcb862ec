"""Per-branch activation energy of Inception modules, from forward hooks.

The energy of a branch is the mean of its squared outputs over channels and positions: how
strongly that branch (pool, 1x1, 5x5, 3x3) responds to this input. Shares are the energies of
one module's four branches divided by their sum, which is what the page draws as bars.

A forward hook on each :class:`~cnnlab.models.inception.InceptionModule` sees the module's output,
the four branch outputs concatenated on channels in the order of ``BRANCH_CHANNELS`` (pool, 1x1,
5x5, 3x3: see ``InceptionModule.forward``), and splits it back into the branches. Nothing is
recomputed and the model is not changed; :func:`branch_energy` removes its hooks when done.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from cnnlab.models.inception import BRANCH_CHANNELS, InceptionModule


def inception_modules(model: nn.Module) -> dict[str, InceptionModule]:
    """The model's Inception modules by qualified name (``incept1``, ``incept2``); empty if none."""
    return {name: m for name, m in model.named_modules() if isinstance(m, InceptionModule)}


@contextmanager
def record_branch_energy(model: nn.Module) -> Iterator[dict[str, dict[str, float]]]:
    """While active, every forward pass fills the yielded dict: ``{module: {branch: energy}}``.

    Energies are of the first image of the batch (the page sends one image at a time).
    """
    energies: dict[str, dict[str, float]] = {}
    handles = []

    def hook_for(name: str):
        def hook(_module, _inputs, output: torch.Tensor) -> None:
            parts = torch.split(output[:1].detach(), list(BRANCH_CHANNELS.values()), dim=1)  # each (1, c, H, W)
            energies[name] = {b: float(p.float().pow(2).mean()) for b, p in zip(BRANCH_CHANNELS, parts)}

        return hook

    for name, module in inception_modules(model).items():
        handles.append(module.register_forward_hook(hook_for(name)))
    try:
        yield energies
    finally:
        for h in handles:
            h.remove()


def shares(energies: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each module's branch energies as fractions of that module's total."""
    out = {}
    for name, per_branch in energies.items():
        total = sum(per_branch.values()) or 1.0
        out[name] = {b: e / total for b, e in per_branch.items()}
    return out
