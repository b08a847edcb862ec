"""The typed configuration saved into every run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from cnnlab.errors import CnnlabError, RunError


@dataclass
class TrainConfig:
    model: str = "inception"
    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int = 10
    #: Global batch size (split across ranks under torchrun).
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.5
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 1000
    #: Intra-op CPU threads; 0 keeps torch's default.
    threads: int = 0
    #: Keep freed host memory for reuse instead of returning it to the OS each step (glibc; see cnnlab.hostmem).
    malloc_tuning: bool = True
    #: Stop after this many optimiser steps in total; 0 = no limit (used by --dry-run and tests).
    max_steps: int = 0
    #: Evaluate on at most this many test images; 0 = the whole test set.
    eval_limit: int = 0
    #: Write ``last`` every N steps as well as at each epoch's end; 0 = only at epoch ends.
    save_every: int = 0
    #: Fraction of the train split held out (seeded) to choose ``best``; the test set is then used once.
    val_split: float = 0.0
    #: Learning-rate schedule: constant (the lecture) or onecycle.
    schedule: str = "constant"
    #: Batched augmentation: none, or shift (random translation of up to 2 px).
    augment: str = "none"
    label_smoothing: float = 0.0
    #: fp32, or bf16 (autocast on CPU and CUDA; weights and optimiser stay fp32).
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    #: Stop as soon as the evaluated accuracy reaches this (percent); 0 = off.
    target_accuracy: float = 0.0
    #: Evaluations per epoch while a target accuracy is set.
    evals_per_epoch: int = 1
    tensorboard: bool = False
    recipe: str = "lecture"

    def validate(self) -> "TrainConfig":
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"--eval-batch-size must be at least 1, got {self.eval_batch_size}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (self.threads >= 0, f"--threads must be >= 0, got {self.threads}"),
            (self.max_steps >= 0, f"--max-steps must be >= 0, got {self.max_steps}"),
            (self.save_every >= 0, f"--save-every must be >= 0, got {self.save_every}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (0 <= self.val_split < 1, f"--val-split must be in [0, 1), got {self.val_split}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.augment in AUGMENTS, f"--augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.target_accuracy <= 100, f"--target-accuracy is a percentage in (0, 100], got {self.target_accuracy}"),
            (self.evals_per_epoch >= 1, f"--evals-per-epoch must be at least 1, got {self.evals_per_epoch}"),
        ]
        for ok, message in checks:
            if not ok:
                raise CnnlabError(message)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CnnlabError(f"unknown config keys {unknown}; this run was written by another cnnlab version")
        return cls(**data)


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "onecycle")
AUGMENTS = ("none", "shift")
PRECISIONS = ("fp32", "bf16")

#: Named recipes: the values they set unless a flag sets them explicitly.
RECIPES: dict[str, dict] = {
    # The lecture's settings (these are also the dataclass defaults).
    "lecture": {"epochs": 10, "batch_size": 64, "optimizer": "sgd", "lr": 0.01, "momentum": 0.5,
                "weight_decay": 0.0, "schedule": "constant", "augment": "none", "label_smoothing": 0.0,
                "evals_per_epoch": 1, "channels_last": False},
    # Reach 99% test accuracy as early as possible: Adam with a one-cycle schedule over a
    # short run, a larger batch, and frequent checks against the target (see docs/speed.md).
    # Measured on 2 CPU cores (docs/speed.md): label smoothing 0.1 moved the residual net's first
    # 99% from epoch 1.4-1.5 to 1.0 on every seed; channels-last is 1.2-1.3x faster on both nets
    # here (and keeps fp32); shift augmentation delayed 99% to epoch 1.25, so it is off.
    "fast": {"epochs": 2, "batch_size": 128, "optimizer": "adam", "lr": 0.006, "momentum": 0.0,
             "weight_decay": 0.0, "schedule": "onecycle", "augment": "none", "label_smoothing": 0.1,
             "evals_per_epoch": 4, "channels_last": True},
}


def apply_recipe(cfg: "TrainConfig", given: dict) -> "TrainConfig":
    """Set ``cfg.recipe``'s values, then the values the user ``given`` explicitly (they win)."""
    if cfg.recipe not in RECIPES:
        raise CnnlabError(f"--recipe must be one of {', '.join(RECIPES)}, got {cfg.recipe!r}")
    for key, value in {**RECIPES[cfg.recipe], **given}.items():
        setattr(cfg, key, value)
    return cfg


#: Fields that say how a process runs a run, not what the run is: a resume takes them from the
#: invocation, and they do not make runs incomparable (compare's config hash leaves them out).
PROCESS_FIELDS = ("max_steps", "device", "threads", "malloc_tuning")
#: Fields that do not change what a run is either, but that a resume keeps from the run unless given.
ADJUSTABLE_FIELDS = ("data_dir", "save_every", "eval_batch_size", "tensorboard")


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def resumed_config(saved: TrainConfig, invocation: TrainConfig, changes: dict | None = None) -> TrainConfig:
    """The config a resume runs with: the run's own, with this invocation's process fields.

    ``changes`` are the values the user gave explicitly. A change to what the run *is* (model, lr, batch
    size...) is refused with one line naming it; ``epochs`` may grow where the schedule allows it (a
    constant learning rate), which extends a finished run.
    """
    cfg = dataclasses.replace(saved)
    for key in PROCESS_FIELDS:
        setattr(cfg, key, getattr(invocation, key))
    changes = changes or {}
    for key in ADJUSTABLE_FIELDS:
        if key in changes:
            setattr(cfg, key, changes[key])
    free = PROCESS_FIELDS + ADJUSTABLE_FIELDS
    changed = {k: v for k, v in changes.items() if k not in free and v != getattr(saved, k)}
    epochs = changed.pop("epochs", None)
    if changed:
        named = ", ".join(f"{flag(k)} {v} (the run's: {getattr(saved, k)})" for k, v in sorted(changed.items()))
        raise RunError(f"--resume continues a run with its own settings, and {named} would change it; "
                       "drop these flags, or start a new run with --out")
    if epochs is not None:
        if saved.schedule != "constant":
            raise RunError(f"--epochs {epochs}: the run's {saved.schedule} learning-rate schedule was planned for "
                           f"{saved.epochs} epochs and cannot be extended without changing the rates already used; "
                           f"start a new run with --epochs {epochs}")
        cfg.epochs = epochs
    return cfg
