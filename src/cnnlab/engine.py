"""The engine: the only place that knows about devices, precision and ranks.

``train(cfg)`` builds the model by name, loads the data, fits, evaluates after every epoch and
writes the run folder. ``evaluate(model, loader)`` is a large-batch ``inference_mode`` pass.
Losses and accuracies are summed on the device and read once per epoch, not once per step.
"""

from __future__ import annotations

import math
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
from cnnlab.config import TrainConfig
from cnnlab.data import BatchLoader, Dataset, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_write_json
from cnnlab.models import count_parameters, create_model
from cnnlab.runs import new_run_dir, write_metrics

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- devices


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise CnnlabError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CnnlabError("--device cuda: this torch build or machine has no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CnnlabError("--device mps: MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- building blocks


def build_model(name: str, dataset_info: dict) -> tuple[nn.Module, dict]:
    """A model sized for the data; returns it and the keyword arguments that rebuild it."""
    args = {
        "in_channels": dataset_info["in_channels"],
        "num_classes": len(dataset_info["classes"]),
        "image_size": dataset_info["image_size"],
    }
    return create_model(name, **args), args


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    raise CnnlabError(f"unknown optimizer {cfg.optimizer!r}")


@dataclass
class EvalResult:
    loss: float
    accuracy: float  # percent
    n: int
    #: (N,) predicted classes and (N, classes) probabilities, on the CPU, when asked for.
    predictions: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None


def evaluate(model: nn.Module, loader: BatchLoader, limit: int = 0, keep_outputs: bool = False) -> EvalResult:
    """Mean cross-entropy and accuracy over ``loader`` (its first ``limit`` items if > 0)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=loader.device)
    correct = torch.zeros((), dtype=torch.int64, device=loader.device)
    n = 0
    preds, probs = [], []
    with torch.inference_mode():
        for x, y in loader.batches(0):
            if limit and n >= limit:
                break
            if limit:
                x, y = x[: limit - n], y[: limit - n]
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            pred = logits.argmax(1)
            correct += (pred == y).sum()
            n += len(y)
            if keep_outputs:
                preds.append(pred.cpu())
                probs.append(logits.softmax(1).cpu())
    model.train(was_training)
    if n == 0:
        raise CnnlabError("evaluation saw no images; the test split is empty")
    return EvalResult(
        loss=float(loss_sum) / n,
        accuracy=100.0 * int(correct) / n,
        n=n,
        predictions=torch.cat(preds) if keep_outputs else None,
        probabilities=torch.cat(probs) if keep_outputs else None,
    )


# ----------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    run_dir: Path | None
    history: list[dict]
    final: EvalResult
    best_accuracy: float
    parameters: int
    train_seconds: float
    model: nn.Module = field(repr=False)


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
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.dataset``; write the run folder unless ``write`` is False."""
    state = None
    if resume is not None:
        ckpt_path = resolve_checkpoint(resume, "last")
        state = load_checkpoint(ckpt_path)
        saved = TrainConfig.from_dict(state["config"])
        # What the run is comes from the checkpoint; how this invocation runs it comes from ``cfg``:
        # the step limit, the device and the threads belong to the process, not to the run.
        saved.max_steps, saved.device, saved.threads = cfg.max_steps, cfg.device, cfg.threads
        cfg = saved
        out = Path(resume) if Path(resume).is_dir() else ckpt_path.parent
    cfg.validate()
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)

    data = dataset or load_dataset(cfg.dataset, data_dir=cfg.data_dir)
    info = data.info()
    torch.manual_seed(cfg.seed)
    model, model_args = build_model(cfg.model, info)
    model.to(device)
    optimizer = build_optimizer(cfg, model.parameters())

    train_loader = BatchLoader(data.train_images, data.train_labels, cfg.batch_size, mean=data.mean, std=data.std,
                               shuffle=True, seed=cfg.seed, device=device)
    test_loader = BatchLoader(data.test_images, data.test_labels, cfg.eval_batch_size, mean=data.mean, std=data.std,
                              shuffle=False, device=device)

    history: list[dict] = []
    epoch, batch, step = 0, 0, 0
    best = -math.inf
    sums = [0.0, 0, 0]  # loss sum, correct, count of the current (partial) epoch
    elapsed = 0.0  # training seconds of the current epoch before a resume
    if state is not None:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        prog = state["progress"]
        epoch, batch, step = prog["epoch"], prog["batch"], prog["step"]
        sums = list(prog["sums"])
        elapsed = prog.get("elapsed", 0.0)
        history = list(state["history"])
        best = state["best_accuracy"]
        torch.set_rng_state(state["rng"]["torch"])
        log(f"resuming {out} at epoch {epoch + 1}, batch {batch} (step {step})")

    run_dir = None
    if write:
        run_dir = Path(out) if out else new_run_dir(runs_root, cfg.model, data.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", {"config": cfg.to_dict(), "model_args": model_args, "data": info})

    params = count_parameters(model)
    if state is None:
        log(f"{cfg.model}: {params:,} parameters | {data.name}: {info['train_size']:,} train / "
            f"{info['test_size']:,} test from {data.source} | device {device}"
            + (f" | run {run_dir}" if run_dir else ""))

    def payload(elapsed_s: float = 0.0) -> dict:
        return {
            "model": {"name": cfg.model, "args": model_args},
            "config": cfg.to_dict(),
            "data": info,
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "progress": {"epoch": epoch, "batch": batch, "step": step, "sums": list(sums), "elapsed": elapsed_s},
            "history": history,
            "best_accuracy": best,
            "rng": {"torch": torch.get_rng_state()},
        }

    stop = False
    total_train_s = sum(r["seconds"] for r in history)
    final = None
    model.train()
    while epoch < cfg.epochs and not stop:
        steps_in_epoch = len(train_loader)
        bar = tqdm(total=steps_in_epoch, initial=batch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=quiet or not sys.stderr.isatty(), unit="batch", dynamic_ncols=True)
        loss_sum = torch.tensor(sums[0], dtype=torch.float64, device=device)
        correct = torch.tensor(sums[1], dtype=torch.int64, device=device)
        count = sums[2]
        t0 = time.perf_counter()
        for x, y in train_loader.batches(epoch, start=batch):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
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
            if write and cfg.save_every and step % cfg.save_every == 0 and batch < steps_in_epoch:
                sums = [float(loss_sum), int(correct), count]
                save_checkpoint(run_dir / "last.pt", payload(elapsed + time.perf_counter() - t0))
            if stop:
                break
        bar.close()
        seconds = elapsed + time.perf_counter() - t0
        final = evaluate(model, test_loader, limit=cfg.eval_limit)
        if stop and batch < steps_in_epoch:
            # stopped by --max-steps mid-epoch: like an interruption, keep the position to resume from
            log(f"stopped at step {step} (epoch {epoch + 1}, batch {batch}/{steps_in_epoch})  "
                f"test_loss {final.loss:.4f}  test_acc {final.accuracy:.2f}%")
            if write:
                sums = [float(loss_sum), int(correct), count]
                save_checkpoint(run_dir / "last.pt", payload(seconds))
            break
        elapsed = 0.0
        row = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": float(loss_sum) / max(count, 1),
            "train_acc": 100.0 * int(correct) / max(count, 1),
            "test_loss": final.loss,
            "test_acc": final.accuracy,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "images_per_s": count / seconds if seconds > 0 else 0.0,
        }
        history.append(row)
        total_train_s += seconds
        log(f"epoch {row['epoch']:>3}/{cfg.epochs}  train_loss {row['train_loss']:.4f}  "
            f"test_loss {row['test_loss']:.4f}  test_acc {row['test_acc']:.2f}%  "
            f"{seconds:6.1f}s  {row['images_per_s']:,.0f} img/s")
        epoch += 1
        batch = 0
        sums = [0.0, 0, 0]
        improved = final.accuracy > best
        best = max(best, final.accuracy)
        if write:
            write_metrics(run_dir / "metrics.csv", history)
            save_checkpoint(run_dir / "last.pt", payload())
            if improved:
                save_checkpoint(run_dir / "best.pt", payload())

    if final is None:  # resumed a run that had already finished
        final = evaluate(model, test_loader, limit=cfg.eval_limit)
    return TrainResult(run_dir, history, final, best, params, total_train_s, model)


# ----------------------------------------------------------------------------- evaluation entry point


def model_from_checkpoint(state: dict) -> nn.Module:
    model = create_model(state["model"]["name"], **state["model"]["args"])
    try:
        model.load_state_dict(state["state_dict"], strict=True)
    except RuntimeError as err:
        raise CnnlabError(f"checkpoint weights do not fit model {state['model']['name']!r}: {str(err).splitlines()[0]}") from None
    return model


def evaluate_run(
    path: str | Path | None = None,
    *,
    which: str = "last",
    weights: str | Path | None = None,
    model_name: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    batch_size: int = 1000,
    keep_outputs: bool = False,
) -> tuple[EvalResult, nn.Module, Dataset]:
    """Evaluate a run's checkpoint, or a bare ``state_dict`` file (``weights``) for ``model_name``."""
    from cnnlab.checkpoint import load_state_dict_file

    dev = resolve_device(device)
    if weights is not None:
        if model_name is None:
            raise CnnlabError("--weights needs --model NAME to know which net the state_dict belongs to")
        data = load_dataset(dataset or "mnist", data_dir=data_dir)
        model, _ = build_model(model_name, data.info())
        sd = load_state_dict_file(weights)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as err:
            raise CnnlabError(f"{weights}: weights do not fit model {model_name!r}: {str(err).splitlines()[0]}; "
                              "pick the --model they were trained as") from None
    else:
        if path is None:
            raise CnnlabError("give a run directory or checkpoint, or --weights FILE --model NAME")
        state = load_checkpoint(resolve_checkpoint(path, which), expect_model=model_name)
        cfg = state["config"]
        data = load_dataset(dataset or cfg["dataset"], data_dir=data_dir or cfg.get("data_dir"))
        model = model_from_checkpoint(state)
    model.to(dev)
    loader = BatchLoader(data.test_images, data.test_labels, batch_size, mean=data.mean, std=data.std,
                         shuffle=False, device=dev)
    return evaluate(model, loader, keep_outputs=keep_outputs), model, data
