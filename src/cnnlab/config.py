"""The typed configuration saved into every run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from cnnlab.errors import CnnlabError


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
    #: Stop after this many optimiser steps in total; 0 = no limit (used by --dry-run and tests).
    max_steps: int = 0
    #: Evaluate on at most this many test images; 0 = the whole test set.
    eval_limit: int = 0
    #: Write ``last`` every N steps as well as at each epoch's end; 0 = only at epoch ends.
    save_every: int = 0

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
