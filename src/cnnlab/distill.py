"""Knowledge distillation: a finished run's net teaches a new run (``--teacher RUN``).

The student's loss is ``(1 - w) * CE + w * T^2 * KL(teacher_T || student_T)`` (Hinton et al. 2015), with
``w = --distill`` and ``T = --distill-temperature``; the cross-entropy keeps the run's label smoothing, and
the teacher sees the same (augmented) batch as the student, with autograd off. The teacher is the net its
run evaluates and exports (the weights' moving average when the run kept one), in eval mode.

Checked when the run starts, each refusal one line: the teacher's checkpoint loads (cnnlab's checks), it was
trained on the same dataset, as it is now (an image folder may have changed since), and fits its shape, it is
not training now, it is not the run itself, it is not the last.pt of a run whose training diverged (its best.pt
is taken), and, for a
run with ``--val-split``, it held out the same validation images (the same fraction and seed): a teacher that
trained on them would carry them into the student's validation figures. A run records the teacher checkpoint's
absolute path in config.json, keeps a copy of it as ``teacher.pt`` in the run folder (so that a resume does not
depend on the teacher's run staying as it was) and its SHA-256 in every checkpoint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.checkpoint import (check_checkpoint_file, diverged_refusal, load_checkpoint, model_from_checkpoint,
                               resolve_checkpoint)
from cnnlab.config import TrainConfig
from cnnlab.data import Dataset
from cnnlab.errors import CheckpointError, CnnlabError, RunError, shell_quoted
from cnnlab.evaluation import check_fits
from cnnlab.fileio import atomic_write_bytes, exists, is_dir, is_file, read_json, resolved, sha256_file
from cnnlab.runs import diverged, holder, is_run_dir, is_training, run_status


@dataclass
class Teacher:
    model: nn.Module
    path: Path  # the teacher's checkpoint file, absolute
    sha256: str
    weight: float
    temperature: float
    #: A warning to show when the run starts (a teacher whose run has not finished), or None.
    note: str | None = None

    def loss(self, ce: torch.Tensor, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The student's objective for a batch ``x`` whose cross-entropy is ``ce`` and logits ``logits``."""
        with torch.no_grad():
            target = self.model(x)
        t = self.temperature
        kl = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(target / t, dim=1), reduction="batchmean",
                      log_target=True)
        return (1 - self.weight) * ce + self.weight * (t * t) * kl

    def record(self) -> dict:
        """What a checkpoint keeps of the teacher: enough to refuse another teacher on resume."""
        return {"path": str(self.path), "sha256": self.sha256}


#: The run's own copy of its teacher's checkpoint: a resume reads it, whatever became of the original since.
TEACHER_FILE = "teacher.pt"


def load_teacher(cfg: TrainConfig, data: Dataset, run_dir: Path | None, resume_from: Path | None,
                 device: torch.device, memory_format: torch.memory_format) -> Teacher | None:
    """The run's teacher, checked (the module docstring): a new run reads ``cfg.teacher`` (which becomes its
    checkpoint's absolute path) and keeps a copy in ``run_dir``; a resumed run reads the copy beside the
    checkpoint it resumes from (every rank of a torchrun launch, only one of which writes)."""
    if not cfg.teacher:
        return None
    copy = Path(resume_from).parent / TEACHER_FILE if resume_from is not None else None
    path = copy if copy is not None and is_file(copy) else _teacher_path(cfg, run_dir)  # a stat that fails: one line
    own = Path(run_dir) / TEACHER_FILE if run_dir is not None else None
    try:
        ckpt = load_checkpoint(path, flag="--teacher")
    except CheckpointError as err:
        raise CheckpointError(f"--teacher: {err}") from None
    _check_same_images(cfg, ckpt.get("config") or {}, path)
    if data.changed_since(ckpt.get("data") or {}):  # an image folder changed since: it would normalise other images
        raise RunError(f"--teacher {path}: it was trained on another version of {data.name} "
                       f"({data.describe_changes(ckpt.get('data') or {})}); give a teacher trained on the data as it is now")
    check_fits(ckpt["model"].get("args") or {}, data, path, str((ckpt.get("config") or {}).get("dataset")))
    data_bytes = path.read_bytes()
    if own is not None and path != own:
        atomic_write_bytes(own, data_bytes)
    model = model_from_checkpoint(ckpt).eval().to(device, memory_format=memory_format)
    for p in model.parameters():
        p.requires_grad_(False)
    return Teacher(model, Path(cfg.teacher), hashlib.sha256(data_bytes).hexdigest(), cfg.distill,
                   cfg.distill_temperature, unfinished_note(ckpt, path) if copy is None else None)


def unfinished_note(ckpt: dict, path: Path) -> str | None:
    """A warning for a teacher whose run has not finished (stopped by --max-steps, Ctrl+C or a kill): it teaches
    what it knew then (a run of 20 steps taught at 8% accuracy without a word). None for a finished run's
    checkpoints (``best.pt`` included), and for one that reached its --target-accuracy. The best.pt of a run that
    diverged (its last.pt is refused) is warned of without the advice to resume it, which would diverge again."""
    state, epochs = ckpt.get("train_state") or {}, (ckpt.get("config") or {}).get("epochs")
    if is_run_dir(path.parent) and run_status(path.parent)[0] == "finished":
        return None
    done = state.get("epoch", 0) if isinstance(state.get("epoch", 0), int) else 0
    if state.get("target") or not isinstance(epochs, int) or done >= epochs:
        return None
    said = (f"warning: --teacher {path}: its run stopped after {done} of {epochs} epochs (step "
            f"{state.get('step', '?')}), and it teaches what it knew then")
    if is_run_dir(path.parent) and diverged(path.parent):  # its best.pt: a resume would diverge again
        return f"{said}; that run diverged later (its status.json): train it again with a lower --lr for a better teacher"
    return f"{said}; finish it first (cnnlab train --resume {shell_quoted(str(path.parent))}) for a better teacher"


def check_teacher(cfg: TrainConfig) -> None:
    """``cfg.teacher`` checked as a new run checks it before loading it (:func:`_teacher_path`: of a run not training
    now and not diverged; a checkpoint file there, :func:`cnnlab.checkpoint.check_checkpoint_file`), before the run
    has a folder; ``cfg`` is left as it is."""
    if not cfg.teacher:
        return
    path = _teacher_path(replace(cfg), None)
    try:
        check_checkpoint_file(path)
    except CheckpointError as err:
        raise CheckpointError(f"--teacher: {err}") from None


def _teacher_path(cfg: TrainConfig, run_dir: Path | None) -> Path:
    """``--teacher`` as a checkpoint file's absolute path (``cfg.teacher`` becomes it), refused when it is this run's
    own or a run that is training now."""
    given = Path(cfg.teacher)
    if run_dir is not None and resolved(given if is_dir(given) or not exists(given) else given.parent) == \
            resolved(run_dir):  # asked first: the run's own folder has no checkpoint yet ("still training")
        raise RunError(f"--teacher {cfg.teacher}: that is this run's own folder (--out); a run cannot teach itself: "
                       "give another, finished run")
    try:
        path = resolved(resolve_checkpoint(cfg.teacher, flag="--teacher"))
    except CheckpointError as err:
        raise CheckpointError(f"--teacher: {err}") from None
    if run_dir is not None and path.parent == resolved(run_dir):
        raise RunError(f"--teacher {cfg.teacher}: that is this run's own checkpoint; a run cannot teach itself: "
                       "give another, finished run")
    if is_training(path.parent):
        raise RunError(f"--teacher {cfg.teacher}: that run is still training ({holder(path.parent)} holds it); "
                       "wait for it to finish, or give a finished run")
    if refusal := diverged_refusal(path, flag="--teacher", given=cfg.teacher):  # its best.pt teaches (unfinished_note)
        raise RunError(refusal)  # (a run that cannot teach: the class of the refusals above)
    cfg.teacher = str(path)
    return path


def _check_same_images(cfg: TrainConfig, taught: dict, path: Path) -> None:
    """The teacher learned the student's dataset, and never saw the images the student validates on."""
    if taught.get("dataset") != cfg.dataset:
        raise RunError(f"--teacher {path}: it was trained on {taught.get('dataset')!r}, this run trains on "
                       f"{cfg.dataset!r}; give a teacher trained on the same dataset")
    if cfg.val_split > 0 and (float(taught.get("val_split") or 0), int(taught.get("seed", 0))) != (cfg.val_split, cfg.seed):
        raise RunError(f"--teacher {path}: it was trained with --val-split {taught.get('val_split') or 0:g} --seed "
                       f"{taught.get('seed')}, so it saw images this run holds out for validation (--val-split "
                       f"{cfg.val_split:g} --seed {cfg.seed}); train the teacher with the same --val-split and --seed")


def check_rerun_teacher(cfg: TrainConfig, config_file: Path) -> None:
    """``train --config STUDENT`` re-runs a distilled run with the teacher file it recorded: refused (one line naming
    both, and the fixes) when that file is no longer the one the run learned from (its teacher retrained or resumed
    since: the re-run distilled from another net without a word). The run's hash is in config.json (``teacher``)
    or, for runs written before it was, that of its copy ``STUDENT/teacher.pt``. Refused rather than switched to
    the copy: which teacher a new run learns from is the user's to say."""
    if not cfg.teacher:
        return
    try:
        data = read_json(config_file, str(config_file))
    except CnnlabError:
        return  # TrainConfig.from_file read it; a re-run without a readable record cannot be checked
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        return  # a settings file, not a run's config.json: no run to compare with
    recorded = data.get("teacher")
    want = recorded.get("sha256") if isinstance(recorded, dict) else None
    copy = Path(config_file).parent / TEACHER_FILE
    teacher = Path(cfg.teacher)
    # every path as a shell takes it back: the fixes are to be copied
    run, copied, named = (shell_quoted(str(p)) for p in (config_file.parent, copy, teacher))
    if not exists(teacher):  # the teacher run moved or deleted: no flag named it, the config did
        fix = f"give --teacher {copied}, the run's copy of it, or" if copy.is_file() else "give"
        raise RunError(f"--config {run}: its teacher {named} is gone (moved or deleted?); {fix} "
                       "--teacher RUN for the teacher run where it is now")
    if not isinstance(want, str):
        want = sha256_file(copy) if copy.is_file() else None
    if want is None or not teacher.is_file() or sha256_file(teacher) == want:
        return  # nothing to compare with (or a folder: load_teacher reads it), or the same teacher
    raise RunError(f"--config {run}: its teacher {named} is not the file the run learned from (its "
                   f"SHA-256 changed since: retrained or resumed?); to learn from the same teacher give --teacher "
                   f"{copied}, the run's copy, or to learn from it as it is now give --teacher {named}")


def check_same_teacher(teacher: Teacher | None, recorded: dict | None, where) -> None:
    """A resume refuses a teacher that is not the one the run trained with so far (its file changed)."""
    if teacher is None or not recorded:
        return
    if recorded.get("sha256") != teacher.sha256:
        raise CnnlabError(f"--resume {where}: its copy of the teacher ({TEACHER_FILE}) is not the file the run trained "
                          "with (its SHA-256 changed); put that file back, or train a new run")
