"""Checkpoints that hold everything needed to rebuild a run, and refuse anything else.

Saved atomically (temp file + rename) with a SHA-256 beside each file; loaded only with
``torch.load(weights_only=True)``, which cannot run code from the file. There is no fallback
to unsafe loading.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import torch
import torch.nn as nn

from cnnlab.errors import CheckpointError
from cnnlab.fileio import atomic_write_bytes, atomic_write_text, sha256_file
from cnnlab.models import create_model
from cnnlab.runs import CHECKPOINTS, DEFAULT_CHECKPOINT

FORMAT = "cnnlab-checkpoint"
VERSION = 1


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` (plus format and version) to ``path`` and its SHA-256 to ``path.sha256``.

    Both files are replaced atomically, in an order that leaves a consistent pair at every
    instant, so that a process killed at any point (torchrun's restarts do exactly that) leaves a
    checkpoint that loads: first the sidecar lists the new hash *and* the current one, then the
    checkpoint is renamed into place, then the sidecar is reduced to the new hash.
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buf)
    data = buf.getvalue()
    new = hashlib.sha256(data).hexdigest()
    side = sidecar(path)
    old = _hashes(side)[:1] if path.is_file() and side.is_file() else []
    atomic_write_text(side, "".join(f"{h}  {path.name}\n" for h in [new, *old]))
    atomic_write_bytes(path, data)
    atomic_write_text(side, f"{new}  {path.name}\n")


def _hashes(side: Path) -> list[str]:
    """The hashes a sidecar lists (one normally; two while a save is in flight)."""
    return [line.split()[0] for line in side.read_text().splitlines() if line.strip()]


def load_checkpoint(path: str | Path, expect_model: str | None = None) -> dict:
    """Load and check a checkpoint; every refusal is a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; pass a run directory or a .pt file written by cnnlab")
    side = sidecar(path)
    if side.is_file():
        wanted = _hashes(side)
        got = sha256_file(path)
        if got not in wanted:
            shown = wanted[0][:12] if wanted else "nothing"
            raise CheckpointError(
                f"{path}: SHA-256 {got[:12]}... does not match {side.name} ({shown}...); "
                "the file was truncated or altered: use another checkpoint (last.pt / best.pt) or retrain"
            )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: refused, the file holds objects other than tensors and plain data ({first[:160]}); "
            "only load checkpoints written by cnnlab"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {str(err)[:160]}); "
                              "it may be truncated: use another checkpoint or retrain") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a cnnlab checkpoint; for a bare state_dict use 'cnnlab evaluate --weights FILE --model NAME'"
        )
    if obj.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {obj.get('version')!r}, this cnnlab reads version {VERSION}; "
            "use the cnnlab version that wrote it"
        )
    name = obj.get("model", {}).get("name")
    if expect_model is not None and name != expect_model:
        raise CheckpointError(f"{path}: checkpoint is for model {name!r}, not {expect_model!r}; pick the matching --model")
    return obj


def load_state_dict_file(path: str | Path) -> dict:
    """A bare ``state_dict`` (e.g. saved by the lecture's code with ``torch.save(model.state_dict())``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused, the file holds objects other than tensors; save model.state_dict() instead") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable weights file ({type(err).__name__}); it may be truncated") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state_dict (a dict of tensors); save model.state_dict()")
    return obj


def resolve_checkpoint(path: str | Path, which: str = DEFAULT_CHECKPOINT) -> Path:
    """A run directory -> its ``which``.pt (``which`` one of :data:`cnnlab.runs.CHECKPOINTS`); a file -> itself."""
    path = Path(path)
    if which not in CHECKPOINTS:
        raise CheckpointError(f"no checkpoint named {which!r}; choose one of: {', '.join(CHECKPOINTS)}")
    if path.is_dir():
        candidate = path / f"{which}.pt"
        if not candidate.is_file():
            raise CheckpointError(f"{path}: no {which}.pt in this run directory; did the run save a checkpoint?")
        return candidate
    return path


def model_from_checkpoint(state: dict) -> nn.Module:
    """The model a loaded checkpoint describes, with its weights (strict: every key must fit)."""
    model = create_model(state["model"]["name"], **state["model"]["args"])
    try:
        model.load_state_dict(state["state_dict"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint weights do not fit model {state['model']['name']!r}: "
                              f"{str(err).splitlines()[0]}") from None
    return model
