"""Export a trained run for use outside cnnlab: ONNX (checked with onnxruntime) or TorchScript.

Both exports take normalised ``(B, C, H, W)`` float32 images (``B`` free) and return logits
``(B, classes)``. The preprocessing the net expects (``cnnlab.predict``, then
``(x - mean) / std``) is recorded in the file: ONNX ``metadata_props``, TorchScript extra file
``cnnlab.json``; so is the checkpoint the weights came from (``checkpoint``, ``checkpoint_step``,
``checkpoint_epochs_done`` (whole epochs), ``checkpoint_position`` (``step 20, epoch 1, batch 20``, as the run's lines
say it), ``checkpoint_sha256``, and ``checkpoint_note`` when its run was still training; for the shipped
weights, the shipped file's name, the manifest's SHA-256 and ``pretrained``). Every export is checked before it is
moved into place: the exported model and PyTorch must give the same logits, within :data:`TOLERANCE` of their largest
magnitude (:func:`tolerance`), on a sample of the run's test images. A run still training is not exported into its
own folder or any folder inside it (only elsewhere, with ``--out``, and marked so); the last.pt of a run that
diverged is not exported at all.
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save as save_safetensors

from cnnlab import __version__
from cnnlab.checkpoint import (TrainState, load_checkpoint_and_digest, model_from_checkpoint, refuse_diverged,
                               resolve_checkpoint)
from cnnlab.data import load_dataset
from cnnlab.data.idxdir import transposed_on_loading
from cnnlab.dataset_names import dataset_kind, moved_away, paper_of
from cnnlab.errors import CnnlabError, first_line, shell_quoted
from cnnlab.evaluation import own_data_dir
from cnnlab.export_formats import CHECK_BATCH, FORMATS, SUFFIXES, TOLERANCE
from cnnlab.fileio import atomic_write_bytes, is_dir, lies_in
from cnnlab.pretrained import Pretrained, find_pretrained, load_pretrained, refuse_shipped
from cnnlab.runs import DEFAULT_CHECKPOINT, check_output_file, holder, is_run_dir, is_training, removed_if_unused

#: ONNX opset: 17 is read by every onnxruntime of the last years.
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "logits"


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float
    n_checked: int
    #: The sizes of the check's batches, each once (``(256, 44, 1)``: 300 images in batches of 256, the last of 44,
    #: and the first image alone).
    batch_sizes: tuple[int, ...]
    #: The largest difference accepted (:func:`tolerance`: relative to the logits' scale).
    limit: float = TOLERANCE


def export_metadata(state: dict) -> dict[str, str]:
    """What a user of the exported file needs to feed it: string keys and values (ONNX's rule)."""
    data = state["data"]
    return {
        "cnnlab_version": __version__,
        "model": state["model"]["name"],
        "classes": json.dumps([str(c) for c in data["classes"]]),
        "normalization_mean": repr(float(data["mean"])),
        "normalization_std": repr(float(data["std"])),
        "normalization": f"x = (pixel / 255 - {float(data['mean'])!r}) / {float(data['std'])!r}",
        "input_layout": input_layout(data),
        "output": "logits (batch, classes); softmax for probabilities",
        "dataset": str(data.get("name", "")),
    }


def input_layout(data: dict) -> str:
    """The input an exported net takes, prepared as its training images were, by its dataset's kind (a run's recorded
    ``data``): MNIST's digits (white ink on black, centred by mass in 20 px of 28), Fashion-MNIST's clothes (trimmed
    and fitted), an image folder's images as they are (grayscale, resized, not inverted, not centred: on the paper
    the training images had), an idx: dataset's as its files hold them, except EMNIST's (files named ``emnist-*``),
    whose images the files hold transposed and loading turned upright: the net reads upright images, as cnnlab's own
    :class:`~cnnlab.predict.Predictor` takes them, and the layout says to transpose the files' images (the graph does
    not: the exported net and the Predictor's read the same input). (All said "MNIST-style centred": an image
    folder's black letters on white, prepared so, read 9 of 48 right, prepared as the folder was, 47.)"""
    size = data["image_size"]
    shape = f"NCHW float32, (batch, {data['in_channels']}, {size}, {size}), normalised as 'normalization' says"
    name = str(data.get("name", ""))
    paper = f"{paper_of(data['mean'])} paper (the training images' mean {float(data['mean']):.3f})"
    if name == "fashion-mnist":
        how = ("one piece of clothing as Fashion-MNIST's images are: light on black, trimmed to the item and fitted "
               f"whole into the {size}x{size} field, not centred by mass (cnnlab.preprocessing.clothes_field)")
    elif dataset_kind(name) == "folder":
        how = (f"the image as the folder's images were converted: grayscale, resized to {size}x{size} (squashed, not "
               f"cropped), not inverted, not centred; the training images were on {paper} "
               "(cnnlab.data.folder.gray_square)")
    elif dataset_kind(name) == "idx" and transposed_on_loading(str(data.get("source", ""))):
        how = ("upright images, as cnnlab's Predictor takes them: the idx files (named emnist-*) hold each image "
               "transposed (its rows are the image's columns) and cnnlab transposed them on loading, so the net "
               "learned them upright; transpose an image of those files first (numpy: images.swapaxes(-1, -2)), "
               f"then pixel / 255, nothing else done; the training images were on {paper}")
    elif dataset_kind(name) == "idx":
        how = f"the images as the idx files hold them (pixel / 255, nothing else done); the training images were on " \
              f"{paper}"
    else:
        how = ("a digit as MNIST's are: white ink on black, its longer side scaled to 20 px of 28 and centred by its "
               "centre of mass (cnnlab.preprocessing.preprocess makes any digit image so)")
    return f"{shape}: {how}"


def checkpoint_metadata(ckpt: Path, state: dict, running: bool, digest: str) -> dict[str, str]:
    """Which weights an export holds: the checkpoint's file name, the run's step and epoch there, the SHA-256 of the
    very bytes loaded (``digest``: a save while the run trains cannot mix one version's hash with another's weights),
    and a note when the run was still training (its weights are mid-training)."""
    meta = {"checkpoint": ckpt.name, "checkpoint_sha256": digest}
    if "train_state" in state or "progress" in state:
        position = TrainState.from_checkpoint(state)
        at = (f"end of epoch {position.epoch}" if position.batch == 0 and position.epoch else
              f"epoch {position.epoch + 1}, batch {position.batch}")  # as the run's own lines say it
        meta.update(checkpoint_step=str(position.step), checkpoint_epochs_done=str(position.epoch),
                    checkpoint_position=f"step {position.step}, {at}")
    if running:
        meta["checkpoint_note"] = ("mid-training: the run was still training when this was exported, so these are "
                                   "not its final weights")
    return meta


def pretrained_metadata(entry: Pretrained) -> dict[str, str]:
    """Which weights an export of cnnlab's shipped weights holds, as :func:`checkpoint_metadata` says a run's: the
    shipped file's name and its SHA-256, the manifest's, which the file's bytes were checked against before they were
    loaded (the shipped files were rewritten once: their version matters), and how they were made."""
    return {"checkpoint": entry.file, "checkpoint_sha256": entry.sha256,
            "pretrained": f"cnnlab's shipped weights {entry.name} (its manifest: trained by '{entry.command}' with "
                          f"cnnlab {entry.cnnlab_version}, torch {entry.torch_version}; test accuracy "
                          f"{entry.test_accuracy:.2f}%)"}


def refuse_running(ckpt: Path, out: Path, default: bool, command: str) -> bool:
    """Whether ``ckpt``'s run is still training; an export into that run's folder (by default, or an --out anywhere
    inside it: a subfolder, through a link, with ``..``) is refused, naming ``--out FILE`` elsewhere."""
    folder = ckpt.parent
    if not (is_run_dir(folder) and is_training(folder)):
        return False
    if default or lies_in(out, folder):
        raise CnnlabError(f"{folder} is still training ({holder(folder)} holds it): nothing written into it; "
                          f"export it when it ends, or give --out FILE outside it to export its {ckpt.name} as it is "
                          f"now (e.g. cnnlab {command} {shell_quoted(str(folder))} --out {ckpt.stem}-mid{out.suffix or ''})")
    return True


def sample_inputs(state: dict, n: int, dataset: str | None = None, data_dir: str | None = None) -> torch.Tensor:
    """The first ``n`` test images of the run's dataset (or ``dataset``), normalised: ``(n, C, H, W)``."""
    cfg = state.get("config") or {}
    name = dataset or cfg.get("dataset") or state["data"].get("name")
    if not name:
        raise CnnlabError("the checkpoint records no dataset; pass --dataset to check the export on test images")
    if not dataset and (message := moved_away(name, "the run", "add {new}")):
        raise CnnlabError(message)
    data = load_dataset(name, data_dir=data_dir or own_data_dir(cfg, dataset))
    if (data.in_channels, data.image_size) != (state["data"]["in_channels"], state["data"]["image_size"]):
        raise CnnlabError(f"dataset {data.name} has {data.in_channels}x{data.image_size}x{data.image_size} images, "
                          "the net was trained on others; pass the run's own --dataset")
    x = data.test_images[:n].float().div_(255.0)  # (n, C, H, W) in 0..1
    mean, std = float(state["data"]["mean"]), float(state["data"]["std"])
    return (x - mean) / std


def onnx_packages():
    """The modules ``onnx`` and ``onnxruntime``; a :class:`CnnlabError` naming the packages to install when either
    cannot be imported (not installed, or broken). One that could not be loaded for want of memory stays that
    ``ImportError``: the command line names it so."""
    try:
        import onnx  # heavy (~0.3 s) and needed by the ONNX export alone
        import onnxruntime  # heavy (~0.2 s) and needed by the ONNX check alone
    except ImportError as err:
        if "failed to map segment" in str(err):
            raise
        pins = " ".join(_pinned(("onnx", "onnxruntime")))
        if isinstance(err, ModuleNotFoundError):
            raise CnnlabError(f"ONNX needs the packages onnx and onnxruntime, and {err.name or 'one'} is not installed "
                              f"({first_line(err)}); install them: pip install {pins} (or --format torchscript)"
                              ) from None
        raise CnnlabError(f"ONNX needs the packages onnx and onnxruntime, which cannot be imported here "
                          f"({first_line(err)[:160]}); install them again: pip install --force-reinstall {pins}"
                          ) from None
    return onnx, onnxruntime


def _pinned(names: tuple[str, ...]) -> list[str]:
    """``names`` as cnnlab's own requirements pin them (``onnx==1.23.2``), bare where they cannot be read."""
    try:
        requires = metadata.requires("cnnlab") or []
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        requires = []
    pinned = {}
    for req in requires:
        found = re.match(r"([A-Za-z0-9_.-]+)\s*([^;\s]*)", req)
        if found and found.group(1).lower() in names:
            pinned[found.group(1).lower()] = found.group(1) + found.group(2)
    return [pinned.get(name, name) for name in names]


def _onnx_export(model: nn.Module, example: torch.Tensor, meta: dict[str, str]) -> bytes:
    onnx, _ = onnx_packages()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # dynamo=False: the TorchScript-based exporter, which needs no onnxscript; it warns that
        # the new exporter is the default since torch 2.9.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            model, (example,), buf, dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "cnnlab"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _onnx_run(data: bytes, batches: list[np.ndarray]) -> list[np.ndarray]:
    _, ort = onnx_packages()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = min(4, os.cpu_count() or 1)
    opts.log_severity_level = 4  # fatal only: an error's own coloured log line beside the one line that quotes it
    try:
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        return [sess.run([OUTPUT_NAME], {INPUT_NAME: b})[0] for b in batches]
    except Exception as err:  # onnxruntime's own classes (Fail, RuntimeException, ...) derive from Exception alone
        if not type(err).__module__.startswith("onnxruntime"):
            raise
        raise _onnxruntime_error(err) from None


#: What onnxruntime says when an allocation fails (its arena's buffer; a C++ allocation), as the command line reads it.
_ORT_NO_MEMORY = ("Failed to allocate memory for requested buffer of size", "std::bad_alloc")


def _onnxruntime_error(err: Exception) -> Exception:
    """onnxruntime's error in the check as what the command line says in one line: an allocation that failed as a
    ``RuntimeError`` with onnxruntime's words, which the command line's out-of-memory line reads (what was asked,
    the memory limit), as torch's; any other, a :class:`CnnlabError` naming the other format."""
    text = first_line(err)
    if any(words in text for words in _ORT_NO_MEMORY):
        return RuntimeError(f"onnxruntime: {text}")
    return CnnlabError(f"onnxruntime could not run the ONNX export to check it ({text[:200]}); nothing written: "
                       "try --format torchscript")


def _torchscript_export(model: nn.Module, example: torch.Tensor, meta: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is in maintenance mode and says so
        traced = torch.jit.trace(model, example, check_trace=True)
        torch.jit.save(traced, buf, _extra_files={"cnnlab.json": json.dumps(meta)})
    return buf.getvalue()


def _torchscript_run(data: bytes, batches: list[np.ndarray]) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.inference_mode():
        return [loaded(torch.from_numpy(b)).numpy() for b in batches]


def output_file(out: str | Path | None, default: Path) -> Path:
    """``--out`` as the file to write: ``default`` without one; a folder (one that exists, or any path written
    with a trailing '/') gets the default's name inside it. A symbolic link typed as ``--out`` is written through,
    as the shell's ``>`` does (the file was renamed over the link: the link was gone and its target unchanged); a
    link that only sits at the default name, in the folder given or beside the checkpoint, is replaced by the file
    like any other file there, its target untouched (written through, a link planted in a shared folder made
    export overwrite whatever file it named, a user's notes.txt)."""
    if out is None or str(out) == "":
        return default
    path = Path(out)
    if str(out).endswith(("/", os.sep)) or is_dir(path):  # a stat that fails: one line
        return path / default.name
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def check_suffix(out: Path, fmt: str) -> None:
    """An ``--out`` whose suffix names the other format (``model.onnx`` for TorchScript, ``model.pt`` for ONNX)
    would be a file no tool of that suffix reads: refused, naming both fixes."""
    kind = {"onnx": "an ONNX", "torchscript": "a TorchScript"}
    if out.suffix.lower() == ".safetensors":
        raise CnnlabError(f"--out {out} names a safetensors file, and --format {fmt} writes {kind[fmt]} one; give an "
                          f"--out ending in {'.onnx' if fmt == 'onnx' else '.pt'}, or 'cnnlab export-weights' for "
                          "safetensors")
    other = {"onnx": (".pt", ".pth", ".ptl"), "torchscript": (".onnx",)}[fmt]
    if out.suffix.lower() in other:
        wanted = "torchscript" if fmt == "onnx" else "onnx"
        raise CnnlabError(f"--out {out} names {kind[wanted]} file, and --format {fmt} writes {kind[fmt]} one; give "
                          f"--format {wanted}, or an --out ending in {'.onnx' if fmt == 'onnx' else '.pt'}")


def check_not_the_source(target: Path, source: Path, typed: bool) -> None:
    """The file to write is the very file given to export (``export-weights RUN/model.safetensors``, ``export
    RUN/last.onnx``: each writes by default over its input): first what that input is, so that a file that is no
    checkpoint (an export) is refused as any other path is, not as an --out nobody typed; then, for a checkpoint, the
    default name that coincides with it (a typed --out is left to :func:`cnnlab.runs.check_output_file`)."""
    try:  # a link at the name is replaced, not written through (output_file): never the source
        same = not target.is_symlink() and target.exists() and source.is_file() and target.resolve() == source.resolve()
    except (OSError, RuntimeError):  # a path it cannot resolve: check_output_file and the load say what it is
        return
    if not same:
        return
    load_checkpoint_and_digest(source)  # not a checkpoint (a safetensors file, an ONNX model...): said as it is
    if not typed:
        raise CnnlabError(f"{source} is the checkpoint being exported, and the default output file is that very "
                          "file; give --out FILE with another name")


def pretrained_file(model: str, dataset: str, suffix: str) -> Path:
    """The default output of an export of the shipped weights: ``<model>-<dataset><suffix>`` here."""
    return Path(re.sub(r"[^\w.-]+", "_", f"{model}-{dataset}") + suffix)


def default_output(checkpoint: Path, fmt: str) -> Path:
    """Beside the checkpoint: ``RUN/last.pt`` -> ``RUN/last.onnx`` or ``RUN/last.torchscript.pt``."""
    return checkpoint.with_name(checkpoint.stem + SUFFIXES[fmt])


def default_weights_output(checkpoint: Path) -> Path:
    """Beside the checkpoint, named after it as :func:`default_output` names export's files: a run's ``last.pt`` ->
    ``RUN/model.safetensors`` (the run's net, the name the docs give it), any other ``NAME.pt`` ->
    ``NAME.safetensors`` (``RUN/best.safetensors``, ``RUN/teacher.safetensors``, ``nets/resnet.safetensors``), but
    ``model.safetensors`` (any case) is last.pt's alone: any other checkpoint whose name would give it keeps its whole
    name, a ``model.pt`` -> ``model.pt.safetensors``, and one named ``model`` with no suffix ->
    ``model.checkpoint.safetensors``.
    (All were ``model.safetensors``: an export of best.pt, of a run's teacher.pt or of another checkpoint in the same
    folder replaced the run's own without a word; then still that of a ``model.pt``, then of a ``model``, beside
    last.pt.)"""
    if checkpoint.name == f"{DEFAULT_CHECKPOINT}.pt":
        return checkpoint.with_name("model.safetensors")
    if checkpoint.stem.casefold() != "model":
        return checkpoint.with_name(checkpoint.stem + ".safetensors")
    whole = checkpoint.name if checkpoint.name != checkpoint.stem else checkpoint.name + ".checkpoint"
    return checkpoint.with_name(whole + ".safetensors")


def check_target(target: Path, source: Path | None, typed: bool) -> None:
    """The checks on the file an export writes, said with what named it (``--out``, or the default output when none
    was typed): not a checkpoint nor another run's file (:func:`cnnlab.runs.check_output_file`), and not in cnnlab's
    shipped weights folder (:func:`cnnlab.pretrained.refuse_shipped`)."""
    flag = "--out" if typed else "the default output"
    check_output_file(target, source, flag)
    refuse_shipped(target, flag)


def export_run(
    run: str | Path | None,
    fmt: str = "onnx",
    *,
    out: str | Path | None = None,
    which: str | None = None,
    samples: int = 256,
    dataset: str | None = None,
    data_dir: str | None = None,
    pretrained: str | None = None,
) -> ExportResult:
    """Export ``run``'s checkpoint as ``fmt`` (or, with ``pretrained``, cnnlab's shipped weights of that model
    on ``dataset``, written to ``<model>-<dataset><suffix>`` here by default) and check it on ``samples`` test
    images.

    The check runs the sample in batches of at most :data:`CHECK_BATCH` and as a batch of 1 (the batch axis is
    dynamic).
    The export is made in memory, checked there, and written (atomically) only when the check passes.
    """
    if fmt not in FORMATS:
        raise CnnlabError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if samples < 1:
        raise CnnlabError(f"--samples must be at least 1, got {samples}")
    if (run is None) == (pretrained is None):
        raise CnnlabError("give a run folder or checkpoint to export, or --pretrained MODEL for the shipped "
                          "weights (one of the two)")
    ckpt = None if pretrained is not None else resolve_checkpoint(run, which)
    typed = not (out is None or str(out) == "")
    if pretrained is not None:
        name = dataset or "mnist"
        out = output_file(out, pretrained_file(pretrained, name, SUFFIXES[fmt]))
    else:
        out = output_file(out, default_output(ckpt, fmt))
        check_not_the_source(out, ckpt, typed=typed)
    check_target(out, ckpt, typed)  # before anything is loaded or exported
    check_suffix(out, fmt)
    running = ckpt is not None and refuse_running(ckpt, out, not typed, "export")
    if ckpt is not None:
        refuse_diverged(ckpt, "export")  # (checkpoint.diverged_refusal: as predict, serve, --teacher)
    if fmt == "onnx":
        onnx_packages()  # a missing package is said before the data is loaded and the net exported
    state, digest = (load_pretrained(pretrained, name), "") if ckpt is None else load_checkpoint_and_digest(
        ckpt, file_given=ckpt == Path(run))
    extra = pretrained_metadata(state["pretrained"]) if ckpt is None else checkpoint_metadata(ckpt, state, running, digest)
    return _export_checked(state, fmt, out, sample_inputs(state, samples, dataset, data_dir), extra)


def check_batches(x: torch.Tensor) -> list[np.ndarray]:
    """The check's batches of ``x``: all of it, in batches of at most :data:`CHECK_BATCH`, then its first image alone
    (the batch axis is dynamic)."""
    return [part.numpy() for part in x.split(CHECK_BATCH)] + [x[:1].numpy()]


def _export_checked(state: dict, fmt: str, out: Path, x: torch.Tensor, extra: dict[str, str]) -> ExportResult:
    """Export the net of ``state`` (its metadata and ``extra``), run the export and PyTorch on ``x`` (all of it in
    :func:`check_batches`, and its first image alone), and write the file only when their logits agree."""
    model = model_from_checkpoint(state).eval()  # exported on the CPU, in float32
    meta = {**export_metadata(state), **extra}
    batches = check_batches(x)
    if fmt == "onnx":
        data = _onnx_export(model, x[:2], meta)
        got = _onnx_run(data, batches)
    else:
        data = _torchscript_export(model, x[:2], meta)
        got = _torchscript_run(data, batches)
    with torch.inference_mode():
        want = [model(torch.from_numpy(b)).numpy() for b in batches]
    for g, w in zip(got, want):
        if g.shape != w.shape:
            raise CnnlabError(f"{fmt} export gives logits of shape {g.shape}, PyTorch {w.shape}; "
                              "this model cannot be exported this way")
    diff, limit = check_logits(fmt, got, want)
    write_export(out, data)  # only a checked export reaches the disk
    return ExportResult(out, fmt, diff, len(x), tuple(dict.fromkeys(len(b) for b in batches)), limit)


def tolerance(scale: float) -> float:
    """The largest difference accepted between an export's logits and PyTorch's whose largest magnitude is ``scale``:
    :data:`TOLERANCE` times it, at least :data:`TOLERANCE` (float32 keeps 7 digits of any number: logits of 1.8e8
    differed by 32, 2 float32 steps, between onnxruntime and PyTorch, and an absolute 1e-4 blamed the exporter)."""
    return TOLERANCE * max(1.0, scale)


def check_logits(fmt: str, got: list[np.ndarray], want: list[np.ndarray]) -> tuple[float, float]:
    """(largest difference, its limit) of ``got`` (the export's logits) against ``want`` (PyTorch's); refused in one
    line when they differ by more, saying the limit and the logits' scale it follows; PyTorch's own logits that are
    not finite are said to be the net's, not the export's."""
    if not all(np.isfinite(w).all() for w in want):
        raise CnnlabError(f"the net's own logits (PyTorch's) are not finite (NaN or inf) on the check's test images, "
                          f"so no {fmt} export can match them: its weights are broken (a run that diverged?); nothing "
                          "written: export an earlier checkpoint, or train it again with a lower --lr")
    scale = max((float(np.abs(w).max()) for w in want if w.size), default=0.0)
    limit = tolerance(scale)
    diff = max((float(np.abs(g - w).max()) for g, w in zip(got, want) if g.size), default=0.0)
    if not diff <= limit:  # NaN in the export's logits included
        raise CnnlabError(f"{fmt} export differs from PyTorch by {diff:.2e} in the logits, whose largest magnitude is "
                          f"{scale:.2e} (limit {TOLERANCE:g} x that, at least {TOLERANCE:g}: {limit:.2e}); not written: "
                          "try the other --format")
    return diff, limit


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    onnx, _ = onnx_packages()
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def export_safetensors(run: str | Path | None = None, which: str | None = None, out: str | Path | None = None, *,
                       pretrained: str | None = None, dataset: str | None = None) -> Path:
    """Write a checkpoint's bare weights as safetensors, with the metadata of ``cnnlab export`` (model,
    classes, normalisation, input layout, the checkpoint it came from) plus the model's arguments; with
    ``pretrained``, cnnlab's shipped weights of that model on ``dataset`` (``mnist`` unless given), to
    ``<model>-<dataset>.safetensors`` here by default, their provenance the shipped file's name and SHA-256. A run's
    checkpoint is written beside it by default (:func:`default_weights_output`: ``RUN/model.safetensors`` for its
    last.pt, ``RUN/best.safetensors`` for its best.pt)."""
    if (run is None) == (pretrained is None):
        raise CnnlabError("give a run folder or checkpoint to export, or --pretrained MODEL for the shipped "
                          "weights (one of the two)")
    if pretrained is None and dataset is not None:
        raise CnnlabError(f"--dataset {dataset} has no effect without --pretrained (a run's weights are of its own "
                          "dataset); drop it")
    typed = not (out is None or str(out) == "")
    if pretrained is not None:
        src = find_pretrained(pretrained, dataset or "mnist").path  # never written over, as a run's checkpoint
        target = output_file(out, pretrained_file(pretrained, dataset or "mnist", ".safetensors"))
    else:
        src = resolve_checkpoint(run, which)
        target = output_file(out, default_weights_output(src))
        check_not_the_source(target, src, typed=typed)
    check_target(target, src, typed)
    if target.suffix.lower() in (".onnx", ".pt", ".pth", ".ptl"):
        raise CnnlabError(f"--out {target} names {'an ONNX' if target.suffix.lower() == '.onnx' else 'a PyTorch'} "
                          "file, and export-weights writes safetensors; give an --out ending in .safetensors (or "
                          "'cnnlab export' for ONNX or TorchScript)")
    if pretrained is not None:
        state = load_pretrained(pretrained, dataset or "mnist")
        provenance = pretrained_metadata(state["pretrained"])
    else:
        running = refuse_running(src, target, not typed, "export-weights")
        refuse_diverged(src, "export-weights")
        state, digest = load_checkpoint_and_digest(src, file_given=src == Path(run))
        provenance = checkpoint_metadata(src, state, running, digest)
    metadata = {"format": "cnnlab-weights", **export_metadata(state), **provenance,
                "model_args": json.dumps(state["model"]["args"]), "data": json.dumps(state["data"])}
    tensors = {k: v.contiguous() for k, v in state["state_dict"].items()}
    write_export(target, save_safetensors(tensors, metadata=metadata))
    return target


def write_export(target: Path, data: bytes) -> None:
    """Write an export's file (:func:`cnnlab.fileio.atomic_write_bytes`); the folders made for it (``--out
    new/sub/x.onnx``) are removed again when it cannot be written (a full disk, ``ulimit -f``), as a report's
    folder is (:func:`cnnlab.runs.removed_if_unused`): a failed export left ``new`` and ``new/sub`` behind."""
    with removed_if_unused(target.parent):
        atomic_write_bytes(target, data)
