"""Checkpoints that hold everything needed to rebuild a run, and refuse anything else.

A checkpoint is the model (name, arguments, weights), the run's config and data description, the
optimiser and scheduler, and a :class:`TrainState`: where the run is (epoch, batch, step, the partial
epoch's sums, history, best, target, RNG). :func:`save_checkpoint` writes it; :func:`load_checkpoint`
reads and checks it; the engine builds a :class:`TrainState` with :meth:`TrainState.from_checkpoint`.

Saved atomically (temp file + fsync + rename) with a SHA-256 beside each file and a digest of every
tensor inside it; loaded only with ``torch.load(weights_only=True)``, which cannot run code from the
file. There is no fallback to unsafe loading. Format version 2 (this one) stores the position as
``train_state``; version-1 files (``progress`` + ``history`` + ``best_accuracy`` + ``rng``) still load
and resume.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import pickle
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file as load_safetensors

from cnnlab.config import other_run
from cnnlab.data.dataset import same_data
from cnnlab.errors import CheckpointError, CnnlabError, WriteError, first_line, shell_quoted
from cnnlab.fileio import (as_path, atomic_write_bytes, atomic_write_text, cannot_read, exists, file_stamp, is_dir,
                           is_file, kind_of, read_json, reason, sha256_file, sidecar_hashes, usual_fix)
from cnnlab.models import create_model
from cnnlab.runs import (CHECKPOINTS, DEFAULT_CHECKPOINT, STATUS_FILE, checkpoint_as_taken, checkpoint_damage,
                         checkpoint_fix, checkpoints_gone, diverged, failure_cause, followed, is_cnnlab_run, is_run_dir,
                         is_training, link_to_nowhere, report_agrees)

FORMAT = "cnnlab-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)


# ----------------------------------------------------------------------------- the position of a run


@dataclass
class EpochSums:
    """Running sums of the current (partial) epoch over all ranks: summed loss, correct and seen images."""

    loss: float = 0.0
    correct: int = 0
    count: int = 0


@dataclass
class TrainState:
    """Where a run is: exactly what a checkpoint stores besides the weights, optimiser and scheduler."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimiser steps in all
    partial: EpochSums = field(default_factory=EpochSums)
    elapsed: float = 0.0  # training seconds of the current epoch before this save
    best: float | None = None  # best end-of-epoch evaluated accuracy (None before the first epoch ends)
    history: list[dict] = field(default_factory=list)  # one metrics row per finished epoch
    #: Set once --target-accuracy was reached: epoch (fractional), step, accuracy, seconds.
    target: dict | None = None
    world_size: int = 1
    #: torch's global RNG state, saved by runs before 2026-12-07 and no longer used: a run draws from that generator
    #: only for its initial weights (``models.seeded``); the batch order and augmentation have seeded generators.
    rng: torch.Tensor | None = None
    #: Under torchrun each rank drew its own augmentation (seed + rank): the path of the runs saved before
    #: 2026-12-07 (their checkpoints lack the field), kept so that they resume as they ran. New runs draw for the
    #: group's whole batch (cnnlab.augment.Draws).
    augment_by_rank: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["rng"] = self.rng  # asdict would deep-copy the tensor into a list
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CheckpointError(f"train_state has unknown fields {unknown}; it was written by another cnnlab version")
        return cls(**{"augment_by_rank": True, **d, "partial": EpochSums(**d.get("partial", {}))})

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "TrainState":
        """The state of a loaded checkpoint, of either format version."""
        if "train_state" in ckpt:
            return cls.from_dict(ckpt["train_state"])
        prog = ckpt["progress"]  # version 1: progress, history, best_accuracy, rng beside each other
        loss, correct, count = prog["sums"]
        best = ckpt.get("best_accuracy")
        return cls(epoch=prog["epoch"], batch=prog["batch"], step=prog["step"],
                   partial=EpochSums(float(loss), int(correct), int(count)), elapsed=prog.get("elapsed", 0.0),
                   best=best if best is not None and math.isfinite(best) else None,
                   history=list(ckpt.get("history", [])), world_size=prog.get("world_size", 1),
                   rng=(ckpt.get("rng") or {}).get("torch"), augment_by_rank=True)

    @property
    def mid_epoch(self) -> bool:
        return self.batch > 0


# ----------------------------------------------------------------------------- writing


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def tensor_digest(obj) -> str:
    """SHA-256 over every tensor in a nested dict/list (keys sorted): a bit flip in the weights, optimiser
    state or RNG changes it, so a damaged checkpoint is refused even without its sidecar."""
    h = hashlib.sha256()

    def walk(node, key: str) -> None:
        if isinstance(node, torch.Tensor):
            t = node.detach().cpu().contiguous()
            h.update(f"{key}:{t.dtype}:{tuple(t.shape)}\n".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(node, dict):
            for k in sorted(node, key=str):
                walk(node[k], f"{key}/{k}")
        elif isinstance(node, (list, tuple)):
            for i, item in enumerate(node):
                walk(item, f"{key}/{i}")

    walk(obj, "")
    return h.hexdigest()


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` (plus format, version and tensor digest) to ``path`` and its SHA-256 to ``path.sha256``.

    Kill-safe at every write boundary, for any number of interrupted saves in a row: the sidecar first
    lists the new hash *and the hash of the file actually on disk* (read from the disk, never from the
    sidecar, which may name a file an interrupted save never wrote), then the checkpoint is renamed into
    place, then the sidecar is reduced to the new hash. (The temp files that killed saves leave are removed
    by the next process that locks the run folder: :class:`cnnlab.runs.RunLock`.)
    """
    path = Path(path)
    body = {"format": FORMAT, "version": VERSION, **payload}
    body["tensor_digest"] = tensor_digest(body)
    buf = io.BytesIO()
    torch.save(body, buf)
    _write_with_sidecar(path, buf.getvalue())


def copy_checkpoint(source: str | Path, path: str | Path) -> None:
    """Write the checkpoint file ``source`` (already checked by :func:`load_checkpoint`) as ``path``, byte for byte,
    with :func:`save_checkpoint`'s kill-safe sequence: a run's ``best.pt`` that its save never wrote (a full disk, a
    kill between the epoch's two saves) is the epoch's ``last.pt``."""
    _write_with_sidecar(Path(path), _read(Path(source)))


def _write_with_sidecar(path: Path, data: bytes) -> None:
    """``data`` as ``path`` and its SHA-256 as ``path.sha256``, in the order :func:`save_checkpoint` describes."""
    new = hashlib.sha256(data).hexdigest()
    side = sidecar(path)
    try:
        current = sha256_file(path) if path.is_file() else None
    except OSError as err:  # the file it replaces cannot be read now (an input/output error): nothing is written
        why = f"cannot write {path}: the file it replaces cannot be read ({reason(err)})"
        raise WriteError(f"{why}; {usual_fix(err)} (it is left as it is)", err.errno, why) from None
    listed = [new] + ([current] if current and current != new else [])
    atomic_write_text(side, "".join(f"{h}  {path.name}\n" for h in listed))
    atomic_write_bytes(path, data)
    atomic_write_text(side, f"{new}  {path.name}\n")


# ----------------------------------------------------------------------------- reading


def _hashes(side: Path, path: Path) -> list[str]:
    """The hashes a sidecar lists (one normally; two while a save is in flight); a sidecar that cannot be opened or
    read is one line naming it, not its checkpoint ``path``."""
    try:
        return sidecar_hashes(side.read_text())
    except OSError as err:
        raise CheckpointError(f"{cannot_read(side, err)} (the checksum of {path.name})") from None


def _read(path: Path) -> bytes:
    """The checkpoint's bytes; an OS error of its open or of a read after it is one line with the fix it takes."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise CheckpointError(cannot_read(path, err)) from None


#: Reads of a checkpoint whose save landed between the file's read and its sidecar's (the new file renamed in, then
#: the sidecar cut to its one hash): read again this many times before the file is called damaged.
SIDECAR_TRIES = 4


def _read_verified(path: Path, fix: Callable[[], str]) -> tuple[bytes, str]:
    """The checkpoint's bytes, read once, and their SHA-256, checked against its sidecar (when it has one). The
    bytes read are the bytes loaded and hashed: a save between two reads of the file could mix one version's hash
    with another's weights (an export's ``checkpoint_sha256``, 1% of exports taken while a run saved every 5 steps),
    or take a sound file for a damaged one (its hash gone from the sidecar the save had just cut); and what is
    checked and loaded next (:func:`_torch_load`) is these bytes, the file never opened again. ``fix()``: what to do
    about a damaged file (:func:`cnnlab.runs.checkpoint_fix`, as the command asking names the run's other one)."""
    for attempt in range(SIDECAR_TRIES):
        data = _read(path)
        got = hashlib.sha256(data).hexdigest()
        side = sidecar(path)
        if not is_file(side):
            return data, got
        wanted = _hashes(side, path)
        if got in wanted:
            return data, got
        time.sleep(0.05 * (attempt + 1))  # a save in progress settles in milliseconds
    shown = wanted[0][:12] if wanted else "nothing"
    raise CheckpointError(f"{path}: SHA-256 {got[:12]}... does not match {side.name} ({shown}...); the file was "
                          f"truncated or altered: {fix()}")


#: What a file that is not one of torch.save's may be instead (its first bytes), for the refusal's message.
_OTHER_FORMATS = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
                  (b"BM", "a BMP image"), (b"{", "a JSON file"), (b"\x1f\x8b", "a gzip file"))


def _head(path: Path) -> bytes:
    """The first bytes of a weights file (:func:`_read_weights`; a checkpoint's are those already read)."""
    with open(path, "rb") as f:
        return f.read(16)


def _is_safetensors(path: Path, head: bytes) -> bool:
    """A safetensors file: an 8-byte header length, then its JSON header (or, cut short, its suffix)."""
    if head.startswith(b"PK\x03\x04"):  # a zip (torch.save, TorchScript) renamed .safetensors
        return False
    return head[8:9] == b"{" or path.suffix.lower() == ".safetensors"


def _zip_names(source: Path | bytes) -> list[str]:
    """The names in a zip archive: a file, or the bytes of one already read."""
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return []


def _foreign_format(path: Path, head: bytes, data: bytes | None = None) -> str | None:
    """What a file that is not one of torch.save's is instead (None: a zip or pickle torch.save may have written);
    ``data``: the whole file, already read (else its zip directory is read from ``path``)."""
    if head.startswith(b"PK\x03\x04"):
        # torch.save: <name>/data.pkl; torch.jit.save: its code and constants beside it
        names = _zip_names(path if data is None else data)
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return ("a TorchScript export (torch.jit.save, or 'cnnlab export --format torchscript'); give the run it "
                    "came from")
        if names and not any(n.endswith("data.pkl") for n in names):
            return f"a zip archive that torch.save did not write ({len(names)} file(s), no data.pkl)"
        return None
    if head[:1] == b"\x80":
        return None
    if not head:
        return "an empty file"
    if _is_safetensors(path, head):
        return ("a safetensors file, as 'cnnlab export-weights' writes for other tools: give the run it came from, "
                "evaluate it with 'cnnlab evaluate --weights FILE', or load it in plain PyTorch (docs/api.md)")
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":  # ModelProto's first field, ir_version
        return "an ONNX model (as 'cnnlab export' writes for other tools); give the run it came from"
    return next((name for magic, name in _OTHER_FORMATS if head.startswith(magic)), "not a file that torch.save wrote")


def _check_torch_file(path: Path, data: bytes | None, head: bytes = b"") -> None:
    """torch.save writes a zip archive (``PK``) or, in its legacy format, a pickle (``\\x80``): anything else (and
    a TorchScript archive) is named for what it is, not refused as "objects other than tensors" (what a hostile
    pickle gets). ``data``: the file's bytes, as read and verified (the file is not opened again); None: only its
    ``head`` was read (:func:`check_checkpoint_file`)."""
    what = _foreign_format(path, head if data is None else data[:16], data)
    if what is not None:
        raise CheckpointError(f"{path}: not a checkpoint ({what}); pass a run directory or a .pt file written by "
                              "cnnlab")


def _torch_load(path: Path, data: bytes, fix: Callable[[], str]):
    """The checkpoint in ``data``, the bytes of ``path`` as read and verified (``fix``: :func:`_read_verified`'s)."""
    _check_torch_file(path, data)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused, the file holds objects other than tensors and plain data ({first_line(err)[:160]}); "
            "only load checkpoints written by cnnlab"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {str(err)[:160]}); "
                              f"it may be truncated: {fix()}") from None


def check_checkpoint_file(path: str | Path) -> None:
    """:func:`load_checkpoint`'s refusals that need no more than what is at ``path`` and its first bytes (nothing, a
    folder, a FIFO; a PNG image, an export), in its words, for a caller that must refuse such a file before it
    touches anything: ``train --resume FILE`` locks the file's folder, which may be a folder of the user's own (a lock
    file was left there, or a read-only folder was the error named)."""
    path = Path(path)
    if not is_file(path):  # a stat that fails (an input/output error, a loop of links): one line naming it
        raise CheckpointError(_no_checkpoint(path))
    try:
        head = _head(path)
    except OSError as err:
        raise CheckpointError(cannot_read(path, err)) from None
    _check_torch_file(path, None, head)


def _no_checkpoint(path: Path) -> str:
    if (target := link_to_nowhere(path)) is not None:  # not "no such checkpoint": the link is there, its file is not
        return f"{path} is a link to {target}, which does not exist: remount what held it, or put it back"
    return f"{path}: {_not_a_file(path)} checkpoint; pass a run directory or a .pt file written by cnnlab"


def _not_a_file(path: Path) -> str:
    """``no such`` (nothing there), or what is there instead of a file: ``a folder, not a``."""
    kind = kind_of(path)
    return "no such" if kind == "nothing" else f"{kind}, not a"


def load_checkpoint(path: str | Path, expect_model: str | None = None, *, flag: str | None = None) -> dict:
    """Load and check a checkpoint; every refusal is a one-line :class:`CheckpointError`. A damaged file's names the
    run's other checkpoint as the command asking takes it (:func:`cnnlab.runs.checkpoint_fix`: ``--checkpoint best``
    beside a folder, ``flag`` with the file: ``--resume r/best.pt``; :func:`load_checkpoint_and_digest` for a file
    given as such)."""
    return load_checkpoint_and_digest(path, expect_model, flag=flag)[0]


def load_checkpoint_and_digest(path: str | Path, expect_model: str | None = None, *, flag: str | None = None,
                               file_given: bool = False) -> tuple[dict, str]:
    """:func:`load_checkpoint`, and the SHA-256 of the very bytes it loaded (what an export records as its source)."""
    path = Path(path)
    if not is_file(path):  # a stat that fails (an input/output error): one line naming it
        raise CheckpointError(_no_checkpoint(path))
    fix = functools.partial(checkpoint_fix, path, flag, file_given)  # the other checkpoint, as the command names it
    data, digest_of_file = _read_verified(path, fix)  # an unreadable file (or sidecar) fails here, naming it
    obj = _torch_load(path, data, fix)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a cnnlab checkpoint; for a bare state_dict use 'cnnlab evaluate --weights FILE --model NAME'"
        )
    if obj.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: checkpoint format version {obj.get('version')!r}, this cnnlab reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; use the cnnlab version that wrote it"
        )
    digest = obj.pop("tensor_digest", None)
    if digest is not None and digest != tensor_digest(obj):
        raise CheckpointError(f"{path}: its tensors do not match the digest stored inside (a damaged file): "
                              f"{fix()}")
    name = obj.get("model", {}).get("name")
    if expect_model is not None and name != expect_model:
        raise CheckpointError(f"{path}: checkpoint is for model {name!r}, not {expect_model!r}; pick the matching --model")
    _check_run_config(path, obj)
    return obj, digest_of_file


def same_run_as(where: Path, saved: dict | None = None, flag: str | None = None) -> Callable[[Path], bool]:
    """Whether a checkpoint is of the run of ``where`` (the one resumed or measured): the settings a resume may not
    change the same (:func:`cnnlab.config.other_run`), and its data the same data, wherever it lay (their records'
    fingerprints: :func:`cnnlab.data.dataset.same_data`; a best.pt of a run on another ``idx:`` directory was taken for
    the run's, its data "moved", and written over), for :func:`cnnlab.runs.users_files` (a resume's, and a report's or
    analysis's beside ``where``: the run's best.pt in a folder whose config.json is gone is the run's to both). One
    that cannot be loaded as a checkpoint is not; ``where`` that cannot be is refused as its load refuses it. Each
    file is loaded once; ``saved``: ``where``'s checkpoint, already loaded; ``flag``: :func:`load_checkpoint`'s. Of a
    report file there (metrics.csv, summary.json): whether what it says of its run agrees with ``where``'s record
    (:func:`cnnlab.runs.report_agrees`: metrics.csv's rows that its history covers, and the like)."""
    record_of = functools.cache(lambda path: _run_record(load_checkpoint(path, flag=flag)))

    def same(path: Path) -> bool:
        if path.suffix != ".pt":  # its report (metrics.csv, summary.json): what it says of its run
            own = _run_record(saved) if saved is not None else record_of(where)
            return report_agrees(path, *own)
        try:
            theirs = record_of(path)
        except (CnnlabError, KeyError, TypeError):
            return False
        own = _run_record(saved) if saved is not None else record_of(where)
        try:
            return not other_run(own[0], theirs[0], same_data(own[1], theirs[1]))
        except CnnlabError:  # settings no cnnlab wrote
            return False
    return same


def _run_record(ckpt: dict) -> tuple[dict, dict | None, list[dict]]:
    """A loaded checkpoint's settings, its record of its data (what :func:`same_run_as` compares of two checkpoints)
    and its epochs' history (what a report's metrics.csv is written from)."""
    try:
        history = TrainState.from_checkpoint(ckpt).history
    except (KeyError, TypeError, ValueError, AttributeError):
        history = []
    return ckpt["config"], ckpt.get("data"), history if isinstance(history, list) else []


def _check_run_config(path: Path, obj: dict) -> None:
    """A run's own checkpoint (``last.pt``, ``best.pt`` of a run folder) must be the net its config.json describes
    (model and the arguments that build it): one copied in from another run is refused. A config.json that cannot
    be read is left to what reads it."""
    if path.stem not in CHECKPOINTS or not is_file(path.parent / "config.json", if_unknown=False):  # left to its readers
        return
    try:
        saved = read_json(path.parent / "config.json", f"{path.parent / 'config.json'}")
    except CnnlabError:
        return
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        return
    model = obj.get("model") or {}
    wanted = {"model": saved["config"].get("model"), "model_args": saved.get("model_args")}
    got = {"model": model.get("name"), "model_args": model.get("args")}
    differ = [key for key in wanted if wanted[key] is not None and wanted[key] != got[key]]
    if differ:
        what = (f"model {got['model']!r}, the folder's config.json {wanted['model']!r}" if "model" in differ else
                f"model arguments {got['model_args']}, the folder's config.json {wanted['model_args']}")
        raise CheckpointError(f"{path}: a checkpoint of another net than its run folder's ({what}); it was copied in "
                              "from another run: give that run's folder, or put this run's own checkpoint back")


def load_state_dict_file(path: str | Path) -> dict:
    """A bare ``state_dict`` (e.g. saved by the lecture's code with ``torch.save(model.state_dict())``)."""
    path = Path(path)
    if not is_file(path):
        raise CheckpointError(f"{path}: {_not_a_file(path)} weights file; give the .pt or .safetensors file")
    try:
        obj = _read_weights(path)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused, the file holds objects other than tensors; save model.state_dict() instead") from None
    except OSError as err:
        raise CheckpointError(cannot_read(path, err)) from None
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError) as err:
        raise CheckpointError(f"{path}: not a readable weights file ({type(err).__name__}); it may be truncated") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return obj["state_dict"]
    if isinstance(obj, dict) and not _all_tensors(obj):  # a training script's checkpoint around the weights
        inner = [key for key in STATE_DICT_KEYS if _all_tensors(obj.get(key))]
        if len(inner) > 1:
            raise CheckpointError(f"{path}: holds weights under both {inner[0]!r} and {inner[1]!r}; save the net's "
                                  "own: torch.save(model.state_dict(), path)")
        obj = obj[inner[0]] if inner else obj
    if not _all_tensors(obj):
        raise CheckpointError(f"{path}: not a state_dict (a dict of tensors, or a checkpoint holding one under "
                              f"{', '.join(map(repr, STATE_DICT_KEYS))}); save model.state_dict()")
    return strip_wrapper_prefix(obj)


def _read_weights(path: Path):
    """A weights file's contents: safetensors read as such (a damaged one is one line), torch.save's files with
    ``weights_only``; any other kind of file (TorchScript, ONNX, an image, JSON) refused, named for what it is."""
    head = _head(path)
    if _is_safetensors(path, head):
        try:
            return load_safetensors(str(path), device="cpu")
        except OSError:
            raise
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for damaged headers
            raise CheckpointError(f"{path}: a safetensors file that is truncated or damaged ({first_line(err)[:120]}); "
                                  "write it again, or give another weights file") from None
    what = _foreign_format(path, head)
    if what is not None:
        raise CheckpointError(f"{path}: not a weights file: {what}; --weights takes a state_dict (.pt or "
                              ".safetensors)")
    return torch.load(path, map_location="cpu", weights_only=True)


#: Where training scripts' checkpoints keep the weights: ``torch.save({"epoch": e, "model_state_dict": ...})`` (the
#: PyTorch tutorials), ``{"state_dict": ...}`` (Lightning and many scripts), ``{"model": ...}``, ``{"net": ...}``.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")
#: The prefixes that wrappers add to every key: DataParallel and DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: A training module's attribute holding the net (Lightning's ``self.model``, scripts' ``self.net``): taken off only
#: when the weights do not fit as they are (a net of the user's own may have a top-level ``net``).
HOLDER_PREFIXES = ("model.", "net.")


def _all_tensors(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def strip_wrapper_prefix(state_dict: dict) -> dict:
    """The weights of a net saved from inside a wrapper (``module.conv1.weight`` from DataParallel or DDP,
    ``_orig_mod.`` from torch.compile) under the net's own names; a prefix is taken off only when every key has it."""
    while True:
        prefix = next((p for p in WRAPPER_PREFIXES if all(str(k).startswith(p) for k in state_dict)), None)
        if prefix is None:
            return state_dict
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}


def load_into(model: nn.Module, state_dict: dict) -> None:
    """``model.load_state_dict(state_dict, strict=True)``, its refusal as one line that says what does not fit
    (torch's first line is only "Error(s) in loading state_dict for ResNet:")."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError:
        held = next((p for p in HOLDER_PREFIXES if state_dict and all(str(k).startswith(p) for k in state_dict)), None)
        if held is None:
            raise CheckpointError(_mismatch(model.state_dict(), state_dict)) from None
        load_into(model, {k[len(held):]: v for k, v in state_dict.items()})  # a LightningModule's self.model


def _dims(t: torch.Tensor) -> str:
    return "a nested tensor" if t.is_nested else "x".join(map(str, t.shape)) or "a scalar"


def _fits(got: torch.Tensor, want: torch.Tensor) -> bool:
    return not got.is_nested and got.shape == want.shape  # a nested tensor has no shape (torch raises for it)


def _mismatch(want: dict, got: dict) -> str:
    def some(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    missing = [k for k in want if k not in got]
    extra = [str(k) for k in got if k not in want]
    shapes = [f"{k} {_dims(got[k])} instead of {_dims(want[k])}"
              for k in want if k in got and isinstance(got[k], torch.Tensor) and not _fits(got[k], want[k])]
    parts = [f"{len(missing)} of the net's {len(want)} tensors are not in the file ({some(missing)})"] * bool(missing)
    parts += [f"{len(extra)} in the file are not the net's ({some(extra)})"] * bool(extra)
    parts += [f"{len(shapes)} differ in shape, in the file ({some(shapes)})"] * bool(shapes)
    return "; ".join(parts) or "its tensors do not load"


def resolve_checkpoint(path: str | Path, which: str | None = None, flag: str | None = None) -> Path:
    """A run directory -> its ``which``.pt (``which`` one of :data:`cnnlab.runs.CHECKPOINTS`, last.pt unless given); a
    file -> itself, and a ``which`` given beside a file must name that file (``RUN/best.pt`` with ``which="last"``, the
    command line's ``--checkpoint last`` typed or the API's ``which='last'``, is refused, not answered from best.pt).
    ``which`` is None where it was not given (a ``--checkpoint`` not typed): every caller passes it as given.
    ``flag``: the flag that gave ``path`` where the command takes no ``--checkpoint`` (``--teacher``): a hint to use the
    other checkpoint names its file with that flag."""
    path = as_path(path, "a checkpoint (a run folder or a .pt file)", CheckpointError)
    if which is not None and which not in CHECKPOINTS:
        raise CheckpointError(f"no checkpoint named {which!r}; choose one of: {', '.join(CHECKPOINTS)}")
    if is_dir(path):  # a stat that fails (an input/output error): one line naming the file, not a traceback
        which = which or DEFAULT_CHECKPOINT
        candidate = path / f"{which}.pt"
        if not is_file(candidate):
            if exists(candidate) or link_to_nowhere(candidate) is not None:  # a FIFO, a folder, a link to nothing: what
                raise CheckpointError(_no_checkpoint(candidate))  # it is, as a resume says it (not "no last.pt")
            raise CheckpointError(f"{path}: no {which}.pt in this run directory; {_why_none(path, which, flag)}")
        return candidate
    if which is not None and path.name != f"{which}.pt":  # asked for another file than the one given
        if not exists(path):  # nothing there (a run folder's typo) or a link to nothing: what it is, not "a file"
            raise CheckpointError(_no_checkpoint(path))
        raise CheckpointError(f"{path} is a checkpoint file, and choosing {which!r} (--checkpoint {which}) picks a "
                              f"file of a run folder: give the folder ({path.parent}), or the file {which}.pt itself")
    return path


def _why_none(run: Path, which: str, flag: str | None = None) -> str:
    """Why a run folder has no ``which``.pt, as far as its files tell, and what to give instead (``flag``: the option
    that names a checkpoint file in the command asking, ``--teacher``): the one source of that line for every command
    and the API (``evaluate``, ``predict``, ``serve``, ``export``, ``--teacher``, ``analyze``, ``Run.model()``...),
    through :func:`resolve_checkpoint`."""
    last, best = is_file(run / "last.pt"), is_file(run / "best.pt")
    if which == "best" and last:
        if refusal := diverged_refusal(run / "last.pt"):  # not "use --checkpoint last", which it refuses, nor a resume
            return refusal  # (which diverges again): what it says of the run, "train it again with a lower --lr"
        if damage := checkpoint_damage(run / "last.pt"):  # not "use --checkpoint last", which names it damaged
            return f"its last.pt is damaged too: {damage}"
        if not is_file(run / "metrics.csv"):  # an epoch's end writes its row before its checkpoints
            return "no epoch has ended yet, so there is no best.pt: use --checkpoint last"
        if is_training(run):  # between an epoch's two saves (last.pt, then best.pt), or a resume of a lost best.pt
            return ("it is training now and has not written best.pt yet (an epoch's end saves last.pt, then best.pt): "
                    "wait for it, or use --checkpoint last")
        return ("its best epoch's save was lost (a full disk, or a kill between the epoch's two saves): use "
                f"--checkpoint last, or resume the run (cnnlab train --resume {shell_quoted(str(run))}), which writes best.pt again")
    if is_training(run):  # (not an evaluate writing the run's report: it holds the lock too)
        return "it is still training and has saved no checkpoint yet: wait for the end of its first epoch"
    if best:
        if damage := checkpoint_damage(run / "best.pt"):  # not "use --checkpoint best", which names it damaged
            return f"its best.pt, the one checkpoint it has, is damaged: {damage}"
        return f"its best.pt holds the weights of its best epoch: {checkpoint_as_taken(run / 'best.pt', flag)}"
    if not is_run_dir(run):
        return "it is not a run folder: give a run folder or a .pt file written by cnnlab"
    if not is_cnnlab_run(run):  # another tool's folder with a config.json: no run of cnnlab's ever trained there
        return ("it is not a cnnlab run folder (its config.json is not the one cnnlab writes, and it holds no run's "
                "files): give a run folder or a .pt file written by cnnlab")
    if gone := checkpoints_gone(run):  # it trained (its metrics.csv or summary.json are there, or its status.json
        return gone  # says a diverged run kept its last.pt): deleted or moved; or its checkpoints are links to nothing
    if cause := failure_cause(run):  # what status.json (and 'cnnlab runs') says of it, with its fix
        return f"the run saved no checkpoint: it failed ({cause})"
    return "the run saved no checkpoint (it stopped before its first epoch ended): train it again"


def _as_typed_and_followed(path: Path) -> tuple[Path, ...]:
    """``path``'s candidates for a run's last.pt, the file a symbolic link leads to first (:func:`cnnlab.runs.followed`:
    ``lk/net.pt -> runs/r5/last.pt`` is r5's, as ``train --resume lk/net.pt`` continues r5), then ``path`` as typed (a
    run's last.pt that is a link into a store is its run's); a loop of links: ``path`` alone."""
    try:
        real = followed(path)
    except (CnnlabError, OSError):  # a loop of links, or one that cannot be read: no file it leads to
        return (path,)
    return (real, path) if real != path else (path,)


def run_last(path: str | Path) -> Path | None:
    """The last.pt of a run folder that ``path`` is, through a symbolic link too (the run whose status.json says how
    it ended: :func:`_as_typed_and_followed`), None for any other file: where :func:`diverged_last` looks (and
    :func:`checkpoint_stamp` watches), so that every command that takes a file sees the run a link leads to."""
    return next((last for last in _as_typed_and_followed(Path(path))
                 if last.name == "last.pt" and is_run_dir(last.parent)), None)


def diverged_last(path: str | Path) -> str | None:
    """How its run failed (:func:`cnnlab.runs.diverged`: ``training diverged: the loss exploded (...) at step 12
    (epoch 1, batch 12)``) when ``path`` is the last.pt of a run folder whose training diverged (or a link to one:
    :func:`run_last`): the weights it had when the loss was seen to explode, or just before (logits of 1e8, one class
    at 100% for every image). None for any other file: a run's best.pt is an evaluated epoch's weights, saved before
    the divergence."""
    found = _diverged_run(path)
    return None if found is None else found[1]


def _diverged_run(path: str | Path) -> tuple[Path, str] | None:
    """The run folder whose last.pt ``path`` is (:func:`run_last`) and :func:`diverged_last`'s line, when it diverged."""
    last = run_last(path)
    why = None if last is None else diverged(last.parent)
    return None if why is None else (last.parent, why)


def diverged_refusal(path: str | Path, command: str | None = None, flag: str | None = None,
                     given: str | None = None, file_given: bool = False) -> str:
    """The one line that refuses a diverged run's last.pt (:func:`diverged_last`; "" for any other file) wherever a
    run's net answers or is written out: ``predict``, ``serve`` (at its start, and when the file served changes: it
    stops answering), ``export``, ``export-weights``, ``--teacher``, the API's predictors. It names the run's best.pt
    where there is one: ``command``'s ``--checkpoint best`` (the whole command when given), the file itself where the
    last.pt was given as a file (``file_given``: ``--checkpoint best`` picks a file of a folder, and is refused beside
    a file), or, for an option that names a file (``flag``, given as ``given``: ``--teacher RUN``), that option with
    the best.pt."""
    found = _diverged_run(path)  # a link's: the run it leads to
    if found is None:
        return ""
    folder, why = found
    best = folder / "best.pt"
    if flag:
        lead, pick, use, other = (f"{flag} {given}: that run", checkpoint_as_taken(best, flag), "give",
                                  "a finished run (e.g. this one trained again with a lower --lr)")
    else:
        lead, use, other = str(folder), "use", "train it again with a lower --lr"
        pick = (f"cnnlab {command} {shell_quoted(str(folder))} --checkpoint best" if command else
                checkpoint_as_taken(best, file_given=file_given))
    instead = (f"{use} its best.pt, the weights of its best epoch before that ({pick}), or " if is_file(best)
               else "give " if flag else "")
    return (f"{lead} failed, {why} (its status.json), and its last.pt holds the weights it diverged with (a resume of "
            f"it diverges again); {instead}{other}")


def refuse_diverged(path: str | Path, command: str | None = None, flag: str | None = None,
                    given: str | None = None, file_given: bool = False) -> None:
    """:func:`diverged_refusal`'s line, raised (a :class:`CheckpointError`) when ``path`` is a diverged run's last.pt."""
    if refusal := diverged_refusal(path, command, flag, given, file_given):
        raise CheckpointError(refusal)


def diverged_warning(path: str | Path, file_given: bool = False) -> str:
    """The warning of a measurement of a diverged run's last.pt (``evaluate``, ``analyze branches``), which measures
    it and writes nothing into the run (it is not the run's result); "" for any other file. Its best.pt is named as
    :func:`diverged_refusal` names it: ``--checkpoint best``, or the file where the last.pt was given as a file."""
    found = _diverged_run(path)  # a link's: the run it leads to
    if found is None:
        return ""
    folder, why = found
    best = folder / "best.pt"
    pick = f"{shell_quoted(str(best))} holds" if file_given else "--checkpoint best measures"
    other = f"; {pick} its best epoch's weights, saved before that" if is_file(best) else ""
    return (f"warning: {folder} failed, {why} (its status.json), and its last.pt holds the weights it "
            f"diverged with: what is measured is that net{other}")


def checkpoint_stamp(path: str | Path) -> tuple:
    """What tells the versions of a checkpoint file apart without reading it (:func:`cnnlab.fileio.file_stamp`), for
    a reader that follows the file (``cnnlab serve``): its own stat, its SHA-256 sidecar's (a file refused for a hash
    that did not match is tried again when the sidecar that matches it arrives) and, for a last.pt, its folder's
    status.json's (a run that diverged since its last.pt was loaded), a link's the run's it leads to (both, where
    the link and the file it leads to are each named last.pt: :func:`run_last` picks among them as it reads them)."""
    path = Path(path)
    status = tuple(file_stamp(last.parent / STATUS_FILE) for last in _as_typed_and_followed(path)
                   if last.name == "last.pt")
    return file_stamp(path), file_stamp(sidecar(path)), status


def empty_model(name: str, **args) -> nn.Module:
    """A registered model on the CPU whose weights are left undrawn (built on torch's meta device), for weights
    about to be loaded: it draws nothing from torch's global generator, which loading a net in one thread while
    another thread's run drew its seeded weights from it changed that run's weights (every time, in a test)."""
    with torch.device("meta"):
        model = create_model(name, **args)
    # each tensor made anew on the CPU, as Module.to_empty does, but by torch.empty: to_empty's empty_like of a meta
    # tensor took 0.3 s of every load in a fresh process (evaluate's latency +0.96 s over import torch, goal 0.8)
    model = model._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device="cpu"))
    with torch.no_grad():  # zeros, not whatever the memory held: a value a file leaves out is not garbage (BatchNorm
        for t in (*model.parameters(), *model.buffers()):  # fills a missing num_batches_tracked with the net's own)
            t.zero_()
    return model


def model_from_checkpoint(state: dict) -> nn.Module:
    """The model a loaded checkpoint describes, with its weights (strict: every key must fit)."""
    model = empty_model(state["model"]["name"], **state["model"]["args"])
    try:
        load_into(model, state["state_dict"])
    except CheckpointError as err:
        raise CheckpointError(f"checkpoint weights do not fit model {state['model']['name']!r}: {err}") from None
    return model


def load_weights_file(path: str | Path) -> dict:
    """A safetensors file written by ``cnnlab export-weights`` (or shipped with cnnlab) as a checkpoint-like
    dict: ``model`` (name, args), ``data`` (classes, normalisation, input size) and ``state_dict``."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except OSError as err:
        raise CheckpointError(cannot_read(path, err)) from None
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for damaged headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(err).__name__}: {str(err)[:120]}); "
                              "it may be truncated") from None
    try:
        data = json.loads(meta["data"])
        model = {"name": meta["model"], "args": json.loads(meta["model_args"])}
    except (KeyError, ValueError, RecursionError):
        raise CheckpointError(f"{path}: safetensors without cnnlab's metadata (model, model_args, data); write it "
                              "with 'cnnlab export-weights', or load it with 'cnnlab evaluate --weights FILE --model NAME'"
                              ) from None
    return {"format": FORMAT, "model": model, "data": data, "state_dict": tensors, "config": {}}
