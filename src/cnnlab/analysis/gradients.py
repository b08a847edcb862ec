"""Do residual connections keep gradients alive in deep stacks?

For plain and residual conv stacks (``plain_stack``, ``residual_stack``) of the same width and of
several depths, on real batches of the dataset:

1. the gradient norm of every weight layer at initialisation, over several seeds (each seed draws
   new weights and a new batch), listed from the input (layer 1, the stem conv) to the output
   (the linear head);
2. the test accuracy after a short, fixed training budget (the lecture's optimiser: SGD, lr 0.01,
   momentum 0.5, batch 64), to show whether the deep plain stacks train at all.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.analysis._data import subset_loader
from cnnlab.config import RECIPES
from cnnlab.data import BatchLoader, load_dataset
from cnnlab.data.loader import batch_beyond
from cnnlab.devices import resolve_device
from cnnlab.errors import CnnlabError, printable
from cnnlab.evaluation import evaluate
from cnnlab.hostmem import keep_freed_memory
from cnnlab.models import create_model, seeded
from cnnlab.models.stacks import KINDS, NORMS
from cnnlab.optim import eager

DEFAULT_DEPTHS = (4, 8, 16, 32, 64)
#: The batch of the gradients and the budget unless one is given: the lecture's (``analyze gradients
#: --batch-size``'s default). A batch given above the train split is refused (:func:`cnnlab.data.loader.batch_beyond`);
#: this one, above a small split, takes it whole.
DEFAULT_BATCH = RECIPES["lecture"]["batch_size"]
#: The deepest stack measured: memory for the backward pass grows with depth (about 3 MB a layer at the
#: default width and batch), and the lecture's point shows by 64.
MAX_DEPTH = 256
#: The most initialisations measured: each is a forward and backward pass of every stack, kept per layer in
#: gradients.json, and the mean, min and max over seeds settle long before (the default is 3).
MAX_SEEDS = 100
#: The longest training budget: passes over --train-images for every stack (the default is 1; the lecture's
#: point shows within a few, and a larger budget only runs for hours with nothing printed).
MAX_EPOCHS = 100


def parse_depths(text: str) -> list[int]:
    """``"4,8,16"`` -> ``[4, 8, 16]``; every depth must be a positive even number (two convs per residual block)."""
    try:
        depths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        depths = []
    if not depths or any(d < 2 or d % 2 for d in depths):
        raise CnnlabError(f"--depths must be comma-separated even numbers >= 2 (a residual block holds two convs), "
                          f"e.g. 4,8,16,32,64; got {text!r}")
    if max(depths) > MAX_DEPTH:
        raise CnnlabError(f"--depths at most {MAX_DEPTH} (the backward pass's memory grows with depth), got "
                          f"{max(depths)}; the default {','.join(map(str, DEFAULT_DEPTHS))} already shows the effect")
    return sorted(set(depths))


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weights of every Conv2d and Linear, in the order the modules were created (input to output)."""
    return [(f"{name}.weight", m.weight) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """L2 norm of d(mean cross-entropy)/d(weight) for each layer of :func:`weight_layers`, for one batch.

    The model runs in training mode (BatchNorm uses the batch's statistics), as on a first training step.
    """
    was_training = model.training
    model.train()
    layers = weight_layers(model)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    norms = [float(p.grad.norm()) if p.grad is not None else 0.0 for _, p in layers]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return norms


def build_stack(kind: str, depth: int, width: int, norm: str, data) -> nn.Module:
    return create_model(f"{kind}_stack", depth=depth, width=width, norm=norm, in_channels=data.in_channels,
                        num_classes=data.num_classes, image_size=data.image_size)


def init_gradients(kind: str, depth: int, width: int, norm: str, seeds: list[int], data, batch_size: int,
                   device: torch.device) -> tuple[list[str], list[list[float]]]:
    """Per seed, a freshly initialised stack and a random train batch: each layer's gradient norm."""
    rows = []
    names: list[str] = []
    for seed in seeds:
        with seeded(seed):
            model = build_stack(kind, depth, width, norm, data)
        model.to(device)
        loader = subset_loader(data.train_images, data.train_labels, batch_size, (data.mean, data.std), device,
                               limit=batch_size, subset_seed=10_000 + seed)
        x, y = next(iter(loader))
        rows.append(gradient_norms(model, x, y))
        names = [n for n, _ in weight_layers(model)]
    return names, rows


def budget_loaders(data, *, train_images: int, test_images: int, batch_size: int, seed: int,
                   device: torch.device) -> tuple[BatchLoader, BatchLoader]:
    """The budget's train subset (shuffled per epoch) and test subset: built once, the same for every stack."""
    norm = (data.mean, data.std)  # nets trained here, on this data
    train = subset_loader(data.train_images, data.train_labels, batch_size, norm, device, limit=train_images,
                          subset_seed=0, shuffle=True, seed=seed)
    test = subset_loader(data.test_images, data.test_labels, 1000, norm, device, limit=test_images, subset_seed=1)
    return train, test


def train_budget(model: nn.Module, train_loader: BatchLoader, test_loader: BatchLoader, *, epochs: int, lr: float,
                 momentum: float) -> dict:
    """Train ``model`` for ``epochs`` passes over ``train_loader``; test accuracy and loss after."""
    opt = eager(torch.optim.SGD)(model.parameters(), lr=lr, momentum=momentum)  # torch's SGD, without torch._dynamo
    model.train()
    t0 = time.perf_counter()
    steps, diverged = 0, False
    last_losses: list[float] = []
    for epoch in range(epochs):
        for x, y in train_loader.batches(epoch):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if steps % 20 == 0 or steps <= 1:
                value = float(loss.detach())
                last_losses = (last_losses + [value])[-5:]
                if not math.isfinite(value):
                    diverged = True
                    break
        if diverged:
            break
    seconds = time.perf_counter() - t0
    res = evaluate(model, test_loader)
    # the loss is read every 20 steps: a budget that ends between reads (10 steps) diverged without a mark
    diverged = diverged or (steps > 0 and not math.isfinite(float(loss.detach()))) or not math.isfinite(res.loss)
    return {"test_accuracy": res.accuracy, "test_loss": res.loss if math.isfinite(res.loss) else None,
            "test_images": res.n, "steps": steps, "train_images": len(train_loader.labels), "epochs": epochs,
            "diverged": diverged, "last_train_loss": last_losses[-1] if last_losses else None, "seconds": seconds}


def analyze_gradients(
    depths: list[int] | tuple[int, ...] = DEFAULT_DEPTHS,
    *,
    width: int = 8,
    norm: str = "none",
    seeds: int = 3,
    batch_size: int = DEFAULT_BATCH,
    train_images: int = 6400,
    epochs: int = 1,
    test_images: int = 10_000,
    lr: float = 0.01,
    momentum: float = 0.5,
    dataset: str = "mnist",
    data_dir: str | None = None,
    device: str = "auto",
    data=None,
    log: Callable[[str], None] = lambda msg: None,
    ready: Callable[[], None] = lambda: None,
) -> dict:
    """Gradient norms at initialisation and accuracy after a short budget, for plain and residual stacks.
    ``ready()`` is called once the arguments are checked and the data and device found, before the measuring: what a
    refusal must not do (a lock file in the output folder) goes there."""
    depths = list(depths)
    _check_gradient_arguments(depths, norm=norm, width=width, seeds=seeds, batch_size=batch_size,
                              train_images=train_images, epochs=epochs, test_images=test_images, lr=lr,
                              momentum=momentum)
    keep_freed_memory()  # it trains: the engine's allocator setting (cnnlab.hostmem)
    dev = resolve_device(device)
    data = data or load_dataset(dataset, data_dir=data_dir)
    if batch_size != DEFAULT_BATCH and (refusal := batch_beyond(batch_size, len(data.train_labels))) is not None:
        raise CnnlabError(refusal)  # as training says it: each batch would be the whole split
    seed_list = list(range(seeds))
    train_loader, test_loader = budget_loaders(data, train_images=train_images, test_images=test_images,
                                               batch_size=batch_size, seed=seed_list[0], device=dev)
    ready()
    t0 = time.perf_counter()
    stacks = []
    for depth in depths:
        for kind in KINDS:
            t1 = time.perf_counter()
            entry = measure_stack(kind, depth, width, norm, seed_list, data, batch_size, dev)
            if epochs > 0:
                with seeded(seed_list[0]):
                    model = build_stack(kind, depth, width, norm, data)
                model.to(dev)
                entry["training"] = train_budget(model, train_loader, test_loader, epochs=epochs, lr=lr,
                                                 momentum=momentum)
            trained = entry["training"]
            log(f"{kind:>8} depth {depth:>3}: first-layer grad norm {entry['first_layer_grad_norm']:.3g}, "
                f"last-layer {entry['last_layer_grad_norm']:.3g}"
                + (f"; after the budget test accuracy {trained['test_accuracy']:.2f}%" if trained else "")
                + f"  ({time.perf_counter() - t1:.0f}s)")
            stacks.append(entry)
    n_train, n_test = len(train_loader.labels), len(test_loader.labels)
    return {
        "dataset": data.name,
        "num_classes": data.num_classes,  # where chance lies (depth.png)
        "width": width,
        "norm": norm,
        "depths": depths,
        "seeds": seed_list,
        "batch_size": min(batch_size, len(data.train_labels)),  # the batches used: no larger than their split
        "budget": {"epochs": epochs, "train_images": n_train, "test_images": n_test, "optimizer": "sgd",
                   "lr": lr, "momentum": momentum, "batch_size": min(batch_size, n_train), "seed": seed_list[0]},
        "depth_is": "number of 3x3 convs in the body; each stack also has a 5x5 stem conv and a linear head",
        "grad_norm_is": "L2 norm of d(mean cross-entropy)/d(weight) at initialisation on one train batch, "
                        "mean over seeds (each seed: new weights and a new batch)",
        "device": str(dev),
        "seconds": time.perf_counter() - t0,
        "stacks": stacks,
    }


def _check_gradient_arguments(depths: list[int], *, norm: str, width: int, seeds: int, batch_size: int,
                              train_images: int, epochs: int, test_images: int, lr: float,
                              momentum: float) -> None:
    if not depths or any(d < 2 or d % 2 for d in depths):
        raise CnnlabError(f"depths must be even numbers >= 2 (a residual block holds two convs), got {depths}")
    checks = [
        (norm in NORMS, f"--norm must be one of {', '.join(NORMS)}, got {norm!r}"),
        (width >= 1, f"--width must be at least 1, got {width}"),
        (1 <= seeds <= MAX_SEEDS, f"--seeds must be in 1..{MAX_SEEDS} (each is a pass of every stack, kept in "
                                  f"gradients.json), got {seeds}"),
        (batch_size >= 1, f"--batch-size must be at least 1, got {batch_size}"),
        (train_images >= 0, f"--train-images must be >= 0 (0: the whole train split), got {train_images}"),
        (0 <= epochs <= MAX_EPOCHS, f"--epochs must be in 0..{MAX_EPOCHS} (0: measure gradients only; each epoch "
                                    f"trains every stack, and a few already show the effect), got {epochs}"),
        (test_images >= 0, f"--test-images must be >= 0 (0: the whole test split), got {test_images}"),
        (0 < lr < math.inf, f"--lr must be a positive finite number, got {lr}"),  # -1: torch's ValueError, nan: garbage
        (0 <= momentum < 1, f"--momentum must be in [0, 1), got {momentum}"),
    ]
    for ok, message in checks:
        if not ok:
            raise CnnlabError(message)


def measure_stack(kind: str, depth: int, width: int, norm: str, seeds: list[int], data, batch_size: int,
                  device: torch.device) -> dict:
    """One stack's entry: every layer's gradient norm at initialisation per seed, with mean, min and max
    over seeds; ``"training"`` is left ``None`` for the budget to fill."""
    names, rows = init_gradients(kind, depth, width, norm, seeds, data, batch_size, device)
    per_layer = torch.tensor(rows, dtype=torch.float64)  # (seeds, layers)
    return {
        "kind": kind,
        "depth": depth,
        "layers": names,
        "grad_norms": rows,  # [seed][layer]
        "grad_norm_mean": per_layer.mean(0).tolist(),
        "grad_norm_min": per_layer.min(0).values.tolist(),
        "grad_norm_max": per_layer.max(0).values.tolist(),
        "first_layer_grad_norm": float(per_layer[:, 0].mean()),
        "last_layer_grad_norm": float(per_layer[:, -1].mean()),
        "training": None,
    }


def format_gradients(result: dict) -> str:
    """The printed table: one row per depth, plain next to residual."""
    b = result["budget"]
    by = {(s["kind"], s["depth"]): s for s in result["stacks"]}
    trained = b["epochs"] > 0
    budget = (f"{b['epochs']} epoch(s) over {b['train_images']:,} train images, SGD lr {b['lr']} momentum "
              f"{b['momentum']}, batch {b['batch_size']}, seed {b['seed']}; tested on {b['test_images']:,} test images"
              if trained else "no training (--epochs 0)")
    lines = [
        printable(f"{result['dataset']}: width {result['width']}, norm {result['norm']}, gradient norms at init "
                  f"over seeds {result['seeds']} (batch {result['batch_size']}); budget: {budget}"),
        "",
        f"{'depth':>5}  {'first-layer grad norm':>23}  {'last-layer grad norm':>23}"
        + (f"  {'test acc after budget':>23}" if trained else ""),
        f"{'':>5}  {'plain':>11} {'residual':>11}  {'plain':>11} {'residual':>11}"
        + (f"  {'plain':>11} {'residual':>11}" if trained else ""),
    ]
    for d in result["depths"]:
        p, r = by[("plain", d)], by[("residual", d)]
        row = (f"{d:>5}  {p['first_layer_grad_norm']:>11.3g} {r['first_layer_grad_norm']:>11.3g}  "
               f"{p['last_layer_grad_norm']:>11.3g} {r['last_layer_grad_norm']:>11.3g}")
        if trained:
            acc = []
            for s in (p, r):
                t = s["training"]
                acc.append(f"{t['test_accuracy']:>10.2f}%" + ("!" if t["diverged"] else ""))
            row += "  " + " ".join(f"{a:>11}" for a in acc)
        lines.append(row)
    lines.append("")
    lines.append("first layer: the stem conv (nearest the input); last layer: the linear head"
                 + ("; '!' marks a run whose loss became NaN/inf" if trained else ""))
    return "\n".join(lines)
