"""What watches a training run: the one mechanism through which metrics.csv, checkpoints, TensorBoard,
the progress bar, the target-accuracy stop, the step limit, signals and the divergence guard plug in.

An :class:`Observer` is called after every optimiser step and after every finished epoch, with the
:class:`~cnnlab.trainer.Trainer` (the model, the optimiser, the :class:`~cnnlab.checkpoint.TrainState`,
``evaluate()``, ``save()``, ``request_stop()``). Observers never change the numerics of training:
they read, evaluate in ``inference_mode`` and write. The engine's loop has no ``if`` for any of them.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from pathlib import Path

from tqdm import tqdm

from cnnlab import output
from cnnlab.errors import CnnlabError, SignalTaken
from cnnlab.evaluation import EvalResult
from cnnlab.runs import write_metrics
from cnnlab.trainer import Trainer


class Observer:
    """Override what you need; every hook may call ``trainer.request_stop(reason)``."""

    def after_step(self, t: Trainer) -> None:
        """After an optimiser step: ``t.state.step`` and ``t.state.batch`` count it already."""

    def after_epoch(self, t: Trainer, row: dict, result: EvalResult, improved: bool) -> None:
        """After an epoch's evaluation: ``row`` is its metrics row (already in ``t.state.history``)."""

    def on_stop_mid_epoch(self, t: Trainer) -> None:
        """The run stops inside an epoch (step limit, target, signal): the position is about to be lost."""

    def close(self) -> None:
        """The run is over (also after an error)."""


class StepLimit(Observer):
    """``--max-steps``: stop after this many optimiser steps in all (a resume may go on)."""

    def __init__(self, max_steps: int):
        self.max_steps = max_steps

    def after_step(self, t: Trainer) -> None:
        s = t.state
        last = s.epoch == t.cfg.epochs - 1 and s.batch == t.steps_per_epoch  # the run's own last step: it finishes
        if s.step >= self.max_steps and not last:
            t.request_stop("step limit")


class ProgressBar(Observer):
    """A tqdm bar per epoch on a terminal; the running train loss every 50 steps (one host read)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def after_step(self, t: Trainer) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = tqdm(total=t.steps_per_epoch, initial=t.state.batch - 1, unit="batch", leave=False,
                            desc=f"epoch {t.state.epoch + 1}/{t.cfg.epochs}", dynamic_ncols=True)
        self.bar.update(1)
        if t.state.step % 50 == 0:
            self.bar.set_postfix(loss=f"{t.sums.mean_loss():.4f}")
        if t.state.batch >= t.steps_per_epoch:
            self.close()

    def on_stop_mid_epoch(self, t: Trainer) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochLog(Observer):
    """The one line per epoch that every ``train`` prints."""

    def after_epoch(self, t: Trainer, row: dict, result: EvalResult, improved: bool) -> None:
        name = t.eval_name
        t.say(f"epoch {row['epoch']:>3}/{t.cfg.epochs}  train_loss {row['train_loss']:.4f}  "
              f"{name}_loss {result.loss:.4f}  {name}_acc {result.accuracy:.2f}%{t.cut_note()}  "
              f"{row['seconds']:6.1f}s  {row['images_per_s']:,.0f} img/s")


class TargetStop(Observer):
    """``--target-accuracy``: evaluate ``evals_per_epoch`` times per epoch and stop as soon as it is reached.

    A check inside an epoch first looks at a sample of the eval split (every k-th image, about
    ``SCREEN_SIZE``) and skips the full evaluation when the sample's accuracy is so far below the target
    that the whole split is most unlikely to be at it: by more than ``SCREEN_SIGMAS`` binomial standard
    deviations of such a sample, and at least ``SCREEN_MIN_MARGIN`` points. Only the full split decides
    that the target is reached, and a check changes nothing but when the run stops, so a wrongly skipped
    check can only make a run stop later, never earlier or with other weights. The end-of-epoch evaluation is always the full split. The record
    (epoch, step, accuracy, seconds) goes into the train state, so a resumed run keeps it. The check inside an epoch
    that reaches the target is an evaluation of the run's final weights on the split the best is chosen on (the
    validation split with --val-split, else the test set; cut to ``eval_limit`` as the epochs' are): it counts for the
    run's best, and best.pt is written from those weights when they beat it (:class:`CheckpointSaver`).
    """

    SCREEN_SIZE, SCREEN_SIGMAS, SCREEN_MIN_MARGIN = 2000, 5.0, 1.0

    def __init__(self, target: float, steps_per_epoch: int, evals_per_epoch: int):
        self.target = target
        k = min(evals_per_epoch, steps_per_epoch)  # more checks than steps are one per step (the same points)
        self.points = {max(1, round(steps_per_epoch * i / k)) for i in range(1, k)}
        self.screen = None

    def after_step(self, t: Trainer) -> None:
        s = t.state
        if s.batch in self.points and s.batch < t.steps_per_epoch:
            if self._far_below(t):
                return
            result = t.evaluate()
            if result.accuracy >= self.target:
                self._reached(t, s.epoch + s.batch / t.steps_per_epoch, result, t.train_seconds())
                # the run's final weights, evaluated on the eval split as every epoch is: they count for best.pt
                t.best_unsaved = t.improve_best(result.accuracy)

    def _far_below(self, t: Trainer) -> bool:
        """Whether a sample of the eval split puts the target out of reach at this check."""
        n = len(t.eval_loader.labels)
        if n < 4 * self.SCREEN_SIZE:  # a small split is checked whole
            return False
        if self.screen is None:
            self.screen = t.eval_loader.every(n // self.SCREEN_SIZE)
        p = min(self.target, 99.9) / 100
        margin = max(self.SCREEN_MIN_MARGIN,
                     100 * self.SCREEN_SIGMAS * math.sqrt(p * (1 - p) / len(self.screen.labels)))
        return t.evaluate(self.screen).accuracy < self.target - margin

    def after_epoch(self, t: Trainer, row: dict, result: EvalResult, improved: bool) -> None:
        if result.accuracy >= self.target and t.state.target is None:
            self._reached(t, float(t.state.epoch), result, t.train_seconds())

    def _reached(self, t: Trainer, epoch: float, result: EvalResult, train_seconds: float) -> None:
        t.state.target = {"epoch": epoch, "step": t.state.step, "accuracy": result.accuracy,
                          "train_seconds": train_seconds, "seconds_since_start": time.perf_counter() - t.started,
                          "reached_at_unix": time.time(), "split": t.eval_name,  # accuracy's split, the best's
                          **({"since_resumed": True} if t.resumed else {})}  # seconds_since_start: this process's
        t.request_stop("target")


class DivergenceGuard(Observer):
    """Stop with one line as soon as the loss is NaN, infinite or exploded (trainer.EXPLODED_LOSS), without a host
    sync per step.

    The running loss sum is read every ``every`` steps (and before every save and evaluation, by the
    trainer): a single non-finite loss makes the sum non-finite for good, and the per-step loss buffer
    then names the exact step.
    """

    def __init__(self, every: int = 100):
        self.every = every

    def after_step(self, t: Trainer) -> None:
        if t.state.step % self.every == 0:
            t.check_finite()


def require_tensorboard():
    """torch's ``SummaryWriter``; without the tensorboard package, one line (the engine asks before any folder is
    touched: it was asked when the run's observers were made, after its folder and status were written)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency, imported only when asked for
    except ImportError:
        raise CnnlabError("--tensorboard needs the tensorboard package: pip install 'cnnlab[tensorboard]', or "
                          "leave --tensorboard out") from None
    return SummaryWriter


class TensorboardLog(Observer):
    """``--tensorboard``: the epoch's scalars in ``RUN/tensorboard``, which hold the run's history as metrics.csv does:
    at this process's first epoch they are written whole from it into a new event file (the epochs of a run resumed
    from best.pt, or killed between an epoch's events and its last.pt, are the checkpoint's, not a second point at
    each step: the older files go once the new one is flushed), then appended epoch by epoch. ``resumed_at``: the
    step a resume continues from; its event file starts with TensorBoard's purge of the steps after it (a reader of
    the folder drops them from the older files should a kill come before those go)."""

    def __init__(self, run_dir: Path, resumed_at: int | None = None):
        folder = run_dir / "tensorboard"
        if folder.is_symlink():  # planted by whoever could write the folder: the events would go where it points
            raise CnnlabError(f"{folder} is a symbolic link, which cnnlab does not follow (it would write where it "
                              "points); remove it if the folder is yours, or train into another --out")
        if folder.exists() and not folder.is_dir():  # tensorboard's own FileExistsError traceback
            raise CnnlabError(f"{folder} is in the way of --tensorboard's folder (a file, not a folder); remove it, "
                              "or leave --tensorboard out")
        self.folder, self.resumed_at = folder, resumed_at
        self.summary_writer = require_tensorboard()
        self.writer = None

    def after_epoch(self, t: Trainer, row: dict, result: EvalResult, improved: bool) -> None:
        t.check_folder()
        if self.writer is None:
            self._rewrite(t.state.history)  # this row is the history's last
        else:
            self._add(row)
        self.writer.flush()

    def _rewrite(self, history: list[dict]) -> None:
        """A new event file holding ``history``; the event files there before it removed once it is flushed."""
        try:
            older = [p for p in self.folder.iterdir() if p.name.startswith(EVENT_FILES) and p.is_file()]
        except OSError:  # none yet (a new run), or unreadable: the writer says what is wrong
            older = []
        purge = None if self.resumed_at is None else self.resumed_at + 1  # a purge drops the steps at and past it
        self.writer = self.summary_writer(str(self.folder), purge_step=purge)
        for row in history:
            self._add(row)
        self.writer.flush()
        for path in older:
            with contextlib.suppress(OSError):  # one that stays (a read-only file) is purged past the resume's step
                path.unlink(missing_ok=True)

    def _add(self, row: dict) -> None:
        for key, value in row.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


#: How the event files TensorBoard's writer makes are named (``events.out.tfevents.TIME.HOST.PID.N``).
EVENT_FILES = "events.out.tfevents."


class MetricsCsv(Observer):
    """``metrics.csv``, rewritten whole after every epoch."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.csv"

    def after_epoch(self, t: Trainer, row: dict, result: EvalResult, improved: bool) -> None:
        t.check_folder()
        write_metrics(self.path, t.state.history)


class CheckpointSaver(Observer):
    """``last.pt`` after every epoch, every ``save_every`` steps and when stopping mid-epoch; ``best.pt``
    when an epoch's evaluation improves, or when the run stops inside an epoch on weights that beat it (the check
    that reached --target-accuracy: ``Trainer.best_unsaved``), last.pt first as at an epoch's end. Every rank takes
    part (the partial-epoch sums are a collective); only a writing trainer writes."""

    def __init__(self, save_every: int):
        self.save_every = save_every

    def after_step(self, t: Trainer) -> None:
        if self.save_every and t.state.step % self.save_every == 0 and t.state.batch < t.steps_per_epoch:
            t.save("last.pt")

    def after_epoch(self, t: Trainer, row: dict, result: EvalResult, improved: bool) -> None:
        t.save("last.pt")
        if improved:
            t.save("best.pt")

    def on_stop_mid_epoch(self, t: Trainer) -> None:
        t.save("last.pt")
        if t.best_unsaved:
            t.save("best.pt")
            t.best_unsaved = False


class StopNow(SignalTaken):
    """A second signal: the run stops at once (``signum``), where it is; the engine says how it goes on."""


class SignalStop(Observer):
    """SIGINT (Ctrl-C), SIGTERM and SIGHUP (its terminal closed) finish the current step, then the run saves
    its position and stops. One that comes after the run's training is over (its last step, a step limit or
    target: ``training_over``) lets the run write its result, and the engine stops after it
    (:func:`cnnlab.engine.train` raises ``Interrupted``: the signal is never lost).

    A second signal stops at once (:class:`StopNow`); under ``nohup`` (SIGHUP ignored) SIGHUP stays ignored. SIGPIPE
    (stdout was a pipe whose reader went away: ``cnnlab train | head``) stops the same way, but never at once, and
    not a run already stopping: its output is gone, its work need not be (``cnnlab.output``). Installed only in the
    main thread.

    Under torchrun (``group``) only SIGINT is taken: the agent passes a Ctrl-C on to every worker and kills them
    30 s later; SIGTERM, which it sends to restart the group when a worker died, stays deadly (a collective with a
    dead peer could wait). The ranks agree to stop at the same step boundary, with one small collective every
    ``GROUP_CHECK_STEPS`` steps and at each epoch's end, so that the position's save (itself a collective) is
    the same on all of them.
    """

    GROUP_CHECK_STEPS = 10

    def __init__(self, silent: bool = False, group: bool = False):
        self.silent = silent  # no note on stderr when a signal is taken (the Interrupted error still says it)
        self.group = group
        self.signum: int | None = None
        self.training_over = False  # set after the run's last step: a signal then no longer stops training
        self._saved: dict[int, object] = {}
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            for name in ("SIGINT",) if group else ("SIGINT", "SIGTERM", "SIGHUP", "SIGPIPE"):
                sig = getattr(signal, name, None)
                # nohup's ignored SIGHUP stays ignored (SIGINT and SIGTERM are taken even when a shell
                # started the run in the background with SIGINT ignored: 'kill -INT' stops it cleanly)
                if sig is not None and (name != "SIGHUP" or signal.getsignal(sig) is not signal.SIG_IGN):
                    self._saved[sig] = signal.signal(sig, self._handle)
            if not group and output.stdout_reader_gone() and hasattr(signal, "SIGPIPE"):  # gone before the run began
                self._handle(signal.SIGPIPE, None)

    def _handle(self, signum, frame) -> None:
        pipe = signum == getattr(signal, "SIGPIPE", None)
        if pipe and self.signum is not None:
            return
        if self.signum is not None:  # the second signal: give up at once
            self.close()
            raise StopNow(signum)
        self.signum = signum
        what = "the output was closed (SIGPIPE)" if pipe else signal.Signals(signum).name
        doing = ("the run's training has ended; writing its result, then stopping" if self.training_over
                 else "stopping after this step and saving the position")
        if not self.silent:
            output.complain(f"\n{what}: {doing}{'' if pipe else ' (send it again to stop at once)'}")

    def after_step(self, t: Trainer) -> None:
        s = t.state
        last = s.epoch == t.cfg.epochs - 1 and s.batch == t.steps_per_epoch
        if (t.stop_reason and t.stop_reason != "signal") or last:
            self.training_over = True  # its last step (or a step limit's, a target's), a signal taken during it or
            # not: what is left is its result, written before the engine stops for the signal
        if self.group:
            if t.state.step % self.GROUP_CHECK_STEPS == 0:
                self._agree(t)
        elif self.signum is not None and not self.training_over:
            t.request_stop("signal")

    def after_epoch(self, t: Trainer, row: dict, result: EvalResult, improved: bool) -> None:
        if self.group:
            self._agree(t)

    def _agree(self, t: Trainer) -> None:
        """Every rank stops here when any of them took a signal (a collective: every rank calls it). After the run's
        last step (the same step on every rank) the signal is kept, not a stop: the run writes its result first."""
        taken = int(t.ranks.all_reduce_max(float(self.signum or 0), t.device))
        if taken:
            self.signum = self.signum or taken
            if not self.training_over:
                t.request_stop("signal")

    def close(self) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()
