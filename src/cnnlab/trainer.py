"""The trainer: everything one run trains with, built once, and the operations its observers use.

:class:`Trainer` holds the model (``model`` owns the weights; ``net`` is what is called: maybe DDP,
maybe compiled), the optimiser, the scheduler, the loaders, the device and ranks, and the run's
:class:`~cnnlab.checkpoint.TrainState`. The engine (:mod:`cnnlab.engine`) drives it epoch by epoch;
observers (:mod:`cnnlab.observers`) call :meth:`Trainer.evaluate`, :meth:`Trainer.save` and
:meth:`Trainer.request_stop`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from cnnlab.augment import Augment
from cnnlab.checkpoint import EpochSums, TrainState, save_checkpoint
from cnnlab.config import TrainConfig, recipe_rate
from cnnlab.data import BatchLoader, Dataset
from cnnlab.distill import Teacher
from cnnlab.distributed import Dist
from cnnlab.errors import DIVERGED, DIVERGED_KEPT, CnnlabError, Diverged
from cnnlab.fileio import FolderGuard, is_file
from cnnlab.evaluation import EvalResult, evaluate

Log = Callable[[str], None]


class RunningSums:
    """This rank's sums over the current epoch, kept on the device: no host sync per step.

    ``losses`` keeps each step's loss of the epoch, so that a non-finite sum can name the step it came from.
    """

    def __init__(self, start: EpochSums, device: torch.device, steps: int, first_batch: int):
        self.loss = torch.tensor(start.loss, dtype=torch.float64, device=device)
        self.correct = torch.tensor(start.correct, dtype=torch.int64, device=device)
        self.count = start.count
        self.losses = torch.zeros(steps, dtype=torch.float32, device=device)  # (steps per epoch,)
        self.first_batch = first_batch

    def add(self, batch: int, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss.detach().double() * len(y)
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.count += len(y)
        self.losses[batch] = loss.detach()

    def mean_loss(self) -> float:
        return float(self.loss) / max(self.count, 1)

    def exploded(self) -> bool:
        """The epoch's loss so far is NaN, infinite, or beyond :data:`EXPLODED_LOSS` per image (one host sync)."""
        mean = float(self.loss) / max(self.count, 1)
        return not math.isfinite(mean) or mean > EXPLODED_LOSS

    def first_bad_batch(self, upto: int) -> int | None:
        """The first batch of this epoch (in this process) whose loss was not finite, or beyond the bound."""
        losses = self.losses[self.first_batch:upto]
        bad = (~torch.isfinite(losses) | (losses > EXPLODED_LOSS)).nonzero()
        return self.first_batch + int(bad[0]) if len(bad) else None


#: A loss per image past which a run has diverged though its numbers are still finite: a net that guesses scores
#: ln(classes) (2.3 for 10, 6.9 for 1,000), and a badly wrong confident one tens; AdamW at --lr 10 reached 3.5e17
#: per image, "finished" with 14% until this bound (a tester's fuzzing, 2026-12-06).
EXPLODED_LOSS = 1e4


@dataclass
class Trainer:
    cfg: TrainConfig
    data: Dataset
    info: dict  # data.info(), recorded in config.json and checkpoints
    model_args: dict
    device: torch.device
    ranks: Dist
    model: nn.Module  # owns the weights (what is saved)
    net: nn.Module  # what is called: the model, maybe wrapped in DDP, maybe compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    train_loader: BatchLoader
    eval_loader: BatchLoader
    eval_name: str  # "test", or "val" with a validation split
    augment: Augment | None  # .apply(x, seed=, epoch=, batch=, fill=) -> (x, how it was mixed)
    autocast: contextlib.AbstractContextManager
    run_dir: Path | None  # None: this process writes nothing
    log: Log
    #: The moving average of the weights (cfg.ema), which is what is evaluated, saved as ``state_dict`` and exported.
    ema: AveragedModel | None = None
    #: The net this run distils from (--teacher), or None.
    teacher: Teacher | None = None
    #: Keep the evaluation's predictions (the report reuses the last evaluation of the test set).
    keep_eval_outputs: bool = False
    state: TrainState = field(default_factory=TrainState)
    started: float = field(default_factory=time.perf_counter)
    #: Whether this process resumed the run from a checkpoint (``started`` is then this process's, not the run's).
    resumed: bool = False
    sums: RunningSums | None = None
    stop_reason: str | None = None
    #: The latest evaluation of the eval split and the step it was made at (reused when the weights did not move).
    last_eval: tuple[int, EvalResult] | None = None
    in_epoch: bool = False
    #: The weights now scored the best evaluation of the eval split so far inside an epoch (the check that reached
    #: --target-accuracy): the position's save as the run stops also writes them as best.pt (observers.CheckpointSaver).
    best_unsaved: bool = False
    #: The run folder as this process locked it: :meth:`check_folder` raises (one line) when it is no longer that one.
    folder_guard: FolderGuard | None = None
    #: A resumed run's step limits that a checkpoint and config.json may keep in place of this process's own, in
    #: order (the resume's --max-steps when given, then the run's): the first its position has not gone past is
    #: kept, none (0) when it went past them all. Empty: a new run's, this process's own (see :meth:`saved_config`).
    step_limits: tuple[int, ...] = ()
    #: What this process writes once its first checkpoint is saved (a resume's record of its part in config.json:
    #: the epochs it extends the run to, its processes and threads), then None: a resume killed before it saved
    #: anything leaves the run's record as it was (engine.restore).
    after_first_save: Callable[[], None] | None = None
    _epoch_t0: float = 0.0
    _epoch_base: float = 0.0

    # ------------------------------------------------------------------------- the loop's parts

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    @property
    def inside_epoch(self) -> bool:
        """Stopped or saving between an epoch's first and last batch (not at its end)."""
        return 0 < self.state.batch < self.steps_per_epoch

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated, saved for inference and reported: the weights' moving average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def check_folder(self) -> None:
        """Before a write into the run folder: stop (one line) when it was moved or deleted."""
        if self.folder_guard is not None:
            self.folder_guard.check()

    def saved_config(self) -> dict:
        """The settings a checkpoint and config.json record: what ran, so that ``--config RUN`` re-runs it. A resume
        keeps the run's --max-steps (a process's flag: the command that continues an interrupted run carries it)
        until the run trains past it: a run stopped at step 20, then resumed to its end without a limit, recorded
        ``max_steps`` 20, and its re-run stopped at step 20 instead of finishing."""
        values = self.cfg.to_dict()
        if self.step_limits:
            values["max_steps"] = next((n for n in self.step_limits if not n or n >= self.state.step), 0)
        return values

    def cut_note(self, n: int | None = None) -> str:
        """`` on the first 50 test images`` for figures of the eval split's evaluations that ``eval_limit`` cuts
        short of the whole split (or of ``n`` images, when fewer than the test set's): a figure says so where it
        is shown (the best epoch's 76% of 50 images stood beside the whole test set's 69% as its equal); "" else."""
        if n is not None:
            total, name = len(self.data.test_labels), "test"
        else:  # each rank evaluates the first eval_limit of its shard, every world_size-th image: the first of all
            n, total, name = self.cfg.eval_limit * self.ranks.world_size, len(self.eval_loader.labels), self.eval_name
        return f" on the first {n:,} {'validation' if name == 'val' else name} images" if 0 < n < total else ""

    def say(self, msg: str) -> None:
        if self.ranks.is_primary:
            self.log(msg)

    def start_epoch(self) -> None:
        s = self.state
        # the checkpoint holds the partial epoch's sums over all ranks: rank 0 carries them on
        start = s.partial if self.ranks.is_primary else EpochSums()
        self.sums = RunningSums(start, self.device, self.steps_per_epoch, s.batch)
        self._epoch_base, self._epoch_t0, self.in_epoch = s.elapsed, time.perf_counter(), True

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimiser step on a batch, and its loss and accuracy added to the running sums."""
        s, cfg = self.state, self.cfg
        mix = None
        if self.augment is not None and s.epoch < cfg.epochs - cfg.clean_epochs:
            r = self.ranks
            where = dict(seed=cfg.seed + r.rank, rank=0, world_size=1) if s.augment_by_rank else \
                dict(seed=cfg.seed, rank=r.rank, world_size=r.world_size)
            x, mix = self.augment.apply(x, **where, epoch=s.epoch, batch=s.batch, fill=self.train_loader.shift)
        with self.autocast:
            logits = self.net(x)
            if mix is None:
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            else:  # mixup / cutmix: each image's two labels, weighted as its pixels were
                loss = mix.loss(logits, y, cfg.label_smoothing)
            if self.teacher is not None:
                loss = self.teacher.loss(loss, logits, x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.sums.add(s.batch, loss, logits, y)
        s.batch += 1
        s.step += 1

    def end_epoch_timing(self) -> float:
        """The finished (or stopped) epoch's training seconds, resumed parts included."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # kernels run asynchronously: time what actually ran
        seconds = self.epoch_seconds()
        self.in_epoch = False
        if self.inside_epoch:  # stopped inside it: its seconds so far belong to the run's training time
            self.state.elapsed = seconds
        return seconds

    def epoch_seconds(self) -> float:
        return self._epoch_base + time.perf_counter() - self._epoch_t0

    def train_seconds(self) -> float:
        """Training seconds of the whole run so far (finished epochs, plus the current one while inside it)."""
        current = self.epoch_seconds() if self.in_epoch else (self.state.elapsed if self.inside_epoch else 0.0)
        return sum(r["seconds"] for r in self.state.history) + current

    def improve_best(self, accuracy: float) -> bool:
        """Whether ``accuracy`` (an evaluation of the eval split, as every epoch's: cut to ``eval_limit`` alike) beats
        the best so far; it is the best then. Every evaluation that counts for best.pt goes through here: each epoch's
        end and the check inside an epoch that reached --target-accuracy (the run's final weights), and nothing
        else (a --max-steps stop's evaluation does not count: a run resumed in parts decides best as one trained
        straight)."""
        s = self.state
        improved = s.best is None or accuracy > s.best
        s.best = accuracy if improved else s.best
        return improved

    def request_stop(self, reason: str) -> None:
        """Stop after this step, for ``reason``; the first reason stands, but a target reached at the very step of the
        step limit is the reason (the run met its target: it was listed as stopped by --max-steps, to resume)."""
        if self.stop_reason is None or (reason == "target" and self.stop_reason == "step limit"):
            self.stop_reason = reason

    # ------------------------------------------------------------------------- what observers call

    def evaluate(self, loader: BatchLoader | None = None, keep_outputs: bool | None = None,
                 limit: int | None = None) -> EvalResult:
        """Loss and accuracy of the eval split (or ``loader``), reduced over ranks; of its first ``limit`` images
        (``cfg.eval_limit`` unless given; 0: all)."""
        self.check_finite()
        keep = self.keep_eval_outputs if keep_outputs is None else keep_outputs
        limit = self.cfg.eval_limit if limit is None else limit
        split = loader or self.eval_loader
        if self.ranks.enabled and split.num_samples == 0:  # a split smaller than the group: this rank's shard is empty
            r = EvalResult(loss=0.0, accuracy=0.0, n=0)
        else:
            r = evaluate(self.eval_model, split, limit=limit, keep_outputs=keep)
        if self.ranks.enabled:
            loss_sum, correct, n = self.ranks.all_reduce_sum([r.loss * r.n, float(r.correct), float(r.n)], self.device)
            if n == 0:
                raise CnnlabError("evaluation saw no images: the split is empty")
            r = EvalResult(loss=loss_sum / n, accuracy=100.0 * correct / n, n=int(n), correct=int(correct))
        if loader is None:
            self.last_eval = (self.state.step, r)
        return r

    def latest_evaluation(self) -> EvalResult:
        """The eval split's evaluation now: reused when the last one was made at this very step."""
        if self.last_eval is not None and self.last_eval[0] == self.state.step:
            return self.last_eval[1]
        return self.evaluate()

    def reduced_sums(self) -> EpochSums:
        """This epoch's running sums over all ranks (a collective: every rank must call it)."""
        total = self.ranks.all_reduce_sum([float(self.sums.loss), float(self.sums.correct), float(self.sums.count)],
                                          self.device)
        return EpochSums(total[0], int(total[1]), int(total[2]))

    def check_finite(self) -> None:
        """Raise :class:`Diverged` (one line) when a loss of this epoch was NaN or infinite."""
        if self.sums is None:
            return
        bad = self.sums.exploded()
        if self.ranks.enabled:  # every rank must stop together, or the others would wait forever
            bad = self.ranks.all_reduce_sum([float(bad)], self.device)[0] > 0
        if bad:
            raise Diverged(self._divergence_message())

    def _divergence_message(self) -> str:
        s, cfg = self.state, self.cfg
        batch = self.sums.first_bad_batch(s.batch)
        where = (f"at step {s.step - s.batch + batch + 1} (epoch {s.epoch + 1}, batch {batch + 1})" if batch is not None
                 else f"by step {s.step} (epoch {s.epoch + 1})")
        saved = (f"{DIVERGED_KEPT}: {self.run_dir / 'last.pt'}"
                 if self.run_dir is not None and is_file(self.run_dir / "last.pt", if_unknown=True)
                 else "no checkpoint was saved")
        how = ("became NaN or infinite" if not math.isfinite(float(self.sums.loss)) else
               f"exploded ({self.sums.mean_loss():.3g} per image, where a net that guesses scores "
               f"{math.log(max(len(self.data.classes), 2)):.2g})")
        return (f"{DIVERGED}: the loss {how} {where}; the learning rate ({cfg.lr:g}) is the "
                f"likely cause: {self._lower_rate()}; {saved}")

    def _lower_rate(self) -> str:
        """The rate a diverged run's refusal advises (:func:`cnnlab.config.recipe_rate`): a recipe's for the run's
        optimizer, model and dataset where it is lower (the run's own recipe's, which it takes without --lr), else
        no figure. "lower --lr (e.g. 100000) or use a recipe (--recipe fast)" of --lr 1e6 diverged again, and the
        recipe it named was the run's own, whose rate the typed --lr had replaced."""
        cfg, found = self.cfg, recipe_rate(self.cfg)
        if found is None or found[1] >= cfg.lr:
            return "lower --lr"
        name, rate = found
        whose = (f"the {name} recipe's own, which the run takes without --lr" if name == cfg.recipe
                 else f"the {name} recipe's for {cfg.optimizer}")
        return f"lower --lr (e.g. {rate:g}, {whose})"

    def payload(self) -> dict:
        """What a checkpoint stores: enough to rebuild the model and continue the run bitwise."""
        self.state.world_size = self.ranks.world_size
        return {
            "model": {"name": self.cfg.model, "args": self.model_args},
            "config": self.saved_config(),
            "data": self.info,
            "state_dict": self.eval_model.state_dict(),  # what inference loads: the average, with EMA on
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "train_state": self.state.to_dict(),
            **({"train_weights": self.model.state_dict(), "ema_updates": int(self.ema.n_averaged)}
               if self.ema is not None else {}),
            **({"teacher": self.teacher.record()} if self.teacher is not None else {}),
        }

    def save(self, name: str) -> None:
        """Save the position as ``run_dir/name`` (every rank calls it: mid-epoch sums are a collective); the first
        save then writes what waited for it (:attr:`after_first_save`)."""
        self.check_finite()  # never write a checkpoint of diverged weights
        if self.inside_epoch:
            self.state.partial = self.reduced_sums()
            if self.in_epoch:  # its clock runs (a --save-every save); a stop's save keeps end_epoch_timing's figure,
                self.state.elapsed = self.epoch_seconds()  # not that plus the stop's evaluation made since
        if self.run_dir is not None:
            self.check_folder()
            save_checkpoint(self.run_dir / name, self.payload())
            if self.after_first_save is not None:
                self.after_first_save()
                self.after_first_save = None  # (a write that failed is made again with the next save)
