"""Which branches of an Inception module does a trained net rely on?

For every :class:`~cnnlab.models.InceptionModule` in a model, and each of its four branches
(``pool``, ``1x1``, ``5x5``, ``3x3``, the stable names of :data:`~cnnlab.models.inception.BRANCH_CHANNELS`):

- test accuracy and loss with the branch's output **zeroed**, and with it replaced by its **mean**
  activation over (part of) the training set, per channel. Zeroing removes both the information a
  branch carries and the constant offset it adds to the next layer's input; mean ablation removes
  only the information. A branch whose zeroing hurts but whose mean ablation does not mostly shifts
  the input rather than telling digits apart.
- the share of the next layer's squared weight norm that reads the branch's channels;
- the branch's mean activation energy (mean of the squared output) on the test set, per class.

The model's code is untouched: everything is done with forward hooks on the modules' outputs, which
are removed on leaving each context manager, even after an error.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.analysis._data import subset_loader
from cnnlab.devices import resolve_device
from cnnlab.errors import CnnlabError, printable
from cnnlab.evaluation import Subject, evaluate, open_subject
from cnnlab.fileio import exists
from cnnlab.hostmem import keep_freed_memory
from cnnlab.models.inception import BRANCH_CHANNELS, InceptionModule
from cnnlab.text import display_width, pad

BRANCHES: tuple[str, ...] = tuple(BRANCH_CHANNELS)  # ('pool', '1x1', '5x5', '3x3'), concatenation order
MODULE_CHANNELS = InceptionModule.out_channels  # 88


def branch_slices() -> dict[str, slice]:
    """Each branch's channels in the module's concatenated output: pool 0:24, 1x1 24:40, 5x5 40:64, 3x3 64:88."""
    out, start = {}, 0
    for name, channels in BRANCH_CHANNELS.items():
        out[name] = slice(start, start + channels)
        start += channels
    return out


def inception_modules(model: nn.Module) -> dict[str, InceptionModule]:
    """The model's Inception modules by qualified name (``incept1``, ``incept2``), in registration
    order; empty if it has none. The analysis and the web app both use this one."""
    return {name: m for name, m in model.named_modules() if isinstance(m, InceptionModule)}


def _module(model: nn.Module, name: str) -> InceptionModule:
    found = dict(model.named_modules()).get(name)
    if not isinstance(found, InceptionModule):
        names = ", ".join(inception_modules(model)) or "none"
        raise CnnlabError(f"{name!r} is not an InceptionModule of this model; its Inception modules are: {names}")
    return found


def _check_output(name: str, out: torch.Tensor) -> None:
    if out.ndim != 4 or out.shape[1] != MODULE_CHANNELS:
        raise CnnlabError(f"{name}: expected a (B, {MODULE_CHANNELS}, H, W) output, got {tuple(out.shape)}; "
                          "this module does not concatenate the four branches as InceptionModule does")


# ----------------------------------------------------------------------------- hooks


@contextmanager
def ablate_branch(model: nn.Module, module: str, branch: str, fill: torch.Tensor | None = None) -> Iterator[None]:
    """Within the block, ``module``'s ``branch`` outputs zeros (``fill=None``) or a per-channel constant.

    ``fill``: a (channels of the branch,) tensor, e.g. the branch's mean activation per channel.
    """
    target = _module(model, module)
    if branch not in BRANCH_CHANNELS:
        raise CnnlabError(f"unknown branch {branch!r}; choose one of: {', '.join(BRANCHES)}")
    s = branch_slices()[branch]
    if fill is not None and fill.shape != (BRANCH_CHANNELS[branch],):
        raise ValueError(f"fill for branch {branch!r} must have shape ({BRANCH_CHANNELS[branch]},), got {tuple(fill.shape)}")

    def hook(_mod, _inputs, out):
        _check_output(module, out)
        out = out.clone()  # never write into a tensor that autograd or the caller may hold
        if fill is None:
            out[:, s] = 0
        else:
            out[:, s] = fill.to(device=out.device, dtype=out.dtype).view(1, -1, 1, 1)
        return out

    handle = target.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def watch_outputs(model: nn.Module, modules: list[str], fn: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
    """Call ``fn(name, output)`` after each forward of the named modules, without changing the output."""
    def make_hook(name):
        def hook(_mod, _inputs, out):
            fn(name, out)  # returns None: a forward hook that returns a value would replace the output

        return hook

    handles = []
    try:
        for name in modules:
            handles.append(_module(model, name).register_forward_hook(make_hook(name)))
        yield
    finally:
        for h in handles:
            h.remove()


# ----------------------------------------------------------------------------- measurements


def channel_means(model: nn.Module, batches, modules: list[str]) -> dict[str, torch.Tensor]:
    """Mean activation of each output channel of each module over all images and positions: (88,) each."""
    sums = {m: torch.zeros(MODULE_CHANNELS, dtype=torch.float64) for m in modules}
    counts = dict.fromkeys(modules, 0)

    def fn(name, out):
        _check_output(name, out)
        sums[name] += out.double().sum(dim=(0, 2, 3)).cpu()
        counts[name] += out.shape[0] * out.shape[2] * out.shape[3]

    was_training = model.training
    model.eval()
    with torch.inference_mode(), watch_outputs(model, modules, fn):
        for x, _ in batches:
            model(x)
    model.train(was_training)
    if not all(counts.values()):
        raise CnnlabError("no training images to compute mean activations from; use a larger --train-images")
    return {m: (sums[m] / counts[m]).float() for m in modules}


def class_energy(model: nn.Module, batches, modules: list[str], num_classes: int) -> tuple[dict, dict]:
    """Each branch's mean squared activation per class, and the un-ablated test loss and accuracy.

    Returns ``({module: {branch: (classes,) tensor}}, {"loss", "accuracy", "n"})``. Per image the energy is
    the mean over the branch's channels and positions of the squared output; classes average their images, and a
    class without test images (a small ``--test-images``) is NaN, not 0.
    """
    slices = branch_slices()
    energy = {m: {b: torch.zeros(num_classes, dtype=torch.float64) for b in BRANCHES} for m in modules}
    per_class = torch.zeros(num_classes, dtype=torch.float64)
    labels: list[torch.Tensor] = []

    def fn(name, out):
        _check_output(name, out)
        y = labels[0]
        for b, s in slices.items():
            e = out[:, s].double().pow(2).mean(dim=(1, 2, 3)).cpu()  # (B,)
            energy[name][b].index_add_(0, y, e)

    loss_sum, correct, n = 0.0, 0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode(), watch_outputs(model, modules, fn):
        for x, y in batches:
            labels[:] = [y.cpu()]
            logits = model(x).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
            per_class.index_add_(0, y.cpu(), torch.ones(len(y), dtype=torch.float64))
    model.train(was_training)
    if n == 0:
        raise CnnlabError("the test split is empty; nothing to measure")
    seen = per_class > 0
    mean_energy = {m: {b: torch.where(seen, energy[m][b] / per_class.clamp(min=1), math.nan).float() for b in BRANCHES}
                   for m in modules}
    return mean_energy, {"loss": loss_sum / n, "accuracy": 100.0 * correct / n, "n": n}


def next_layer_readers(model: nn.Module, x: torch.Tensor, modules: list[str],
                       shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, tuple[str, nn.Module] | None]:
    """For each Inception module, the first Conv2d or Linear that reads its output directly.

    Found by running ``x`` and matching tensors: the reader's input must be the module's output or a
    view of it (a flatten), holding exactly its elements. ``None`` when its output goes through other
    operations first (then there is no single weight matrix whose columns belong to the branches).
    ``shapes``, when given, receives each module's output shape from the same pass.
    """
    events: list[tuple[str, str, torch.Tensor]] = []
    outputs: dict[str, torch.Tensor] = {}
    weight_modules = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    handles = []

    def on_output(name, out):
        outputs.setdefault(name, out)  # kept alive, so its storage is not reused during the pass
        events.append(("out", name, out))

    def on_input(name):
        def pre(_m, inputs):
            events.append(("in", name, inputs[0]))
        return pre

    was_training = model.training
    model.eval()
    try:
        for name, m in weight_modules.items():
            handles.append(m.register_forward_pre_hook(on_input(name)))
        with torch.inference_mode(), watch_outputs(model, modules, on_output):
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    if shapes is not None:
        shapes.update({name: tuple(out.shape) for name, out in outputs.items()})
    readers: dict[str, tuple[str, nn.Module] | None] = {}
    for mod in modules:
        readers[mod] = None
        out = outputs.get(mod)
        if out is None:
            continue
        start = next(i for i, e in enumerate(events) if e[0] == "out" and e[1] == mod)
        for kind, name, t in events[start + 1:]:
            if kind != "in" or name.startswith(mod + "."):
                continue
            same = (t.untyped_storage().data_ptr() == out.untyped_storage().data_ptr()
                    and t.numel() == out.numel())
            if same:
                readers[mod] = (name, weight_modules[name])
            break  # only the first weight layer after the module can read it directly
    return readers


def weight_share(reader: nn.Module, out_shape: tuple[int, ...]) -> dict[str, float] | None:
    """Share of ``reader``'s squared weight norm on each branch's channels (the shares add up to 1).

    Conv2d: weight (O, 88, k, k), channel c is ``weight[:, c]``. Linear after a flatten of (B, 88, H, W):
    feature ``c*H*W + h*W + w`` comes from channel c, so the weight reshapes to (O, 88, H*W).
    """
    w = reader.weight.detach().double()
    if isinstance(reader, nn.Conv2d) and reader.groups == 1 and w.shape[1] == MODULE_CHANNELS:
        per_channel = w.pow(2).sum(dim=(0, 2, 3))  # (88,)
    elif isinstance(reader, nn.Linear) and w.shape[1] == MODULE_CHANNELS * out_shape[2] * out_shape[3]:
        per_channel = w.view(w.shape[0], MODULE_CHANNELS, -1).pow(2).sum(dim=(0, 2))  # (88,)
    else:
        return None
    total = per_channel.sum()
    return {b: float(per_channel[s].sum() / total) for b, s in branch_slices().items()}


def analyze_branches(
    run: str | Path | None = None,
    *,
    pretrained: str | None = None,
    which: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    train_images: int = 10_000,
    test_images: int = 0,
    device: str = "auto",
    batch_size: int = 1000,
    log: Callable[[str], None] = lambda msg: None,
    ready: Callable[[Subject], None] = lambda subject: None,
    warn: Callable[[str], None] = lambda msg: None,
) -> dict:
    """All the branch measurements for the run (directory or checkpoint) ``run``, or for the shipped weights of
    the Inception model ``pretrained`` (on ``dataset``: mnist unless given), as a JSON-ready dict; on a fixed
    random subset of ``test_images`` test images (0: all). ``ready(subject)`` is called once the input is known to be
    an Inception net, its data and device found, before the measuring: what a refusal must not do goes there; the
    subject's ``not_own`` says why the measurement is not the run's own ("" when it is: then its files go into the
    run's folder), as the result's ``not_own`` does, its ``data`` and ``trained_on`` the datasets it reads and its net
    trained on.
    ``warn`` gets the warning ``evaluate`` gives too, before the measuring: a net scored on another dataset's
    classes (:func:`cnnlab.evaluation.other_classes`)."""
    _check_branch_arguments(run, pretrained, train_images, test_images)
    keep_freed_memory()  # 16 ablated test passes and more: 1.3x quicker with it (docs/speed.md)
    t0 = time.perf_counter()
    subject = open_subject(run, which=which, pretrained=pretrained, dataset=dataset, data_dir=data_dir)
    model, model_name, data, ckpt = subject.model, subject.model_name, subject.data, subject.source
    modules = list(inception_modules(model))
    if not modules:
        raise CnnlabError(f"{run or pretrained}: model {model_name!r} has no InceptionModule; analyze branches needs "
                          "an Inception model (a run of 'cnnlab train --model inception', or --pretrained inception)")
    dev = resolve_device(device)
    if subject.warning:
        warn(subject.warning)
    ready(subject)
    model.to(dev).eval()  # in the memory format it was built in (every earlier analysis's numbers, to the bit)
    norm = subject.normalisation  # the net's own, as evaluate's: not the evaluated dataset's (they differ on others)
    train_loader = subset_loader(data.train_images, data.train_labels, batch_size, norm, dev, limit=train_images)
    test_loader = subset_loader(data.test_images, data.test_labels, batch_size, norm, dev, limit=test_images)
    n_train = len(train_loader.labels)
    at = f" (step {subject.step})" if subject.step is not None else ""
    log(printable(f"{model_name} from {ckpt}{at}: Inception modules {', '.join(modules)}; "  # names escaped: one line
                  f"means from {n_train:,} train images, tests on {len(test_loader.labels):,} test images"))

    means = channel_means(model, train_loader.batches(0), modules)
    energy, base = class_energy(model, test_loader.batches(0), modules, data.num_classes)
    probe = test_loader.normalise(data.test_images[:2].to(dev))
    shapes: dict[str, tuple] = {}
    readers = next_layer_readers(model, probe, modules, shapes)
    result_modules = [_module_result(model, mod, test_loader, means[mod], energy[mod], readers[mod], shapes[mod], log)
                      for mod in modules]
    return {
        "run": str(run) if run is not None else ckpt,
        "checkpoint": str(ckpt),
        # which weights were measured: a resume of the run later changes its last.pt, not this file
        "checkpoint_step": subject.step,
        "checkpoint_sha256": subject.digest or None,
        # where the weights came from, as evaluate's figures name it: {"run": "r", "checkpoint": "best.pt"}, the shipped
        # weights, a file of no run's (branches.png shows it under its title)
        "origin": subject.origin,
        "model": model_name,
        "dataset": data.name,
        "classes": list(data.classes),
        "baseline": {"accuracy": base["accuracy"], "loss": base["loss"]},
        "test_images": base["n"],
        "mean_from_train_images": n_train,
        "share_is": "share of the next layer's squared weight norm (Frobenius) on the branch's channels",
        "energy_is": "mean over the branch's channels and positions of the squared output, averaged per class",
        "seconds": time.perf_counter() - t0,
        "modules": result_modules,
        # why these are not the run's own figures (best.pt, another dataset, a run still training): then the
        # command writes nothing into the run's folder; the command line drops this key from branches.json
        "not_own": subject.not_own,
    }


def _check_branch_arguments(run: str | Path | None, pretrained: str | None, train_images: int,
                            test_images: int = 0) -> None:
    if (run is None) == (pretrained is None):
        raise CnnlabError("give one of a run of an Inception model (RUN) or --pretrained inception" +
                          ("" if run is None else f", not both (got {run} and --pretrained {pretrained})"))
    if run is not None and not exists(run):  # a loop of links: its own line (fileio.symlink_loop)
        raise CnnlabError(f"{run}: no such run directory; pass a directory written by 'cnnlab train' (it holds last.pt), "
                          "or --pretrained inception for the shipped weights")
    if train_images < 0:
        raise CnnlabError(f"--train-images must be >= 0 (0: the whole train split), got {train_images}")
    if test_images < 0:
        raise CnnlabError(f"--test-images must be >= 0 (0: the whole test split), got {test_images}")


def _module_result(model: nn.Module, mod: str, test_loader, means: torch.Tensor, energy: dict[str, torch.Tensor],
                   reader: tuple[str, nn.Module] | None, shape: tuple[int, ...], log: Callable[[str], None]) -> dict:
    """One module's entry: per branch, the test scores with the branch zeroed and mean-ablated, the next
    layer's weight share and the energy; ``means`` is the module's (88,) channel means."""
    shares = weight_share(reader[1], shape) if reader else None
    slices = branch_slices()
    rows = []
    for b in BRANCHES:
        scores = {}
        for mode, fill in (("zero", None), ("mean", means[slices[b]])):
            with ablate_branch(model, mod, b, fill):
                r = evaluate(model, test_loader)
            scores[mode] = {"accuracy": r.accuracy, "loss": r.loss}
        per_class = energy[b]
        rows.append({
            "branch": b,
            "channels": BRANCH_CHANNELS[b],
            "zero": scores["zero"],
            "mean": scores["mean"],
            "next_layer_share": shares[b] if shares else None,
            "uniform_share": BRANCH_CHANNELS[b] / MODULE_CHANNELS,
            "energy": float(per_class.nanmean()),  # over the classes with test images
            "energy_per_class": [None if math.isnan(v) else float(v) for v in per_class.tolist()],  # None: no images
        })
        log(f"  {mod}/{b}: zeroed {scores['zero']['accuracy']:.2f}%  mean-ablated {scores['mean']['accuracy']:.2f}%")
    return {"name": mod, "output_shape": list(shape[1:]), "next_layer": reader[0] if reader else None, "branches": rows}


def format_branches(result: dict) -> str:
    """The printed table."""
    base = result["baseline"]
    lines = [
        printable(f"{result['model']} ({result['checkpoint']}) on {result['dataset']}: baseline test accuracy "
                  f"{base['accuracy']:.2f}%, loss {base['loss']:.4f} ({result['test_images']:,} test images; "
                  f"mean ablation uses means over {result['mean_from_train_images']:,} train images)"),
        "",
        f"{'module':<8} {'branch':<6} {'ch':>3}  {'zeroed acc':>10} {'(change)':>8} {'loss':>7}  "
        f"{'mean-abl acc':>12} {'(change)':>8} {'loss':>7}  {'next layer':>10} {'share':>6} {'(even)':>6}  {'energy':>8}",
    ]
    for mod in result["modules"]:
        for r in mod["branches"]:
            z, m = r["zero"], r["mean"]
            share = f"{100 * r['next_layer_share']:5.1f}%" if r["next_layer_share"] is not None else "   n/a"
            lines.append(
                f"{mod['name']:<8} {r['branch']:<6} {r['channels']:>3}  {z['accuracy']:>9.2f}% "
                f"{z['accuracy'] - base['accuracy']:>+8.2f} {z['loss']:>7.4f}  {m['accuracy']:>11.2f}% "
                f"{m['accuracy'] - base['accuracy']:>+8.2f} {m['loss']:>7.4f}  {mod['next_layer'] or '-':>10} "
                f"{share} {100 * r['uniform_share']:5.1f}%  {energy_text(r['energy']):>8}"
            )
    lines.append("")
    lines.append("share: of the next layer's squared weight norm on the branch's channels; (even): the share "
                 "if every channel weighed the same")
    lines.append("per-class energy (mean squared branch output on test images of each class):")
    # names whole (cut to 6 characters, class_cat and class_dog were both 'class_'), each column as wide as its
    # name on a terminal (a wide 中 takes two columns) or its numbers
    classes = [printable(c) for c in result["classes"]]
    rows = [(mod["name"], r["branch"], ["-" if v is None else energy_text(v) for v in r["energy_per_class"]])
            for mod in result["modules"] for r in mod["branches"]]
    widths = [max(6, display_width(c), *(len(cells[k]) for *_, cells in rows)) for k, c in enumerate(classes)]
    lines.append(f"{'module':<8} {'branch':<6} " + " ".join(pad(c, w, right=True) for c, w in zip(classes, widths)))
    for name, branch, cells in rows:
        lines.append(f"{name:<8} {branch:<6} " + " ".join(f"{t:>{w}}" for t, w in zip(cells, widths)))
    return "\n".join(lines)


def energy_text(value: float) -> str:
    """An energy as the table prints it: 3 decimals from 0.01 up (0.428, 6.628), 3 significant digits below
    (0.000266, 2.66e-05), where 3 decimals printed a quiet branch's non-zero energy as 0.000, a silent one's reading;
    0 only for a measured 0."""
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:#.3g}"
