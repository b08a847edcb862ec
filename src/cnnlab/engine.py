"""The engine: the only place that knows about devices, precision and ranks.

``train(cfg)`` reads as the story of a run: resolve the run folder, build the trainer, restore a
checkpoint, run epochs (:func:`train_one_epoch`), report. What watches the epochs (metrics.csv,
checkpoints, TensorBoard, the target-accuracy stop, signals, the divergence guard) plugs in as
:mod:`cnnlab.observers`. Losses and accuracies are summed on the device and read once per epoch.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import math
import os
import shutil
import signal
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cnnlab import observers as obs
from cnnlab.augment import parse_augment
from cnnlab.checkpoint import (EpochSums, TrainState, check_checkpoint_file, copy_checkpoint, load_checkpoint, same_run_as,
                               sidecar)
from cnnlab.config import (FLAGS, Naming, TrainConfig, flag, flag_with_value, other_run, rank_settings, recipe_values,
                           recorded_threads, relocated, resumed_config, valid_threads)
from cnnlab.data import BatchLoader, Dataset, check_data_dir, load_dataset, split_validation, validate_dataset
from cnnlab.data.catalog import flip_warning
from cnnlab.data.dataset import FINGERPRINT, describe_fingerprint_changes, fingerprint_changes, same_data
from cnnlab.data.folder import check_not_read
from cnnlab.data.loader import batch_beyond
from cnnlab.devices import callers_autocast_off, resolve_device, set_threads, training_autocast, usable_cpus
from cnnlab.distill import TEACHER_FILE, check_same_teacher, check_teacher, load_teacher
from cnnlab.distributed import Dist, PeerLost
from cnnlab.errors import (CnnlabError, DIVERGED, DataUnreadable, Interrupted, RunBusy, RunError, SignalTaken,
                           WriteError, printable, shell_quoted)
from cnnlab.dataset_names import moved_away
from cnnlab.evaluation import EvalResult, report_run
from cnnlab.fileio import (FolderGuard, NO_INODES, atomic_write_json, exists, guarded, is_dir, is_file, lexists,
                           no_free_inodes, protection_of, read_json)
from cnnlab.hostmem import keep_freed_memory
from cnnlab.models import build_model, check_model_name, count_parameters, float32_default, seeded
from cnnlab.optim import eager
from cnnlab.output import complain, say, stderr_is_terminal
from cnnlab.runs import (LOCK_FILE, RUNNING, RUN_FILES, RunLock, RunPlan, STATUS_FILE, TARGET_REACHED, braces_kept,
                         check_new_run_folder, check_resumed_folder, checkpoints_gone, failure_cause, is_run_dir,
                         last_gone, metrics_behind, plan_run, read_run_json, remove_if_unused, run_dir_of,
                         unsaved_run_dir, write_metrics, write_status)
from cnnlab.schedules import schedule_named
from cnnlab.text import plural
from cnnlab.trainer import Trainer

#: torch's OneCycleLR cycles an SGD momentum from this down to 0.85 and back, whatever the optimiser was given.
ONECYCLE_MAX_MOMENTUM = 0.95
#: A moving average still holding more than this share of the first step's weights at the run's end is warned of.
EMA_KEPT_WARNING = 0.01

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- building blocks


def parameter_groups(model: nn.Module, cfg: TrainConfig):
    """All parameters in one group (weight decay on everything, PyTorch's way and every earlier run's), or,
    with ``bias_decay`` off and a weight decay, the biases (1-D parameters) in a group without decay."""
    if cfg.weight_decay == 0 or cfg.bias_decay:
        return model.parameters()
    params = list(model.parameters())
    return [{"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """torch's optimiser; without --compile its subclass from :func:`cnnlab.optim.eager` (the same updates,
    without importing torch.compile's machinery: about 3 s of every run's start on a 2-core CPU)."""
    kinds = {"sgd": torch.optim.SGD, "nesterov": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if cfg.optimizer not in kinds:
        raise CnnlabError(f"unknown optimizer {cfg.optimizer!r}")
    kind = kinds[cfg.optimizer] if cfg.compile else eager(kinds[cfg.optimizer])
    extra = {"momentum": cfg.momentum} if cfg.optimizer == "sgd" else {}
    if cfg.optimizer == "nesterov":  # one-cycle sets the momentum itself (0.95 down to 0.85 and back)
        extra = {"momentum": cfg.momentum or ONECYCLE_MAX_MOMENTUM, "nesterov": True}
    return kind(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True, **extra)


def build_scheduler(cfg: TrainConfig, optimizer, steps_per_epoch: int):
    """The run's scheduler, from its schedule's entry in :data:`cnnlab.schedules.SCHEDULES`: None (a constant rate),
    torch's one-cycle, or the schedule's factor of the peak rate after its linear warm-up (``--warmup-epochs``, for
    a schedule that takes one); stepped every step. A name the table does not hold is one line, never a constant
    rate."""
    schedule = schedule_named(cfg.schedule)
    total = cfg.epochs * steps_per_epoch
    if schedule.one_cycle:
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
    if schedule.factor is None:
        return None
    warm = round(cfg.warmup_epochs * steps_per_epoch) if schedule.warmup else 0
    decay = schedule.factor

    def factor(step: int) -> float:  # of the peak rate, for the step about to be taken (0-based)
        if step < warm:
            return (step + 1) / warm
        return decay(step, warm, total)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def rerun_warnings(data: Dataset, world_size: int, where: str, recorded: dict | None, ran_in: int,
                   threads_then: list[int] | None = None, threads_now: int | None = None) -> list[str]:
    """A re-run's warnings (``--config RUN``): its data changed since (:func:`rerun_warning`), or it runs in
    another number of processes, or (on the CPU) of threads, than that run did (whose figures it then does not
    repeat to the last digit: oneDNN sums in another order)."""
    warnings = [rerun_warning(data, where, recorded)] if recorded is not None else []
    if ran_in != world_size:
        how = f"torchrun --nproc_per_node={ran_in} -m cnnlab train" if ran_in > 1 else "cnnlab train"
        warnings.append(f"warning: {where}: that run trained in {ran_in} process{'es' if ran_in > 1 else ''} and "
                        f"this one in {world_size}, so its figures may differ from that run's (the gradients are "
                        f"summed in another order); to repeat it as it ran: {how} {where}")
    if threads_then and threads_now is not None and threads_then != [threads_now]:
        how = (f"to repeat it as it ran: cnnlab train {where} --threads {threads_then[0]}"
               if len(threads_then) == 1 and threads_then[0] else "no one run repeats it to the last digit")
        warnings.append(threads_warning(where, threads_then, "this one", threads_now,
                                        "its figures may differ from that run's in their last digits", how))
    return [w for w in warnings if w]


def threads_warning(where: str, threads_then: list[int | None], this: str, threads_now: int, so: str, how: str) -> str:
    """``warning: WHERE: that run trained at 1 then 2 CPU threads and THIS at 4, so ...; HOW``: a re-run's
    (:func:`rerun_warnings`) or a resume's (:class:`ResumedThreads`) other count than the run's."""
    shown = [str(n) if n else "an unrecorded number of" for n in threads_then]  # a part an older cnnlab trained
    if len(shown) > 4:
        shown = [*shown[:2], f"... ({len(shown)} parts) ...", shown[-1]]
    then = " then ".join(shown)  # a run resumed at another count trained in parts
    return f"warning: {where}: that run trained at {then} CPU threads and {this} at {threads_now}, so {so}; {how}"


@dataclass(frozen=True)
class ResumedThreads:
    """The CPU threads a resume trains at: the run's own ``setting`` (where that is torch's default, 0, the count its
    last part trained at, ``then[-1]`` from config.json's ``cpu_threads``, so that on a machine whose default differs
    it goes on as it would have: the thread count alone moves a run's last digits), or the one ``given`` (warned of
    where it is not the count the run trained at last). ``where``: the run, as the user resumed it. ``processes``:
    how many processes its last part trained in and this resume trains in (torchrun's ranks): where they differ the
    resume cannot end as the run would have, and each process takes torch's default (torchrun's share of the CPUs)."""

    where: str
    setting: int
    then: list[int | None] | None
    given: bool
    naming: Naming = FLAGS
    processes: tuple[int, int] = (1, 1)

    @classmethod
    def of(cls, plan: RunPlan, setting: int, given: bool, naming: Naming = FLAGS, ranks: int = 1,
           ran_in: int | None = None) -> ResumedThreads:
        """A resume's, from its run's config.json (read by every rank of a torchrun group: all set the same count);
        ``ranks``: the processes this resume trains in; ``ran_in``: those that trained the checkpoint it resumes
        (its ``TrainState.world_size``; None: the count config.json records)."""
        record = read_run_json(run_dir_of(plan.resume_from) / "config.json") or {}
        ran_in = ran_in or _processes_recorded(record) or 1
        return cls(naming.resumed(plan.run_dir or plan.resume_from), setting, recorded_threads(record), given, naming,
                   (ran_in, ranks))

    @property
    def last(self) -> int | None:
        return self.then[-1] if self.then else None

    def count(self) -> int:
        """What torch is set to (0: its default): the recorded count only where the resume trains in as many
        processes as the run did and they may use that many CPUs each (more were many times slower: a one-process
        run's 2 threads in each of 2 ranks on 2 CPUs, 10-40x)."""
        then, now = self.processes
        if self.given or self.setting or self.last is None or then != now:
            return self.setting
        return self.setting if self.last * now > (usable_cpus() or self.last * now) else self.last

    def lines(self, now: int) -> list[str]:
        """What a resume on the CPU (``now``: the count it trains at) warns of its threads."""
        if (moved := self._processes_line(now)) is not None:
            return moved
        if self.last is None or now == self.last:
            return []
        if self.given:
            return [threads_warning(self.where, self.then, "this resume", now, "it will not end as it would have "
                                    "uninterrupted: its figures may differ in their last digits",
                                    f"to go on at the run's own count, drop {self.naming.setting('threads', self.setting)}")]
        if self.setting:
            return []
        return [f"warning: {self.where}: the run trained at torch's default there, {self.last} CPU threads, more than "
                f"{'these processes' if self.processes[1] > 1 else 'this process'} can use: it goes on at torch's "
                f"default here, {now}, so its figures may differ in their last digits from the run's uninterrupted "
                f"({self.naming.setting('threads', self.last)} repeats them, many times slower)"]

    def _processes_line(self, now: int) -> list[str] | None:
        """A resume in another number of processes than the run's last part: said once (it cannot end as the run
        would have, whatever its threads), with the threads each process trains at; None where they are the same."""
        then, here = self.processes
        if then == here:
            return None
        return [f"warning: {self.where}: the run trained in {then} process{'es' if then > 1 else ''} and this resume in "
                f"{here}, so it will not end as it would have uninterrupted (the gradients are summed in another "
                f"order); each process trains at {now} CPU thread{'s' if now > 1 else ''}"]

    def note(self, default: int) -> str | None:
        """A run at torch's default going on at the count it trained at, not this machine's default: said once."""
        if self.given or self.setting or self.count() in (0, default):
            return None
        return (f"note: {self.where}: the run trained at torch's default there, {self.last} CPU threads, and goes on at "
                f"{self.last} so that it ends as it would have uninterrupted (torch's default here is {default}: "
                f"{self.naming.setting('threads', default)} to use them, its figures then differ in their last digits)")


def threads_ran(t: Trainer) -> list[int] | None:
    """The CPU threads each part of a run trained at (a resume at another count adds one), for config.json; None
    off the CPU, where they do not change the result."""
    if t.device.type != "cpu":
        return None
    before: list = []
    if t.resumed:  # an older cnnlab recorded none: its part trained at a count unknown (null), not at this one's
        recorded = (read_run_json(t.run_dir / "config.json") or {}).get("cpu_threads")
        before = [n if valid_threads(n) else None for n in recorded] if isinstance(recorded, list) else [None]
    now = torch.get_num_threads()
    return before if before and before[-1] == now else [*before, now]



def eval_batches_ran(t: Trainer) -> list[int | None] | None:
    """The evaluation batch size of each part of a run (a resume's ``--eval-batch-size`` moves its evaluations' last
    digits, not its weights), for config.json, once a resume changed it: its "config" says only the last part's;
    None while every evaluation ran at the run's one."""
    if not t.resumed or t.run_dir is None:
        return None
    record = read_run_json(t.run_dir / "config.json") or {}  # the parts before this one, as they recorded them
    parts, then = record.get("eval_batch_sizes"), record.get("config")
    if not (isinstance(parts, list) and parts and len(parts) <= 10_000):
        parts = [then.get("eval_batch_size") if isinstance(then, dict) else None]
    parts = [n if type(n) is int and n >= 1 else None for n in parts]  # None: a part whose batch is not known
    now = t.cfg.eval_batch_size
    parts = parts if parts[-1] == now else [*parts, now]
    return parts if len(parts) > 1 else None


def rerun_warning(data: Dataset, where: str, recorded: dict) -> str | None:
    """A re-run (``--config RUN``) on an ``idx:``/``folder:`` dataset that changed since that run: what differs, from
    what it recorded. A warning, not a refusal: the user may mean to re-run on the new data."""
    changed = data.changed_since(recorded)
    if not changed:
        return None
    sizes = "" if not {"train_size", "test_size"} & set(changed) else (
        f": {recorded.get('train_size')} train / {recorded.get('test_size')} test images then, "
        f"{len(data.train_labels)} / {len(data.test_labels)} now")
    return (f"warning: {where}: {data.name} is not the data that run trained on "
            f"({data.describe_changes(recorded)}{sizes}); this run trains on the data as it is now")


def ema_warning(decay: float, steps: int) -> str | None:
    """A warning when the moving average cannot forget the run's first weights: torch's EMA has no warm-up, so
    after ``steps`` updates it still holds ``decay ** (steps - 1)`` of the weights of the first step (--ema
    0.9999 over a 15-epoch MNIST run: half), and the weights evaluated and saved are near the untrained ones."""
    if not decay or steps < 2:
        return None
    kept = decay ** (steps - 1)
    if kept <= EMA_KEPT_WARNING:
        return None
    fitting = EMA_KEPT_WARNING ** (1 / (steps - 1))
    return (f"warning: --ema {decay:g} averages over about {1 / (1 - decay):,.0f} steps and this run has {steps:,}: at "
            f"its end {kept:.0%} of the average is still the first step's weights, and the average is what is "
            f"evaluated and saved; use a decay of at most {math.floor(fitting * 10000) / 10000:g}, or more epochs")


def build_ema(cfg: TrainConfig, model: nn.Module) -> AveragedModel | None:
    """An exponential moving average of the weights (and buffers), updated after every optimiser step."""
    if not cfg.ema:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)


@dataclass
class TrainResult:
    """What a training run gives back (:func:`train`, ``cnnlab.train``): its folder (``run_dir``; None where nothing
    is written: ``write=False``, a torchrun rank other than 0), the epochs' ``history`` (metrics.csv's rows), the
    ``final`` evaluation of its final weights on the whole test set (its result, as summary.json's ``accuracy``),
    ``best_accuracy`` (the evaluation best.pt holds the weights of, on the split ``best_split`` names), the net's
    ``parameters``, ``train_seconds``, the trained ``model`` (the weights' moving average where the run kept one),
    ``target`` (where ``target_accuracy`` was reached), the ``summary`` (summary.json's content) and why it
    ``stopped``."""

    run_dir: Path | None
    history: list[dict]
    final: EvalResult  # on the test set
    #: Best evaluation of the eval split, the one best.pt holds the weights of: each epoch's end, and the check inside
    #: an epoch that reached --target-accuracy (the final weights); on the split ``best_split`` names (with
    #: ``eval_limit``, of its first images, as the epochs' evaluations were); None when none was made.
    best_accuracy: float | None
    parameters: int
    train_seconds: float
    model: nn.Module = field(repr=False)
    #: Set when --target-accuracy was reached: epoch (fractional), step, seconds.
    target: dict | None = None
    summary: dict | None = None
    #: Why the run ended: "finished", "step limit", "target", or "nothing to train" (a finished run resumed).
    stopped: str = "finished"
    #: The split ``best_accuracy`` was measured on: "val" (a run with a validation split chose its best on it; the
    #: test accuracy of those weights is not this figure) or "test"; None when ``best_accuracy`` is None.
    best_split: str | None = None
    #: The settings the run trained with (its config.json's): ``config.model``, ``config.dataset``...
    config: TrainConfig | None = None

    def __repr__(self) -> str:
        """One line: the run, its net and data, and its result (the summary, the history and the net are its
        attributes: they grow with the classes and the epochs)."""
        model, dataset = (self.config.model, self.config.dataset) if self.config is not None else (None, None)
        return (f"TrainResult(run_dir={None if self.run_dir is None else str(self.run_dir)!r}, model={model!r}, "
                f"dataset={dataset!r}, stopped={self.stopped!r}, accuracy={self.final.accuracy!r}, "
                f"best_accuracy={self.best_accuracy!r}, best_split={self.best_split!r})")


# ----------------------------------------------------------------------------- the story of a run


def _signal_before_training_explained(fn):
    """A SIGTERM or SIGHUP taken before the training loop took signals (the CLI takes them as early as SIGINT:
    :func:`cnnlab.cli.common.take_sigint`, whose :class:`~cnnlab.errors.SignalTaken` unwound the
    start as Ctrl-C does, the fresh folder removed): one line and the signal's exit code (128 + its number)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SignalTaken as stop:
            if isinstance(stop, obs.StopNow):
                raise
            raise Interrupted(f"{signal.Signals(stop.signum).name} before training began: stopped, nothing trained; "
                              "run the same command again to train", 128 + stop.signum) from None
    return wrapper


@_signal_before_training_explained
def train(
    cfg: TrainConfig,
    *,
    out: str | Path | None = None,
    runs_root: str | Path = "runs",
    resume: str | Path | None = None,
    changes: dict | None = None,
    write: bool = True,
    quiet: bool = False,
    log: Log = say,
    dataset: Dataset | None = None,
    report: bool = True,
    verbose: bool = False,
    silent: bool = False,
    naming: Naming = FLAGS,
    rerun_of: tuple[str, dict | None, int, list[int] | None] | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.dataset``; write the run folder unless ``write`` is False.

    ``resume`` continues a run from its last.pt with the run's own settings; ``changes`` are the values
    the user gave explicitly (refused if they would change the run, see :func:`cnnlab.config.resumed_config`).
    ``quiet`` turns the progress bar off, ``log`` receives every line (a no-op silences them), ``verbose``
    adds the per-class table of the test set; ``silent`` also keeps the note on stderr that a signal was taken
    (the API's quiet: nothing printed at all); ``naming``: how a refused resume names the settings given (the
    command line's flags, or the API's arguments); ``rerun_of``: (where, recorded data, processes) of a run re-run from
    its settings, whose changed data and other number of processes are warned of (:func:`rerun_warnings`). Under
    torchrun every rank runs this; only rank 0 logs and writes; a restart resumes by itself. The caller's torch
    settings are its own again when this returns or raises (:func:`callers_torch_kept`).
    """
    ranks = Dist.from_env()
    _before_any_folder(cfg, ranks, out, runs_root, resume, changes, write, dataset, rerun_of)
    plan = plan_run(cfg.model, cfg.dataset, out=out, resume=resume, runs_root=runs_root, write=write and ranks.is_primary,
                    distributed=ranks.enabled, restart_count=ranks.restart_count)
    _refuse_no_checkpoint(plan)  # before the folder's lock is taken
    with contextlib.ExitStack() as stack:
        stack.enter_context(callers_torch_kept())
        guard = None if plan.run_dir is None else FolderGuard(plan.run_dir, _run_folder_gone(plan.run_dir))
        if guard is not None:
            _lock_run_folder(stack, plan, guard, ranks.restart_count > 0)
            # a resume refused before it restored anything leaves the run as it was (a finished run stays finished)
            stack.push(recorder := FailureRecord(plan, armed=False, guard=guard, max_steps=cfg.max_steps))
            stack.enter_context(_peer_lost_explained(recorder))
            stack.enter_context(_full_disk_explained(recorder))
            if plan.resume_from is None:
                recorder.arm()  # a new run: its status is this process's from the start (a kill reads as one)
        stack.enter_context(_stopped_at_once(plan, ranks, recorder if guard is not None else None))
        stack.enter_context(ranks.errors_explained())  # a dead peer: one line, not gloo's traceback
        ckpt, resumed, start = _resumed_checkpoint(plan), None, None
        if ckpt is not None:
            record = _folders_config(plan)  # read once for both
            _check_own_checkpoint(plan, ckpt, record)
            saved = _saved_config(plan, ckpt, record)
            cfg = resumed_config(saved, cfg, changes, naming)
            state = TrainState.from_checkpoint(ckpt)  # (its processes: the part that saved it, whatever config.json says)
            resumed = ResumedThreads.of(plan, cfg.threads, "threads" in (changes or {}), naming, ranks.world_size,
                                        state.world_size)
            start = {"where": resumed.where, "epoch": state.epoch, "batch": state.batch, "step": state.step}
            _check_resumed_epochs(cfg, saved, state, plan.run_dir or plan.resume_from, naming)
            if cfg.tensorboard and plan.run_dir is not None:
                obs.require_tensorboard()  # the run's own --tensorboard: refused before its status can change
            if dataset is None:  # a Dataset passed in is the data, wherever it came from
                where = plan.run_dir or plan.resume_from
                _check_data_there(cfg, f"--resume {where}", f"--resume {shell_quoted(str(where))}")
        with guarded(guard):  # (its teacher's copy: its first write)
            t = build_trainer(cfg.validate(), ranks, plan, dataset, log, report, rerun_of, resumed, start)
        t.folder_guard = guard
        if guard is not None:
            recorder.max_steps = cfg.max_steps
        if ckpt is not None:
            _resume(t, ckpt, plan, changes, saved, recorder if guard is not None else None)
        else:
            introduce(t)
        observers = make_observers(t, quiet, silent)
        stack.callback(lambda: [o.close() for o in observers])
        result = finish(t, fit(t, observers), report, verbose, silent)
        _record_outcome(t, result)
    return _stop_if_signalled(observers, result)  # a signal after the last step: its result is written, then it stops



def _before_any_folder(cfg: TrainConfig, ranks: Dist, out, runs_root, resume, changes: dict | None, write: bool,
                       dataset: Dataset | None, rerun_of) -> None:
    """:func:`train`'s refusals made before any folder is made or touched (a resume's: the run's own, later), and a
    new run's folder that an earlier start left unsaved, made ready to start over."""
    if resume is None:
        check_model_name(cfg.validate().model)
    if resume is None and dataset is None and rerun_of is not None and rerun_of[1] is not None:
        _check_data_there(cfg, rerun_of[0], rerun_of[0])  # the run's own data (as its record names it), gone
    if write and (cfg.tensorboard if resume is None else (changes or {}).get("tensorboard")):
        obs.require_tensorboard()
    if resume is None and write and ranks.is_primary:
        _refuse_folder_read_as_data(cfg.dataset, out, runs_root)
    if resume is None and write and ranks.is_primary and ranks.restart_count == 0:
        start_over_unsaved(out)


def _refuse_folder_read_as_data(dataset: str, out, runs_root) -> None:
    """A new run's folder where its ``folder:`` dataset would read it (``cd DATA; cnnlab train --dataset folder:.``:
    runs/ made there, then refused as an empty class folder, every time): one line before any folder is made
    (:func:`cnnlab.data.folder.check_not_read`)."""
    if out is None:
        check_not_read(dataset, runs_root, f"{runs_root}/ (where a run goes without --out)")
    else:
        check_not_read(dataset, out, f"--out {out}")


def _resume(t: Trainer, ckpt: dict, plan: RunPlan, changes: dict | None, saved: TrainConfig,
            recorder: FailureRecord | None) -> None:
    """A resume from ``ckpt``, checked, then restored into ``t``. One that trains makes the run's status this
    process's first (``recorder``: the run folder's); one that only re-evaluates (nothing to train) leaves it as
    it was, as an evaluation does (a full disk as it wrote the report made a finished run "failed")."""
    # --max-steps is a process's limit; config.json and the checkpoints keep the one given, else the run's own,
    # while the run has not trained past it (Trainer.saved_config)
    t.step_limits = (*([changes["max_steps"]] if "max_steps" in (changes or {}) else []), saved.max_steps)
    check_resumable(t, ckpt, plan)
    if recorder is not None and not nothing_to_train(TrainState.from_checkpoint(ckpt), t.cfg):
        recorder.arm()
    restore(t, ckpt, plan)


def _stop_if_signalled(observers: list[obs.Observer], result: TrainResult) -> TrainResult:
    """``result``, unless a signal was taken after the run's last step (its final evaluation, report, figures): it let
    the run write its result, and is not lost: the run stops now, as finished, with the signal's exit code (128 + its
    number)."""
    signum = next((o.signum for o in observers if isinstance(o, obs.SignalStop)), None)
    if signum is None:
        return result
    pipe = signum == getattr(signal, "SIGPIPE", None)
    what = "the output was closed (SIGPIPE)" if pipe else signal.Signals(signum).name
    where = f" in {result.run_dir}" if result.run_dir is not None else ""
    raise Interrupted(f"{what} after the run's last step: its training has ended and its result is written{where}; "
                      "stopped there", 128 + signum)


@contextlib.contextmanager
def _stopped_at_once(plan: RunPlan, ranks: Dist, recorder: FailureRecord | None):
    """A second signal (:class:`cnnlab.observers.StopNow`) stops the run where it is: one line, the exit code of the
    signal, and how the run goes on (its resume, or that nothing was saved), which status.json says too (SIGTERM and
    SIGHUP made it "failed (143)", without a word)."""
    try:
        yield
    except obs.StopNow as stop:
        if plan.run_dir is not None:
            how = resume_hint(plan.run_dir, recorder.max_steps if recorder is not None else 0) or START_AGAIN
        else:
            how = "rank 0 saves the position" if ranks.enabled else "nothing was saved (the run writes no folder)"
        raise Interrupted(f"stopped at once by a second {signal.Signals(stop.signum).name}; {how}",
                          128 + stop.signum) from None


@contextlib.contextmanager
def callers_torch_kept():
    """What a run sets in torch for its own work, and gives back to the caller when it returns or raises: autograd
    on (a caller's ``torch.no_grad()``, ``set_grad_enabled(False)`` or ``inference_mode()`` made the first backward
    torch's "element 0 of tensors does not require grad" and a failed run), float32 as the default dtype (a
    caller's ``set_default_dtype(torch.float64)`` made float64 batches and draws: the run must compute what it
    computes under torch's default), the caller's ``torch.autocast`` off (:func:`cnnlab.devices.callers_autocast_off`:
    the run's precision is its config's, which config.json records), and, put back after, the intra-op thread count
    (``threads``). torch's global RNG needs nothing here: a run draws from it only inside ``models.seeded``, which
    puts it back (restoring it here rewound the draws other threads had made during the run)."""
    threads = torch.get_num_threads()
    try:
        with torch.inference_mode(False), torch.enable_grad(), float32_default(), callers_autocast_off():
            yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _lock_run_folder(stack: contextlib.ExitStack, plan: RunPlan, guard: FolderGuard, restarted: bool) -> None:
    """Take the run folder's lock in ``stack``, the folder ``guard``-ed from then on; a fresh folder left unused is
    removed on an error (:func:`_forget_if_empty`). A new run's folder is checked again once it is this process's
    (:func:`cnnlab.runs.check_new_run_folder`): ``plan_run`` looked before the lock, and a run that another process
    trained and finished there in between was trained over (both said "run saved in o", the first run's files
    gone). A torchrun restart (``restarted``) starts its launch's folder again, as ``plan_run`` lets it."""
    stack.push(_forget_if_empty(plan, guard))  # last out: after the lock is released (also when it cannot be taken)
    guard.take(stack.enter_context(_run_lock(plan)))
    if plan.resume_from is None and not restarted:
        check_new_run_folder(plan.run_dir, files=False)  # before the run's status is written: a refused start changes nothing


def _run_lock(plan: RunPlan) -> RunLock:
    """The run folder's lock; a resume refused because the run trains now says how to resume it after."""
    if plan.resume_from is None:
        return RunLock(plan.run_dir)
    again = braces_kept(f"cnnlab train --resume {shell_quoted(str(plan.run_dir))}")  # a folder called r{pid} kept
    return RunLock(plan.run_dir,
                   busy=f"it is {{doing}} now; let it finish, or stop it (Ctrl+C where it runs, or kill {{pid}}) and "
                        f"resume then: {again}",
                   busy_here=f"it is {{doing}} now in that call; let it return, then resume: {again}")


def start_over_unsaved(out) -> None:
    """A folder whose run stopped before its first checkpoint (a full disk or a kill between an epoch's metrics and
    its save: config.json, metrics.csv, a sidecar of a file never written) holds nothing to resume, and the same
    command starts it over, as it does a folder with config.json alone: its run's files are removed, under its lock
    (a run training there is refused as ever). A folder with a checkpoint, a finished run's summary.json, or files
    of the user's own is left alone: ``plan_run`` refuses it in one line."""
    if not isinstance(out, (str, os.PathLike)) or not str(out).strip():
        return  # plan_run refuses it
    folder = Path(out)
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError:
        return
    if ("metrics.csv" not in names or names & {"last.pt", "best.pt", "summary.json"}
            or any(n not in RUN_FILES and not n.startswith(".") for n in names)):
        return
    with RunLock(folder):
        for name in sorted(names & RUN_FILES):
            path = folder / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)  # tensorboard/
            else:
                path.unlink(missing_ok=True)


def _refuse_no_checkpoint(plan: RunPlan) -> None:
    """A resume's file that is no checkpoint (nothing, a folder, a FIFO, an image, an export) refused before the run
    folder's lock is taken: ``--resume digit.png`` left a lock file among the user's files, and in a read-only folder
    named the folder as the problem. A run folder without its last.pt is left to :func:`_resumed_checkpoint`, which
    says what works instead. Then a checkpoint that lies in a folder of the user's, not a run's, whose files the
    resume would write over (:func:`cnnlab.runs.check_resumed_folder`; a checkpoint there is the run's when it is
    of the same run as the one resumed: :func:`cnnlab.checkpoint.same_run_as`)."""
    where = plan.resume_from
    if where is not None and not (where.name == "last.pt" and not exists(where)
                                  and (is_run_dir(where.parent) or unsaved_run_dir(where.parent))):
        check_checkpoint_file(where)
    if where is not None and plan.run_dir is not None:
        check_resumed_folder(plan.run_dir, where, same_run_as(where, flag="--resume"))


def _resumed_checkpoint(plan: RunPlan) -> dict | None:
    """The checkpoint a resume continues from (None: a new run). A run folder whose run saved no last.pt says what
    works instead ("no such checkpoint" was all it said)."""
    where = plan.resume_from
    if where is None:
        return None
    folder = where.parent
    if where.name == "last.pt" and not exists(where) and unsaved_run_dir(folder):  # killed as its data loaded
        cause = failure_cause(folder)
        ended = f"failed before it saved anything ({cause})" if cause else "was stopped before it saved anything"
        raise RunError(f"--resume {folder}: the run {ended} (no config.json, no last.pt), so there is no position to "
                       f"continue from; start it again: the command that started it, with --out "
                       f"{shell_quoted(str(folder))}")
    if where.name == "last.pt" and not exists(where) and is_run_dir(folder):  # a stat that fails: one line
        how = (f"continue from its best epoch: cnnlab train --resume {shell_quoted(str(folder / 'best.pt'))}"
               if is_file(folder / "best.pt") else f"start it again: cnnlab train --config {shell_quoted(str(folder))} --out {shell_quoted(str(folder))}")
        if gone := checkpoints_gone(folder) or last_gone(folder):  # it trained: deleted or moved, not never saved
            raise RunError(f"--resume {folder}: no last.pt, so there is no position to continue from; {gone}")
        cause = failure_cause(folder)  # a run that diverged: what to change before it starts again
        ended = f"failed before it saved a last.pt ({cause})" if cause else "saved no last.pt before it stopped"
        raise RunError(f"--resume {folder}: the run {ended}, so there is no position to continue from; {how}")
    return load_checkpoint(where, flag="--resume")  # a damaged one's fix names --resume RUN/best.pt, as train takes it


def check_settings(cfg: TrainConfig) -> None:
    """The settings a new run reads outside :meth:`TrainConfig.validate` (its device, augmentation, teacher and
    data folder), refused as the run refuses them, before anything is made: ``cnnlab train --config FILE`` asks here
    inside :func:`cnnlab.config.said_of_file`, so that a value of the file is named as its key (``FILE: device must
    be ...``), not as a flag nobody typed."""
    resolve_device(cfg.device)
    parse_augment(cfg.augment)
    check_teacher(cfg)
    check_data_dir(cfg.dataset, cfg.data_dir)


def _check_data_there(cfg: TrainConfig, where: str, given: str) -> None:
    """A resumed run's (``where`` ``--resume RUN``) or a re-run run's (``--config RUN/config.json``) ``idx:``/
    ``folder:`` directory that is gone: say how to give its new place, the command ``cnnlab train GIVEN`` with its
    ``--dataset`` (a re-run's loader said ``idx:DIR: no such directory; pass idx:DIR ...``, naming no run)."""
    if message := moved_away(cfg.dataset, where, f"cnnlab train {given} {{new}}"):
        raise RunError(message)


def _record_outcome(t: Trainer, result: TrainResult) -> None:
    """status.json of a run that ended without an error: finished, or stopped by --max-steps (resumable). A resume
    that trained nothing at a --max-steps under the run's step, where no limit of the run's own stopped it (an
    interrupted run, a killed one), leaves status.json as it was: "--max-steps 0: resume to go on" replaced
    "interrupted: continue with: cnnlab train --resume RUN"."""
    if t.run_dir is None:
        return
    t.check_folder()
    if _record_stands(t):  # a diverged run stays diverged: every refusal of its last.pt holds
        return
    if t.step_limits:  # a resume: the step limit it kept may be one the run has trained past since (saved_config)
        _write_config(t, trained=t.after_first_save is None)
    # the limit config.json keeps: a resume that trained nothing, at a --max-steps under the run's step, stands where
    # the run's own limit stopped it (it said "--max-steps 5" of a run at step 12, whose config.json says 12)
    limit = t.saved_config()["max_steps"]
    if result.stopped == "step limit" and t.after_first_save is not None and limit != t.state.step:
        return  # (after_first_save still waiting: this process saved nothing, so trained nothing)
    why = {"step limit": f"--max-steps {limit}: resume to go on",
           "target": f"{TARGET_REACHED} {t.cfg.target_accuracy:g}"}
    # a resume of a run that reached its target trains nothing ("nothing to train"), and its record stands
    detail = why["target"] if t.state.target is not None else why.get(result.stopped, "")
    if t.state.history and not is_file(t.run_dir / "best.pt", if_unknown=True):  # its best epoch's save was lost
        detail = "; ".join(filter(None, (detail, "no best.pt: its best epoch was never saved (a full disk, or a kill "
                                                 "while saving); last.pt holds the final weights")))
    write_status(t.run_dir, "stopped" if result.stopped == "step limit" else "finished", detail)


def _record_stands(t: Trainer) -> str:
    """Why the run's record (its status.json, its summary.json) stays as it was after this process: a resume that
    trained nothing (at its --max-steps, or its epochs done) of a run whose training diverged re-evaluates a net it
    diverged with, or an earlier one, which is not the run's result (status.json "stopped" and a summary.json of
    the diverged net made its last.pt exported and served); "" otherwise. A resume that trains has made the run's
    status this process's first (:meth:`FailureRecord.arm`), so its run reads as diverged no more."""
    cause = failure_cause(t.run_dir) if t.run_dir is not None and t.resumed else ""  # (read whole: this holds the run)
    return (f"{t.run_dir} failed ({cause.split(';')[0]}: its status.json), and a resume that trains nothing leaves it "
            "so; what was measured is not the run's result") if cause.startswith(DIVERGED) else ""


def _forget_if_empty(plan: RunPlan, guard: FolderGuard):
    """On an error before anything was written, remove the fresh folder this run made (nothing in it but its
    lock, the status.json that says it failed, and the copy of its teacher taken before training: a signal while
    the teacher loaded left such a folder, which `cnnlab runs` does not list; not a folder that took its place), and
    the folders above it that it made on the way, left empty (:attr:`RunPlan.made`). Not when its lock was refused
    because another process (or thread) holds it (:class:`~cnnlab.errors.RunBusy` before :meth:`FolderGuard.take`
    was given the lock): the folder was not there when ``plan_run`` looked, and the one there now is that process's,
    made since (a refused train removed it, with its lock and status, and the run that held it died at its save)."""
    def on_exit(exc_type, exc, tb) -> bool:
        refused = guard.lock is None and isinstance(exc, RunBusy)  # another holds the lock: its folder, not ours
        if exc_type is not None and plan.fresh and not guard.gone and not refused:  # (and a copy cut short: its temp file)
            remove_if_unused(plan.run_dir, (LOCK_FILE, STATUS_FILE, TEACHER_FILE), plan.made)
        return False

    return on_exit


def resume_hint(run_dir: Path, max_steps: int = 0) -> str | None:
    """``continue with: cnnlab train --resume RUN`` (with the run's ``--max-steps``, a process's flag, when it had
    one) for a run folder that holds a checkpoint to continue from; None when it holds none."""
    if not is_file(run_dir / "last.pt", if_unknown=True):  # (a stat that fails: it may be there, and resume says)
        return None
    return (f"continue with: cnnlab train --resume {shell_quoted(str(run_dir))}"  # a command to copy: as a shell takes it
            + (f" --max-steps {max_steps}" if max_steps else ""))


#: What a run that saved no checkpoint can do instead of a resume.
START_AGAIN = "no checkpoint was saved, so there is nothing to resume: start it again (the same command)"


@dataclass
class FailureRecord:
    """On an error, status.json says how the run ended: stopped (interrupted: resumable) or failed, and why.

    Not ``armed`` until a resume has restored the run: a resume refused before (a flag that would change the run,
    its data gone, a checkpoint of another run) changed nothing, and the run's status stays what it was. Nothing
    is written when the run's folder was moved or deleted (``guard``): the path may be another folder now."""

    plan: RunPlan
    armed: bool
    guard: FolderGuard | None = None
    #: The process's --max-steps, for the command that continues an interrupted run.
    max_steps: int = 0

    def arm(self) -> None:
        """From now on the run's status is this process's: status.json says "running" (runs.RUNNING: read while
        no process holds the run, a kill), never what an earlier process wrote (a divergence of the run that
        was in the folder before), and an error says how this process ended."""
        write_status(self.plan.run_dir, RUNNING, max_steps=self.max_steps)
        self.armed = True

    def __call__(self, exc_type, exc, tb) -> bool:
        if exc_type is None or not self.armed or (self.guard is not None and self.guard.gone):
            return False
        if not is_dir(self.plan.run_dir, if_unknown=True):
            return False
        interrupted = issubclass(exc_type, (Interrupted, KeyboardInterrupt))
        detail = str(exc).splitlines()[0][:500] if str(exc) else exc_type.__name__
        hint = resume_hint(self.plan.run_dir, self.max_steps)
        if interrupted:  # under torchrun or before the loop began, Ctrl-C may have saved nothing
            status, detail = ("stopped", f"interrupted: {hint}") if hint else ("failed", f"interrupted; {START_AGAIN}")
        else:
            status = "failed"
        try:
            write_status(self.plan.run_dir, status, detail)
        except OSError:
            pass  # a read-only or full disk: the error being raised already says so
        return False


@contextlib.contextmanager
def _peer_lost_explained(recorder: FailureRecord):
    """A rank that lost its group when torchrun will not restart it: the line (and status.json) say how the run
    goes on, from its folder: the command that resumes it, or that nothing was saved."""
    try:
        yield
    except PeerLost as err:
        if err.restarting:
            raise
        how = resume_hint(recorder.plan.run_dir, recorder.max_steps) or START_AGAIN
        raise PeerLost(f"{err}; {how}", restarting=False) from err.__cause__


#: How a full disk's error (cnnlab.fileio.write_error) says what to do, which is true of a run without a checkpoint.
RUN_IT_AGAIN = "; free some disk space and run it again"


@contextlib.contextmanager
def _full_disk_explained(recorder: FailureRecord):
    """A write that fails once the run folder holds a checkpoint (a full disk, an input/output error, a cross-device
    rename, a folder made read-only): the line (and status.json) say how the run goes on, its resume ("run it
    again" was refused: the folder holds a run). Without a checkpoint the same command starts the run over
    (:func:`start_over_unsaved`), and the error says so as it is."""
    try:
        yield
    except WriteError as err:
        hint = resume_hint(recorder.plan.run_dir, recorder.max_steps)
        if hint is None:
            raise
        text = str(err)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):  # no inodes: write_error's reason says so, its fix "run it again"
            inodes = no_free_inodes(err, recorder.plan.run_dir)
            what = text[:text.find(RUN_IT_AGAIN)] if RUN_IT_AGAIN in text else err.reason if inodes else text
            free = NO_INODES[1] if inodes else "free some disk space"
            raise WriteError(f"{what}; {free}, then {hint}", err.errno) from None
        if err.reason == text:  # a line of its own making, its fix in it
            raise WriteError(f"{text}; then {hint}", err.errno) from None
        protected = protection_of(err.path, err.errno) if err.path is not None else None
        fix = (protected[1] if protected is not None else  # an immutable file: no mode of the folder lifts it
               f"make {recorder.plan.run_dir} writable" if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else
               "check the path and the disk")  # (write_error's "or write somewhere else" is no way to go on)
        raise WriteError(f"{err.reason}; {fix}, then {hint}", err.errno, err.reason) from None


def _run_folder_gone(run_dir: Path) -> Callable[[Path | None], RunError]:
    """The line of a run whose folder was renamed or deleted while it trained (its :class:`FolderGuard`): the run
    stops at its next write and writes nothing (each write re-created the folder's old path, without config.json or
    lock, where a resume was then accepted: two processes in one run). Its resume is given where the folder moved
    holds a checkpoint (:func:`resume_hint`); one moved before the run saved any says to start it again (the resume
    it was told to run was refused: "stopped before it saved anything")."""
    def refusal(where: Path | None) -> RunError:
        stops = "while its run trained; this process stops and writes nothing more"
        if where is None:
            what = (f"was moved or deleted {stops} (if it was moved and holds a last.pt, continue there with: "
                    "cnnlab train --resume NEW_PLACE; else start the run again)")
        elif resume_hint(where) is not None:
            what = f"was moved to {where} {stops}: continue there with: cnnlab train --resume {shell_quoted(str(where))}"
        else:
            what = f"was moved to {where} {stops}; {START_AGAIN}"
        return RunError(f"{run_dir}: the run's folder {what}")

    return refusal


def _folders_config(plan: RunPlan) -> dict | None:
    """The record (settings, data) config.json holds in the folder a ``--resume FOLDER/FILE.pt`` (not last.pt) writes to; None for
    a last.pt, a checkpoint outside a run folder, or no readable config.json (nothing to tell the checkpoint's run
    from)."""
    if plan.run_dir is None or plan.resume_from.name == "last.pt":
        return None
    try:
        record = read_json(plan.run_dir / "config.json", "config.json")
        TrainConfig.from_dict(record["config"])
    except (CnnlabError, KeyError, TypeError, AttributeError):
        return None
    return record


def _check_own_checkpoint(plan: RunPlan, ckpt: dict, record: dict | None) -> None:
    """``--resume FOLDER/FILE.pt`` continues the run of FOLDER, writing its files: refuse a checkpoint of another
    run there (a distilled run's ``teacher.pt``, the teacher's own, resumed in the student's folder, trained the
    teacher on and wrote it over the student; a colleague's checkpoint of the same net, data and seed at another
    --lr replaced the run's checkpoints, metrics and config.json with theirs). Another run's: any setting a resume
    may not change differs from the folder's config.json (``record``, :func:`_folders_config`;
    :func:`cnnlab.config.other_run`; ``--epochs`` where the run's schedule is planned over its length), or it trained
    on other data (the records of their data differ: a colleague's checkpoint on another ``idx:`` directory was
    refused as "not the data the run trained on"), every one named."""
    where, run_dir = plan.resume_from, plan.run_dir
    if run_dir is None or where.name == "last.pt":
        return
    again = f"resume the run itself with 'cnnlab train --resume {shell_quoted(str(run_dir))}', or copy the file into a folder of its own"
    if where.name == TEACHER_FILE:
        raise RunError(f"--resume {where}: the copy of this run's teacher, not the run's own checkpoint; {again}")
    if record is None:
        return  # no readable config.json: nothing to tell the checkpoint's run from
    try:
        own, data = record["config"], record.get("data")
        differs = other_run(own, ckpt["config"], same_data(data, ckpt.get("data")))
        theirs, mine = (TrainConfig.from_dict(c) for c in (ckpt["config"], own))
    except (CnnlabError, KeyError, TypeError, AttributeError):
        return
    if differs:
        def named(cfg: TrainConfig, other_data: str = "") -> str:
            said = [f"{k} {getattr(cfg, k)!r}" + (other_data if k == "dataset" else "") for k in differs[:3]]
            return ", ".join(said) + (", ..." if len(differs) > 3 else "")
        # the same place, other data: that run's records of it differ from this run's (never "your data changed")
        other = (f" with other contents than this run's: {describe_fingerprint_changes(data, ckpt['data'])}"
                 if theirs.dataset == mine.dataset and isinstance(ckpt.get("data"), dict) else "")
        raise RunError(f"--resume {where}: a checkpoint of another run ({named(theirs, other)}) than the one in "
                       f"{run_dir} ({named(mine)}); {again}")


def _saved_config(plan: RunPlan, ckpt: dict, record: dict | None) -> TrainConfig:
    """The settings a resume continues: the checkpoint's, its data's place the one the run's config.json records
    where a resume since took that data moved (:func:`cnnlab.config.relocated`): the run's best.pt saved before the
    move names the old place, gone, which sent the resume of the run's own best.pt to ``--dataset`` (the resume's
    data check still verifies it is the same data; ``record``: :func:`_folders_config`, None: the checkpoint's place)."""
    saved = TrainConfig.from_dict(ckpt["config"])
    if record is None:
        return saved
    place = TrainConfig.from_dict(record["config"]).dataset
    return replace(saved, dataset=place) if relocated(saved.dataset, place) else saved


def build_trainer(cfg: TrainConfig, ranks: Dist, plan: RunPlan, dataset: Dataset | None, log: Log,
                  report: bool, rerun_of: tuple | None = None, resumed: ResumedThreads | None = None,
                  start: dict | None = None) -> Trainer:
    """Process settings, device, data, model, optimiser and loaders: everything the epochs need. ``rerun_of``:
    the run ``--config RUN`` re-runs (:func:`rerun_warnings`); ``resumed``: a resume's threads; ``start``: the position
    a resume starts from (None: a new run), which the ranks compare (:func:`refuse_other_ranks`)."""
    default = torch.get_num_threads()
    too_many_threads = set_threads(resumed.count() if resumed is not None else cfg.threads)
    if cfg.malloc_tuning:
        keep_freed_memory()
    device = ranks.device_for(resolve_device(cfg.device))
    autocast = training_autocast(cfg.precision, device)
    ranks.init(device, say=log)
    if cfg.batch_size % ranks.world_size:
        raise CnnlabError(uneven_batch(cfg.batch_size, ranks.world_size, resumed))
    say = log if ranks.is_primary else (lambda msg: None)
    if too_many_threads:
        say(too_many_threads)
    data = dataset or load_dataset(cfg.dataset, data_dir=cfg.data_dir, log=say)
    if dataset is not None:
        validate_dataset(dataset)  # load_dataset checks what it returns; a Dataset passed in is checked here
    info = data.info()
    refuse_other_ranks(ranks, info, cfg, start)
    now = torch.get_num_threads() if device.type == "cpu" else None
    said = rerun_warnings(data, ranks.world_size, *rerun_of, threads_now=now) if rerun_of is not None else []
    if resumed is not None and now is not None:
        said += [*resumed.lines(now), resumed.note(default)]
    for warning in filter(None, said):
        say(printable(warning))  # it names a run folder
    augment = parse_augment(cfg.augment)
    if augment is not None and augment.flips and (warning := flip_warning(data.name, f"--augment {cfg.augment}")):
        say(warning)
    with seeded(cfg.seed):  # the only draws of a run from torch's global generator: other threads' cannot interleave
        model, model_args = build_model(cfg.model, info)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    optimizer = build_optimizer(cfg, parameter_groups(model, cfg))
    teacher = load_teacher(cfg, data, plan.run_dir, plan.resume_from, device, memory_format)
    (train_set, eval_set), eval_name = _splits(data, cfg)
    if plan.resume_from is None:  # a resume's batch is the run's own, accepted when it began
        _refuse_batch_beyond(cfg, len(train_set[1]))

    def loader(images, labels, batch, shuffle):
        return BatchLoader(images, labels, batch, mean=data.mean, std=data.std, shuffle=shuffle, seed=cfg.seed,
                           device=device, rank=ranks.rank, world_size=ranks.world_size, memory_format=memory_format)

    train_loader = loader(*train_set, cfg.batch_size // ranks.world_size, True)
    if warning := ema_warning(cfg.ema, cfg.epochs * len(train_loader)):
        say(warning)
    # the report needs every test prediction: in one process, evaluations of the whole test set keep
    # them, so that the report need not evaluate again
    keep = plan.run_dir is not None and report and not ranks.enabled and cfg.eval_limit == 0 and eval_name == "test"
    return Trainer(
        cfg=cfg, data=data, info=info, model_args=model_args, device=device, ranks=ranks, model=model,
        net=_wrap(model, cfg, ranks, device), optimizer=optimizer,
        scheduler=build_scheduler(cfg, optimizer, len(train_loader)), train_loader=train_loader,
        eval_loader=loader(*eval_set, cfg.eval_batch_size, False), eval_name=eval_name, augment=augment,
        ema=build_ema(cfg, model), teacher=teacher,
        autocast=autocast,
        run_dir=plan.run_dir, log=say, keep_eval_outputs=keep)


def refuse_other_ranks(ranks: Dist, info: dict, cfg: TrainConfig, start: dict | None = None) -> None:
    """Under torchrun each rank loads the data itself (its machine's cache, ``--data-dir`` or ``idx:``/``folder:``
    directory), and on several machines each was started by its own command: the ranks compare what they loaded
    (``info``'s fingerprint: sizes, classes, statistics, CRC-32s), the settings they train with
    (:func:`cnnlab.config.rank_settings`: every one that changes the math or the schedule) and where they start
    (``start``: a resume's position, None for a new run), in one all-gather, and a difference is refused on every
    rank, before any step, in one line naming the rank (other data: other sizes aborted a rank in gloo's C++, other
    labels trained the group on a mixture without a word; other settings: another --lr trained each rank at its own
    rate, another --batch-size aborted in gloo's C++, another --epochs hung both ranks at the end; other positions, a
    run's last.pt on one machine and its best.pt on another: gloo's C++ abort, the run marked failed). Rank 0's record
    of its data and settings then speaks for every rank. A process alone: no collective."""
    first, *others = ranks.all_gather({"data": {k: info.get(k) for k in ("name", *FINGERPRINT)},
                                       "settings": rank_settings(cfg), "start": start})
    for rank, theirs in enumerate(others, 1):
        _refuse_other_data(rank, first["data"], theirs["data"])
        _refuse_other_settings(rank, first["settings"], theirs["settings"])
        _refuse_other_start(rank, first["start"], theirs["start"])


def _refuse_other_data(rank: int, first: dict, theirs: dict) -> None:
    """:func:`refuse_other_ranks`' refusal of rank ``rank``'s data, which differs from rank 0's (``first``)."""
    changed = fingerprint_changes(first, theirs)
    if not changed:
        return
    whose = (f"rank {rank}'s {first['name']} is not rank 0's" if theirs["name"] == first["name"] else
             f"rank {rank}'s data ({theirs['name']}) is not rank 0's ({first['name']})")
    sizes = "" if not {"train_size", "test_size"} & set(changed) else (
        f" ({theirs['train_size']:,} train / {theirs['test_size']:,} test images against {first['train_size']:,} / "
        f"{first['test_size']:,})")
    raise CnnlabError(printable(f"the group's processes loaded other data: {whose}: "
                                f"{describe_fingerprint_changes(first, theirs)}{sizes}; give every process the "
                                "same data (the same files in each machine's cache, --data-dir or idx:/folder: "
                                "directory)"))


def _refuse_other_settings(rank: int, first: dict, theirs: dict) -> None:
    """:func:`refuse_other_ranks`' refusal of rank ``rank``'s settings where one differs from rank 0's (``first``):
    the first that differs named as the command line gives it, and how many more do."""
    differs = [k for k in first if theirs.get(k) != first[k]]
    if not differs:
        return

    def given(key: str, value) -> str:
        if key == "teacher":  # (whether there is one: its place is its machine's)
            return "--teacher" if value else "no --teacher"
        return flag_with_value(key, value) if value is not None else f"{flag(key)} unset"

    key = differs[0]
    more = f" (and {plural(len(differs) - 1, 'other setting')})" if len(differs) > 1 else ""
    raise CnnlabError(printable(f"the group's processes were started with other settings: rank {rank}'s "
                                f"{given(key, theirs.get(key))} is not rank 0's {given(key, first[key])}{more}; start "
                                "every process with the same command"))


def _refuse_other_start(rank: int, first: dict | None, theirs: dict | None) -> None:
    """:func:`refuse_other_ranks`' refusal of rank ``rank``'s start where it is not rank 0's (``first``): a new run
    beside a resume, or resumes at other positions (epoch, batch, step; the checkpoints' places are each machine's),
    each as its command gave it."""
    def at(start: dict | None) -> str:
        if start is None:
            return "as a new run"
        return f"from {start['where']} at step {start['step']} (epoch {start['epoch'] + 1}, batch {start['batch']})"

    def position(start: dict | None) -> tuple | None:
        return None if start is None else (start["epoch"], start["batch"], start["step"])

    if position(first) != position(theirs):
        raise CnnlabError(printable(f"the group's processes start from other positions: rank {rank} {at(theirs)}, "
                                    f"rank 0 {at(first)}; start every process with the same command, from the same "
                                    "checkpoint"))


def uneven_batch(batch: int, world_size: int, resumed: ResumedThreads | None = None) -> str:
    """The line for a global batch that does not divide over the processes: a new run picks another batch; a resume
    (``resumed``), whose batch is the run's own, another number of processes (it was told to pick a multiple of 3
    for a --batch-size it never gave, which a resume refuses)."""
    if resumed is None:
        return (f"--batch-size {batch} is the global batch and must divide evenly over {world_size} processes; pick a "
                f"multiple of {world_size}")
    divisors = list(itertools.islice((n for n in range(1, min(batch, 4096) + 1) if batch % n == 0), 5))
    shown = ", ".join(map(str, divisors[:4])) + (", ..." if len(divisors) > 4 else "")
    then = resumed.processes[0]
    if batch % then:
        how = ""
    elif resumed.naming.api:
        how = f"; it trained in {plural(then, 'process', 'processes')}"
    else:
        launch = "cnnlab train" if then == 1 else f"torchrun --nproc_per_node={then} -m cnnlab train"
        how = f"; as it trained: {launch} {resumed.where}"
    return (f"{resumed.where}: the run's global batch of {batch} does not divide evenly over {world_size} processes; "
            f"resume it in a number of processes that divides {batch} ({shown}){how}")


def _refuse_batch_beyond(cfg: TrainConfig, images: int) -> None:
    """A new run's batch larger than its train split (``--batch-size 100000`` on MNIST's 60,000: each step the whole
    split, 4.3 GB and 79 s for one step of basic_cnn, without a word) is refused in one line
    (:func:`cnnlab.data.loader.batch_beyond`), unless it is the recipe's own: a recipe's batch of 64 on a folder of
    20 images takes them whole each step, as ever."""
    if cfg.batch_size != recipe_values(cfg.recipe, cfg.model, cfg.dataset)["batch_size"]:
        split = f"the train split less its --val-split {cfg.val_split:g}" if cfg.val_split else "the train split"
        if (refusal := batch_beyond(cfg.batch_size, images, split)) is not None:
            raise CnnlabError(refusal)


def _splits(data: Dataset, cfg: TrainConfig):
    """((train images, labels), (eval images, labels)) and the eval split's name."""
    if cfg.val_split > 0:
        return split_validation(data, cfg.val_split, cfg.seed), "val"
    return ((data.train_images, data.train_labels), (data.test_images, data.test_labels)), "test"


def _wrap(model: nn.Module, cfg: TrainConfig, ranks: Dist, device: torch.device) -> nn.Module:
    """The module the loop calls: DDP under torchrun, compiled with --compile (``model`` keeps the weights)."""
    net = model
    if ranks.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return net


def _write_config(t: Trainer, trained: bool = True) -> None:
    """config.json: the run's settings (``--config RUN`` re-runs them), and its teacher's hash (a re-run refuses
    a teacher that changed since). ``trained``: this process trained a part of the run (it saved a checkpoint); a
    resume that only re-evaluated the run keeps the processes and threads its parts trained in. Written into the
    folder the run locked or not at all (:func:`cnnlab.fileio.guarded`): one moved or deleted before the run's first
    write stops it there, as at any later write (config.json went into a folder made anew at the old path, and the
    run trained on to tell so at its save)."""
    if t.run_dir is None:
        return
    teacher = {"teacher": t.teacher.record()} if t.teacher is not None else {}
    if trained:
        world_size, ran = t.ranks.world_size, threads_ran(t)
    else:
        record = read_run_json(t.run_dir / "config.json") or {}
        world_size, ran = _processes_recorded(record) or t.ranks.world_size, recorded_threads(record)
    threads = {"cpu_threads": ran} if ran else {}
    evals = {"eval_batch_sizes": parts} if (parts := eval_batches_ran(t)) else {}
    with guarded(t.folder_guard):
        atomic_write_json(t.run_dir / "config.json", {"config": t.saved_config(), "model_args": t.model_args,
                                                      "data": t.info, "world_size": world_size, **threads, **evals,
                                                      **teacher})


def _processes_recorded(record: dict) -> int | None:
    """The processes a run's config.json says its last part trained in (None: none recorded, or not a count)."""
    n = record.get("world_size")
    return n if type(n) is int and n > 0 else None


def introduce(t: Trainer) -> None:
    """A new run: config.json, and one line saying what trains on what."""
    _write_config(t)
    cfg, data = t.cfg, t.data
    run = f" | run {shell_quoted(str(t.run_dir))}" if t.run_dir else ""  # as a shell takes it back
    t.say(printable(f"{cfg.model}: {count_parameters(t.model):,} parameters | {data.name}: "  # names escaped: one line
                    f"{len(t.train_loader.labels):,} train / {len(t.eval_loader.labels):,} {t.eval_name} from "
                    f"{data.source} | device {t.device}" + (f" x {t.ranks.world_size} processes" if t.ranks.enabled
                                                            else "") + run))
    if t.teacher is not None:
        t.say(f"distilling from {printable(str(t.teacher.path))} (weight {cfg.distill:g}, temperature "
              f"{cfg.distill_temperature:g})")
        if t.teacher.note:
            t.say(t.teacher.note)


def check_resumable(t: Trainer, ckpt: dict, plan: RunPlan) -> None:
    """Refuse a resume from ``ckpt`` whose data or teacher changed since, before anything is restored or written."""
    _refuse_changed_data(t, ckpt, plan)
    check_same_teacher(t.teacher, ckpt.get("teacher"), plan.run_dir or plan.resume_from)


def nothing_to_train(s: TrainState, cfg: TrainConfig) -> str:
    """Why a run at ``s`` takes no training step under ``cfg``: "nothing to train" (it finished its epochs, or reached
    its --target-accuracy: its record stands), "step limit" (at or past --max-steps); "" when it trains."""
    if s.target is not None or s.epoch >= cfg.epochs:
        return "nothing to train"
    return "step limit" if cfg.max_steps and s.step >= cfg.max_steps else ""


def restore(t: Trainer, ckpt: dict, plan: RunPlan) -> None:
    """Weights (and their average), optimiser, scheduler, RNG and position from a checkpoint (either version), once
    :func:`check_resumable` has accepted it."""
    t.model.load_state_dict(ckpt.get("train_weights") or ckpt["state_dict"])
    if t.ema is not None:
        t.ema.module.load_state_dict(ckpt["state_dict"])
        t.ema.n_averaged.fill_(ckpt.get("ema_updates", 0))
    t.optimizer.load_state_dict(ckpt["optimizer"])
    if t.scheduler is not None and ckpt.get("scheduler"):
        t.scheduler.load_state_dict(ckpt["scheduler"])
    t.state = TrainState.from_checkpoint(ckpt)
    t.state.rng = None  # an older run's generator state, no longer used: not carried into the checkpoints to come
    t.resumed = True
    where = plan.run_dir or plan.resume_from
    _recover_best(t, plan.resume_from, where)
    _recover_last(t, plan.resume_from)
    _metrics_from_history(t, plan.resume_from)
    # what this part changes in config.json (the epochs it extends the run to, its processes, threads, evaluation
    # batch) is written with its first checkpoint: a resume killed before it saved leaves the run as it was
    t.after_first_save = functools.partial(_write_config, t)
    s, where = t.state, shell_quoted(str(where))  # as a shell takes it back ($'a\nb'): one line, and exact
    if s.target is not None:
        t.say(f"{where} stopped when it reached its target ({s.target['accuracy']:.2f}% at epoch "
              f"{s.target['epoch']:.2f}); nothing to train, re-evaluating")
    elif s.epoch >= t.cfg.epochs:
        t.say(f"{where} already finished its {plural(t.cfg.epochs, 'epoch')}; nothing to train, re-evaluating")
    elif t.cfg.max_steps and s.step >= t.cfg.max_steps:
        t.say(f"{where} is already at step {s.step} (--max-steps {t.cfg.max_steps}); nothing to train, re-evaluating")
    else:
        t.say(f"resuming {where} at epoch {s.epoch + 1}, batch {s.batch} (step {s.step})")
        if t.run_dir is not None and is_file(t.run_dir / "branches.json", if_unknown=False):  # analyze branches'
            t.say(f"note: {where}/branches.json and branches.png measured the run's weights before this resume; "
                  f"measure them again after it: cnnlab analyze branches {where}")


def _metrics_from_history(t: Trainer, source: Path) -> None:
    """A resumed run's metrics.csv that lacks epochs its checkpoint's history holds (deleted, cut short, whole rows
    lost: a backup restored, a copy of the folder taken while it trained) is written again from that history, as its
    training writes it, with one warning: a resume that trains nothing left it short for good, and ``cnnlab runs``
    and compare read the run's epochs, best and time from it. The resume holds the run's lock; a file that cannot be
    read now (it may be whole) is left as it is. From the run's last.pt, rows past its history are the same: a kill
    came between an epoch's row and its last.pt (or the config.json a lengthening resume writes with its first
    checkpoint), and the row past config.json's epochs is what ``runs`` calls damage (from best.pt they are the
    epochs this resume trains again, and writes again as it goes)."""
    if t.run_dir is None:
        return
    path = t.run_dir / "metrics.csv"
    try:
        why = metrics_behind(path, t.state.history, past_too=source.name == "last.pt")
    except DataUnreadable:
        return
    if why:
        t.check_folder()
        write_metrics(path, t.state.history)
        t.say(printable(f"warning: {path} {why}: written again from {source.name}'s history"))


def _check_resumed_epochs(cfg: TrainConfig, saved: TrainConfig, state: TrainState, where, naming: Naming) -> None:
    """The ``--epochs`` of a resume against where the run is, refused before anything is built or said (an --ema
    warning came first, computed from the epochs then refused): fewer than it has begun (a run stopped in its third
    epoch, resumed with 2, was "finished" at 2 epochs and 2 batches), or any other number for a run that stopped on
    its --target-accuracy, which trains no further: its config.json said the new number while its checkpoints kept
    the old, and ``runs`` showed 3/9 (:func:`cnnlab.config.resumed_config` has refused what a schedule forbids)."""
    asked = naming.setting("epochs", cfg.epochs)
    if state.target is not None and cfg.epochs != saved.epochs:
        raise RunError(f"{asked}: {where} stopped when it reached its target ({state.target['accuracy']:.2f}% >= "
                       f"{saved.target_accuracy:g}% at epoch {state.target['epoch']:.2f}) and trains no further; drop "
                       f"{asked} (a resume re-evaluates it), or start a new run with {asked}")
    begun = state.epoch + (1 if state.batch else 0)  # a stop inside an epoch has begun the next one
    if cfg.epochs < begun:
        into = f" and {plural(state.batch, 'batch', 'batches')} of epoch {begun}" if state.batch else ""
        raise RunError(f"{asked}: {where} has already trained {plural(state.epoch, 'epoch')}{into}; give at least {begun}")


def _recover_best(t: Trainer, source: Path, where) -> None:
    """A run whose best epoch's best.pt was never written (a full disk while saving it, a kill between the epoch's
    two saves: last.pt had recorded the best accuracy, so no later epoch saved best.pt, and a finished run had
    none). When the checkpoint resumed from is that epoch's end (or the stop inside an epoch whose check reached
    --target-accuracy and was the best: the same two saves), it is what best.pt should be: written as best.pt
    now (also over a best.pt of an earlier epoch). When that epoch's weights are gone, one line says so, its stale
    sidecar goes, and best.pt is the best of the epochs from here on (every rank decides alike: the files are
    shared, the checkpoint is the same)."""
    s, best = t.state, source.parent / "best.pt"
    if s.best is None or source.name == "best.pt":
        return
    at_target = s.target is not None and s.target.get("step") == s.step and s.target.get("accuracy") == s.best
    if at_target or s.batch == 0 and s.history and s.history[-1].get(f"{t.eval_name}_acc") == s.best:
        if t.run_dir is not None and not _holds_step(best, s.step):
            copy_checkpoint(source, t.run_dir / "best.pt")
        return
    if is_file(best, if_unknown=True):  # (one whose stat fails may be whole: neither its sidecar removed nor warned)
        return
    if t.run_dir is not None:
        sidecar(t.run_dir / "best.pt").unlink(missing_ok=True)
    epoch = next((r.get("epoch") for r in s.history if r.get(f"{t.eval_name}_acc") == s.best), "?")
    t.say(f"warning: {printable(str(where))} has no best.pt: its best epoch ({epoch}, {s.best:.2f}%) was never saved "
          "(a full disk, or a kill while saving); best.pt will hold the best of the epochs from here on")
    s.best = None


def _recover_last(t: Trainer, source: Path) -> None:
    """A run whose last.pt is damaged (cut short, altered) or not there (deleted or moved), resumed from its best.pt as
    that last.pt's refusal advises (:func:`cnnlab.runs.checkpoint_fix`, :func:`cnnlab.runs.last_gone`: ``--resume
    RUN/best.pt``), where best.pt holds the run's end: every epoch its config.json gives, or the stop on
    --target-accuracy. The run saved last.pt and best.pt from that one position (``observers.CheckpointSaver``: the
    same payload, last.pt first), so best.pt is what last.pt was: written as last.pt again, byte for byte with its
    sidecar (:func:`copy_checkpoint`), with one line. Such a resume re-evaluated the run, wrote no last.pt, and the run
    stayed damaged (``cnnlab runs``; the same refusal next time). A best.pt of an earlier position is left alone: the
    resume trains from it, and saves last.pt as it goes; so is anything else at last.pt's place (a folder, a link)."""
    s, last = t.state, source.parent / "last.pt"
    if t.run_dir is None or source.name != "best.pt":
        return
    try:
        missing = not lexists(last)
    except CnnlabError:  # a stat that fails: it may be whole
        return
    if not missing and not is_file(last, if_unknown=False):
        return
    record = read_run_json(t.run_dir / "config.json") or {}
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    at_end = (s.batch == 0 and s.epoch == config.get("epochs")
              or s.target is not None and s.target.get("step") == s.step)
    if not at_end:
        return
    if not missing:
        try:
            load_checkpoint(last)
            return  # whole: the run's own
        except CnnlabError:
            pass
    t.check_folder()
    copy_checkpoint(source, last)
    why = "was not there (deleted or moved)" if missing else "could not be read (damaged)"
    t.say(printable(f"note: {last} {why}; its best.pt was saved at the same position, the run's end (step {s.step}), "
                    "and is written as last.pt again: the run is whole"))


def _holds_step(path: Path, step: int) -> bool:
    """Whether ``path`` is a readable checkpoint saved at ``step``."""
    if not is_file(path, if_unknown=False):
        return False
    try:
        return TrainState.from_checkpoint(load_checkpoint(path)).step == step
    except (CnnlabError, KeyError, TypeError, ValueError):
        return False


def _refuse_changed_data(t: Trainer, ckpt: dict, plan: RunPlan) -> None:
    """Data that changed since the run trained: an image folder whose class folders changed (one added, one
    renamed: its net has another output per class, and load_state_dict's size mismatch was a traceback), or an
    ``idx:``/``folder:`` dataset rewritten with other images (other sizes, another mean or spread: the resume
    trained on them without a word, and the run was no longer the one its first part belonged to)."""
    recorded, where = ckpt.get("data") or {}, plan.run_dir or plan.resume_from
    changed = t.data.changed_since(recorded)
    if "classes" in changed:
        before, now = [str(c) for c in recorded["classes"]], list(t.data.classes)
        raise RunError(f"--resume {where}: {t.data.name} has other classes than when the "
                       f"run trained ({', '.join(now[:6])}{', ...' if len(now) > 6 else ''} now, "
                       f"{', '.join(before[:6])}{', ...' if len(before) > 6 else ''} then); put the data back as it "
                       "was, or train a new run on it")
    if changed:
        raise RunError(f"--resume {where}: {t.data.name} is not the data the run trained on "
                       f"({t.data.describe_changes(recorded)}); put the data back as it was, or train a new run on it")


def make_observers(t: Trainer, quiet: bool, silent: bool = False) -> list[obs.Observer]:
    """Who watches this run, in the order they are called after a step and after an epoch."""
    cfg = t.cfg
    watchers: list[obs.Observer] = [obs.ProgressBar(not quiet and t.ranks.is_primary and stderr_is_terminal())]
    if cfg.max_steps:
        watchers.append(obs.StepLimit(cfg.max_steps))
    if cfg.target_accuracy:
        watchers.append(obs.TargetStop(cfg.target_accuracy, t.steps_per_epoch, cfg.evals_per_epoch))
    watchers += [obs.DivergenceGuard(), obs.EpochLog()]
    if cfg.tensorboard and t.run_dir is not None:
        watchers.append(obs.TensorboardLog(t.run_dir, t.state.step if t.resumed else None))
    if t.run_dir is not None:
        watchers.append(obs.MetricsCsv(t.run_dir))
    watchers.append(obs.CheckpointSaver(cfg.save_every))
    # under torchrun only SIGINT (the agent passes Ctrl-C on); SIGTERM, its restarts' signal, stays deadly
    watchers.append(obs.SignalStop(silent or not t.ranks.is_primary, group=t.ranks.enabled))
    return watchers


def fit(t: Trainer, observers: list[obs.Observer]) -> EvalResult | None:
    """Epochs until the run is done or an observer stops it; the last evaluation of the eval split."""
    if why := nothing_to_train(t.state, t.cfg):  # a resume of a finished run, or at or past its step limit
        t.request_stop(why)
    if t.stop_reason:
        for o in observers:  # a signal now lets the run write its result (SignalStop says so), then stops it
            if isinstance(o, obs.SignalStop):
                o.training_over = True
        return None
    final = None
    t.model.train()
    while t.state.epoch < t.cfg.epochs and not t.stop_reason:
        seconds = train_one_epoch(t, observers)
        if t.stop_reason == "signal" and t.inside_epoch:
            _interrupt(t, observers)
        final = t.latest_evaluation()
        if t.stop_reason and t.inside_epoch:
            _stop_mid_epoch(t, final, observers)
            break
        row, improved = end_epoch(t, seconds, final)
        for o in observers:
            o.after_epoch(t, row, final, improved)
    if t.stop_reason == "signal":  # it came at an epoch's last step: that epoch was saved like any other
        _interrupt(t, observers)
    return final


def train_one_epoch(t: Trainer, observers: list[obs.Observer]) -> float:
    """Train from ``t.state.batch`` to the end of the epoch (or a stop); returns the epoch's seconds."""
    t.start_epoch()
    for x, y in t.train_loader.batches(t.state.epoch, start=t.state.batch):
        t.train_step(x, y)
        for o in observers:
            o.after_step(t)
        if t.stop_reason:
            break
    return t.end_epoch_timing()


def end_epoch(t: Trainer, seconds: float, result: EvalResult) -> tuple[dict, bool]:
    """The finished epoch's metrics row; the state moves to the next epoch. Returns (row, improved)."""
    s = t.state
    t.check_finite()
    sums = t.reduced_sums()
    row = {
        "epoch": s.epoch + 1,
        "step": s.step,
        "train_loss": sums.loss / max(sums.count, 1),
        "train_acc": 100.0 * sums.correct / max(sums.count, 1),
        f"{t.eval_name}_loss": result.loss,
        f"{t.eval_name}_acc": result.accuracy,
        "lr": t.optimizer.param_groups[0]["lr"],
        "seconds": seconds,
        "images_per_s": sums.count / seconds if seconds > 0 else 0.0,
    }
    s.history.append(row)
    s.epoch, s.batch, s.partial, s.elapsed = s.epoch + 1, 0, EpochSums(), 0.0
    return row, t.improve_best(result.accuracy)


def _stop_mid_epoch(t: Trainer, result: EvalResult, observers: list[obs.Observer]) -> None:
    """Stopped inside an epoch (--max-steps or --target-accuracy): keep the position to resume from."""
    s = t.state
    t.say(f"stopped at step {s.step} (epoch {s.epoch + 1}, batch {s.batch}/{t.steps_per_epoch})  "
          f"{t.eval_name}_loss {result.loss:.4f}  {t.eval_name}_acc {result.accuracy:.2f}%{t.cut_note()}")
    for o in observers:
        o.on_stop_mid_epoch(t)


def _interrupt(t: Trainer, observers: list[obs.Observer]) -> None:
    """SIGINT/SIGTERM: save the position (without evaluating), say how to continue, exit 130/143."""
    signum = next(o.signum for o in observers if isinstance(o, obs.SignalStop))
    if t.inside_epoch:
        for o in observers:
            o.on_stop_mid_epoch(t)
    s = t.state
    where = (f"position saved in {t.run_dir / 'last.pt'}; {resume_hint(t.run_dir, t.cfg.max_steps)}"
             if t.run_dir is not None else "rank 0 saves the position" if t.ranks.enabled
             else "nothing was saved (the run writes no folder)")
    raise Interrupted(f"interrupted at step {s.step} (epoch {s.epoch + 1}, batch {s.batch}/{t.steps_per_epoch}); "
                      f"{where}", 128 + signum)


def finish(t: Trainer, final: EvalResult | None, report: bool, verbose: bool = False,
           silent: bool = False) -> TrainResult:
    """The target line, the test set (once, at the end, when the epochs evaluated a validation split or, with
    ``eval_limit``, part of the test set), the report and the final line."""
    s, cfg = t.state, t.cfg
    if s.target is not None and t.stop_reason == "target":
        tg = s.target
        t.say(f"reached {tg['accuracy']:.2f}%{t.cut_note()} >= {cfg.target_accuracy}% at epoch {tg['epoch']:.2f} "
              f"(step {tg['step']}) after {tg['train_seconds']:.1f}s of training, "
              f"{tg['seconds_since_start']:.1f}s since {'the resume' if tg.get('since_resumed') else 'start'}")
    # eval_limit cuts the evaluations during training short; a reported run's result is the whole test set (a dry
    # run, which reports nothing, keeps it short): the final line, TrainResult.final and summary.json are one figure
    cut_short = final is not None and t.eval_name == "test" and final.n < len(t.data.test_labels)
    if final is None or t.eval_name != "test" or (cut_short and report):
        test = BatchLoader(t.data.test_images, t.data.test_labels, cfg.eval_batch_size, mean=t.data.mean,
                           std=t.data.std, shuffle=False, device=t.device, rank=t.ranks.rank,
                           world_size=t.ranks.world_size, memory_format=t.train_loader.memory_format)
        final = t.evaluate(test, keep_outputs=t.run_dir is not None and report and not t.ranks.enabled,
                           limit=0 if report else None)
        after = (f" (test set, once, after choosing on {t.eval_name})" if t.eval_name != "test" else
                 f" (the whole test set; the evaluations in training took its first {cfg.eval_limit:,})"
                 if cut_short else "")
        t.say(f"test_loss {final.loss:.4f}  test_acc {final.accuracy:.2f}%{after}")
    train_s = t.train_seconds()
    summary, figures = None, None
    again = f"stopped; 'cnnlab evaluate {shell_quoted(str(t.run_dir))}' draws them again"
    if stands := _record_stands(t):
        t.say(printable(f"no report written: {stands}"))
    try:
        if t.run_dir is not None and report and not stands:
            t.check_folder()
            summary, figures = report_run(
                t.run_dir, t.eval_model, t.data, t.device, history=s.history, batch_size=cfg.eval_batch_size,
                extra={"target": s.target, "train_seconds": train_s, "parameters": count_parameters(t.model),
                       "ema": cfg.ema}, log=t.say, result=final, context={"model": cfg.model, "dataset": t.data.name},
                table=verbose, wait=False, stopped=again, guard=t.folder_guard)
        t.say(f"final test accuracy {final.accuracy:.2f}%{t.cut_note(final.n)}{best_text(t)}"
              + (f"; run saved in {shell_quoted(str(t.run_dir))}" if t.run_dir and not stands else ""))
        if figures is not None:
            _wait_for_figures(figures, t.run_dir, silent)  # drawn while the line above was printed
    except KeyboardInterrupt:  # a second signal (observers.StopNow) while the figures were drawn: the line says which
        if figures is not None:
            warn = (lambda line: None) if silent else (lambda line: complain(f"cnnlab: warning: {printable(line)}"))
            figures.stopped(warn, again)
        raise
    t.ranks.barrier()
    t.ranks.close()
    return TrainResult(t.run_dir, s.history, final, s.best, count_parameters(t.model), train_s, t.eval_model, s.target,
                       summary, t.stop_reason or "finished", None if s.best is None else t.eval_name, cfg)


def best_text(t: Trainer) -> str:
    """The final line's `` (best epoch 91.41% val)``: the best evaluation and the split it was made on (the
    validation split's best stood beside the test accuracy unnamed, as if it were the test set's), or the
    ``eval_limit`` cut that names the split; `` (best 82.40% test at epoch 1.50)`` when it is the check inside an
    epoch that reached --target-accuracy; "" when there is none."""
    s = t.state
    if s.best is None:
        return ""
    where = t.cut_note() or f" {t.eval_name}"
    tg = s.target
    if tg is not None and tg.get("accuracy") == s.best and tg.get("epoch", 0) % 1:
        return f" (best {s.best:.2f}%{where} at epoch {tg['epoch']:.2f})"
    return f" (best epoch {s.best:.2f}%{where})"


def _wait_for_figures(figures, run_dir: Path, silent: bool = False) -> None:
    """A figure that cannot be written (a full disk) is a warning, not a failed run: the checkpoint and
    summary.json are written before it, and ``cnnlab evaluate RUN`` draws a missing figure again. The warning
    names what was written and what not; ``silent`` (the API's quiet) says nothing."""
    try:
        figures.wait()
    except WriteError as err:
        if not silent:
            complain(f"cnnlab: warning: {figures.incomplete(err)}; the run's checkpoint is written: 'cnnlab evaluate "
                     f"{printable(str(run_dir))}' draws the figures again")
