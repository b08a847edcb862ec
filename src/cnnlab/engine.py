"""The engine: the only place that knows about devices, precision and ranks.

``train(cfg)`` builds the model by name, loads the data, fits, evaluates after every epoch and
writes the run folder. ``evaluate(model, loader)`` is a large-batch ``inference_mode`` pass.
Losses and accuracies are summed on the device and read once per epoch, not once per step.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from cnnlab.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from cnnlab.config import PROCESS_FIELDS, TrainConfig
from cnnlab.data import BatchLoader, Dataset, load_dataset
from cnnlab.devices import resolve_device, set_threads
from cnnlab.distributed import Dist
from cnnlab.errors import CnnlabError
from cnnlab.evaluation import EvalResult, evaluate, report_run
from cnnlab.fileio import atomic_write_json
from cnnlab.hostmem import keep_freed_memory
from cnnlab.models import build_model, count_parameters
from cnnlab.runs import new_run_dir, write_metrics

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- building blocks


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    raise CnnlabError(f"unknown optimizer {cfg.optimizer!r}")


# ----------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    run_dir: Path | None
    history: list[dict]
    final: EvalResult  # on the test set
    best_accuracy: float  # best per-epoch evaluation (validation split if any, else test)
    parameters: int
    train_seconds: float
    model: nn.Module = field(repr=False)
    #: Set when --target-accuracy was reached: epoch (fractional), step, seconds.
    target: dict | None = None
    summary: dict | None = None


def split_validation(data: Dataset, fraction: float, seed: int):
    """A seeded hold-out of the train split: ((train images, labels), (val images, labels))."""
    n = len(data.train_labels)
    k = int(round(n * fraction))
    if k < 1 or k >= n:
        raise CnnlabError(f"--val-split {fraction} leaves {n - k} train and {k} validation images; pick a fraction that leaves both non-empty")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7_777_777))
    val, tr = order[:k], order[k:]
    return (data.train_images[tr], data.train_labels[tr]), (data.train_images[val], data.train_labels[val])


def shift_augment(x: torch.Tensor, seed: int, epoch: int, batch: int, pad: int = 2, fill: float = 0.0) -> torch.Tensor:
    """Translate each image of a batch by a random offset in [-pad, pad] pixels.

    The offsets come from a generator seeded by (seed, epoch, batch), so a resumed run draws the
    same ones without storing generator state. x: (B, C, H, W) normalised; ``fill`` is what the
    uncovered border gets: the normalised value of a black pixel (``BatchLoader.shift``).
    """
    b, _, h, w = x.shape
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + batch)
    off = torch.randint(0, 2 * pad + 1, (b, 2), generator=g).to(x.device)  # (B, 2) row, col offsets
    padded = F.pad(x, (pad, pad, pad, pad), value=fill)  # (B, C, H+2p, W+2p)
    rows = off[:, :1] + torch.arange(h, device=x.device)  # (B, H)
    cols = off[:, 1:] + torch.arange(w, device=x.device)  # (B, W)
    n = torch.arange(b, device=x.device)[:, None, None]
    out = padded[n, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): advanced dims first
    return out.permute(0, 3, 1, 2)  # (B, C, H, W), laid out channels-last in memory


class _Tensorboard:
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CnnlabError("--tensorboard needs the tensorboard package: pip install 'cnnlab[tensorboard]'") from None
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: dict) -> None:
        for key, value in row.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, row["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def train(
    cfg: TrainConfig,
    *,
    out: str | Path | None = None,
    runs_root: str | Path = "runs",
    resume: str | Path | None = None,
    write: bool = True,
    quiet: bool = False,
    log: Log = _print,
    dataset: Dataset | None = None,
    report: bool = True,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.dataset``; write the run folder unless ``write`` is False.

    Under torchrun (see ``cnnlab.distributed``) every rank runs this; only rank 0 logs and writes.
    A torchrun restart of the group resumes from the run folder's ``last.pt`` automatically.
    """
    t_start = time.perf_counter()
    ranks = Dist.from_env()
    if ranks.enabled and out is None and resume is None:
        # under torchrun the run folder must be the same on every rank and after a restart
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        safe = cfg.dataset.split(":", 1)[0]
        out = Path(runs_root) / f"{cfg.model}-{safe}-torchrun-{run_id}"
    if resume is None and ranks.restart_count > 0 and out is not None and (Path(out) / "last.pt").is_file():
        resume = out  # torchrun restarted the group after a failure: continue from the last save
    state = None
    if resume is not None:
        ckpt_path = resolve_checkpoint(resume, "last")
        state = load_checkpoint(ckpt_path)
        saved = TrainConfig.from_dict(state["config"])
        # What the run is comes from the checkpoint; how this invocation runs it comes from ``cfg``:
        # the step limit, the device, the threads and the allocator belong to the process, not to the run.
        for key in PROCESS_FIELDS:
            setattr(saved, key, getattr(cfg, key))
        cfg = saved
        out = Path(resume) if Path(resume).is_dir() else ckpt_path.parent
    cfg.validate()
    set_threads(cfg.threads)
    if cfg.malloc_tuning:
        keep_freed_memory()
    device = ranks.device_for(resolve_device(cfg.device))
    ranks.init(device)
    primary = ranks.is_primary
    say: Log = log if primary else (lambda msg: None)
    write = write and primary
    if cfg.batch_size % ranks.world_size:
        raise CnnlabError(f"--batch-size {cfg.batch_size} is the global batch and must divide evenly over "
                          f"{ranks.world_size} processes; pick a multiple of {ranks.world_size}")

    data = dataset or load_dataset(cfg.dataset, data_dir=cfg.data_dir, log=say)
    info = data.info()
    torch.manual_seed(cfg.seed)
    model, model_args = build_model(cfg.model, info)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    optimizer = build_optimizer(cfg, model.parameters())

    train_set = (data.train_images, data.train_labels)
    eval_set = (data.test_images, data.test_labels)
    eval_name = "test"
    if cfg.val_split > 0:
        train_set, eval_set = split_validation(data, cfg.val_split, cfg.seed)
        eval_name = "val"

    def loader(images, labels, batch, shuffle):
        return BatchLoader(images, labels, batch, mean=data.mean, std=data.std, shuffle=shuffle, seed=cfg.seed,
                           device=device, rank=ranks.rank, world_size=ranks.world_size, memory_format=memory_format)

    train_loader = loader(*train_set, cfg.batch_size // ranks.world_size, True)
    eval_loader = loader(*eval_set, cfg.eval_batch_size, False)
    steps_per_epoch = len(train_loader)
    scheduler = None
    if cfg.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)

    history: list[dict] = []
    epoch, batch, step = 0, 0, 0
    best = -math.inf
    sums = [0.0, 0, 0]  # loss sum, correct, count of the current (partial) epoch, this rank
    elapsed = 0.0  # training seconds of the current epoch before a resume
    if state is not None:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        prog = state["progress"]
        epoch, batch, step = prog["epoch"], prog["batch"], prog["step"]
        # the checkpoint holds the partial epoch's sums over all ranks: rank 0 carries them on
        sums = list(prog["sums"]) if ranks.is_primary else [0.0, 0, 0]
        elapsed = prog.get("elapsed", 0.0)
        history = list(state["history"])
        best = state["best_accuracy"]
        torch.set_rng_state(state["rng"]["torch"])
        if epoch >= cfg.epochs:
            say(f"{out} already finished its {cfg.epochs} epochs; nothing to train, re-evaluating")
        else:
            say(f"resuming {out} at epoch {epoch + 1}, batch {batch} (step {step})")

    run_dir = None
    if write:
        run_dir = Path(out) if out else new_run_dir(runs_root, cfg.model, data.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", {"config": cfg.to_dict(), "model_args": model_args, "data": info,
                                                    "world_size": ranks.world_size})
    board = _Tensorboard(run_dir) if cfg.tensorboard and write else None

    params = count_parameters(model)
    if state is None:
        say(f"{cfg.model}: {params:,} parameters | {data.name}: {len(train_set[1]):,} train / "
            f"{len(eval_set[1]):,} {eval_name} from {data.source} | device {device}"
            + (f" x {ranks.world_size} processes" if ranks.enabled else "")
            + (f" | run {run_dir}" if run_dir else ""))

    # The module that owns the weights (what we save) and the one we call (maybe compiled, maybe DDP).
    net = model
    if ranks.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                else contextlib.nullcontext())

    def payload(elapsed_s: float = 0.0) -> dict:
        return {
            "model": {"name": cfg.model, "args": model_args},
            "config": cfg.to_dict(),
            "data": info,
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "progress": {"epoch": epoch, "batch": batch, "step": step, "sums": list(sums), "elapsed": elapsed_s,
                         "world_size": ranks.world_size},
            "history": history,
            "best_accuracy": best,
            "rng": {"torch": torch.get_rng_state()},
        }

    def epoch_sums(loss_sum: torch.Tensor, correct: torch.Tensor, count: int) -> list:
        """This epoch's running sums over all ranks, as a checkpoint stores them."""
        total = ranks.all_reduce_sum([float(loss_sum), float(correct), float(count)], device)
        return [total[0], int(total[1]), int(total[2])]

    # The report needs every test prediction: in one process, evaluations of the whole test set keep
    # them, so that the report (which falls back to its own pass otherwise) need not evaluate again.
    keep_test_outputs = write and report and not ranks.enabled and cfg.eval_limit == 0

    def evaluate_reduced(split: BatchLoader, keep_outputs: bool = False) -> EvalResult:
        r = evaluate(model, split, limit=cfg.eval_limit, keep_outputs=keep_outputs)
        if not ranks.enabled:
            return r
        loss_sum, correct, n = ranks.all_reduce_sum([r.loss * r.n, float(r.correct), float(r.n)], device)
        return EvalResult(loss=loss_sum / n, accuracy=100.0 * correct / n, n=int(n), correct=int(correct))

    # with a target accuracy, evaluate several times per epoch so that the run stops early
    eval_points = set()
    if cfg.target_accuracy:
        k = cfg.evals_per_epoch
        eval_points = {max(1, round(steps_per_epoch * i / k)) for i in range(1, k)}

    keep_eval_outputs = keep_test_outputs and eval_name == "test"
    stop = False
    target = None
    mid = None  # the last evaluation inside an epoch, and the step it was made at
    total_train_s = sum(r["seconds"] for r in history)
    final = None
    model.train()
    while epoch < cfg.epochs and not stop:
        bar = tqdm(total=steps_per_epoch, initial=batch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=quiet or not primary or not sys.stderr.isatty(), unit="batch", dynamic_ncols=True)
        loss_sum = torch.tensor(sums[0], dtype=torch.float64, device=device)
        correct = torch.tensor(sums[1], dtype=torch.int64, device=device)
        count = sums[2]
        t0 = time.perf_counter()
        for x, y in train_loader.batches(epoch, start=batch):
            if cfg.augment == "shift":
                x = shift_augment(x, cfg.seed + ranks.rank, epoch, batch, fill=train_loader.shift)
            with autocast:
                logits = net(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            # keep running sums on the device: no host sync per step
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            count += len(y)
            batch += 1
            step += 1
            bar.update(1)
            if not bar.disable and step % 50 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / count:.4f}")
            if cfg.max_steps and step >= cfg.max_steps:
                stop = True
            if batch in eval_points and batch < steps_per_epoch:
                mid = (step, evaluate_reduced(eval_loader, keep_eval_outputs))
                if mid[1].accuracy >= cfg.target_accuracy:
                    target = {"epoch": epoch + batch / steps_per_epoch, "step": step, "accuracy": mid[1].accuracy,
                              "train_seconds": total_train_s + elapsed + time.perf_counter() - t0,
                              "seconds_since_start": time.perf_counter() - t_start, "reached_at_unix": time.time()}
                    stop = True
            if cfg.save_every and step % cfg.save_every == 0 and batch < steps_per_epoch:
                sums = epoch_sums(loss_sum, correct, count)  # a collective: every rank takes part
                if write:
                    save_checkpoint(run_dir / "last.pt", payload(elapsed + time.perf_counter() - t0))
            if stop:
                break
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # kernels run asynchronously: time what actually ran
        seconds = elapsed + time.perf_counter() - t0
        elapsed = 0.0
        # a stop right after a mid-epoch evaluation reuses it: the weights have not changed since
        final = mid[1] if mid is not None and mid[0] == step else evaluate_reduced(eval_loader, keep_eval_outputs)
        total_train_s += seconds
        if stop and batch < steps_per_epoch:
            # stopped mid-epoch (--max-steps or --target-accuracy): keep the position to resume from
            say(f"stopped at step {step} (epoch {epoch + 1}, batch {batch}/{steps_per_epoch})  "
                f"{eval_name}_loss {final.loss:.4f}  {eval_name}_acc {final.accuracy:.2f}%")
            sums = epoch_sums(loss_sum, correct, count)
            if write:
                save_checkpoint(run_dir / "last.pt", payload(seconds))
            break
        tl, tc, tn = epoch_sums(loss_sum, correct, count)
        row = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": tl / max(tn, 1),
            "train_acc": 100.0 * tc / max(tn, 1),
            f"{eval_name}_loss": final.loss,
            f"{eval_name}_acc": final.accuracy,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "images_per_s": tn / seconds if seconds > 0 else 0.0,
        }
        history.append(row)
        say(f"epoch {row['epoch']:>3}/{cfg.epochs}  train_loss {row['train_loss']:.4f}  "
            f"{eval_name}_loss {final.loss:.4f}  {eval_name}_acc {final.accuracy:.2f}%  "
            f"{seconds:6.1f}s  {row['images_per_s']:,.0f} img/s")
        epoch += 1
        batch = 0
        sums = [0.0, 0, 0]
        improved = final.accuracy > best
        best = max(best, final.accuracy)
        if cfg.target_accuracy and final.accuracy >= cfg.target_accuracy and target is None:
            target = {"epoch": float(epoch), "step": step, "accuracy": final.accuracy, "train_seconds": total_train_s,
                      "seconds_since_start": time.perf_counter() - t_start, "reached_at_unix": time.time()}
            stop = True
        if board:
            board.log(row)
        if write:
            write_metrics(run_dir / "metrics.csv", history)
            save_checkpoint(run_dir / "last.pt", payload())
            if improved:
                save_checkpoint(run_dir / "best.pt", payload())
    if target:
        say(f"reached {target['accuracy']:.2f}% >= {cfg.target_accuracy}% at epoch {target['epoch']:.2f} "
            f"(step {target['step']}) after {target['train_seconds']:.1f}s of training, "
            f"{target['seconds_since_start']:.1f}s since start")

    # the test set, once, at the end (it is the per-epoch evaluation already when there is no val split)
    if final is None or eval_name != "test":
        final = evaluate_reduced(loader(data.test_images, data.test_labels, cfg.eval_batch_size, False),
                                 keep_test_outputs)
        say(f"test_loss {final.loss:.4f}  test_acc {final.accuracy:.2f}% (test set, once, after choosing on {eval_name})"
            if eval_name != "test" else f"test_loss {final.loss:.4f}  test_acc {final.accuracy:.2f}%")
    summary = None
    if write and report:
        summary = report_run(run_dir, model, data, device, history=history, batch_size=cfg.eval_batch_size,
                             extra={"target": target, "train_seconds": total_train_s, "parameters": params}, log=say,
                             result=final)
    if board:
        board.close()
    best_txt = f" (best epoch {best:.2f}%)" if history else ""
    say(f"final test accuracy {final.accuracy:.2f}%{best_txt}" + (f"; run saved in {run_dir}" if run_dir else ""))
    ranks.barrier()
    ranks.close()
    return TrainResult(run_dir, history, final, best, params, total_train_s, model, target, summary)
