"""Evaluation: a large-batch ``inference_mode`` pass, a run's checkpoint evaluated, and the report
(summary.json and figures) of an evaluation.

Inference code (predict, export, analysis, serve) imports this and :mod:`cnnlab.checkpoint`, never the trainer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.checkpoint import (diverged_last, diverged_warning, empty_model, load_checkpoint_and_digest, load_into,
                               load_state_dict_file, load_weights_file, model_from_checkpoint, resolve_checkpoint,
                               same_run_as)
from cnnlab.data import BatchLoader, Dataset, load_dataset, split_validation
from cnnlab.data.folder import check_not_read, split_is_drawn
from cnnlab.dataset_names import DIRECTORY_KINDS, dataset_kind, moved_away
from cnnlab.devices import callers_autocast_off, resolve_device
from cnnlab.errors import (CheckpointError, CnnlabError, RunBusy, RunError, WriteError, printable,
                           shell_quoted)
from cnnlab.models import model_arguments
from cnnlab.output import complain, say
from cnnlab.pretrained import load_pretrained
from cnnlab.report import Figures, format_table, summarize, write_report
from cnnlab.fileio import FolderGuard, cannot_read, open_if_regular, resolved, sha256_of
from cnnlab.runs import (DOING, TRAINING, RunLock, check_output_folder, holder, is_run_dir, is_training,
                         lock_task, users_files)
from cnnlab.tta import TTA, parse_tta

Log = Callable[[str], None]


@dataclass
class EvalResult:
    """One evaluation (:func:`evaluate`, ``Run.evaluate()``, ``TrainResult.final``): the mean cross-entropy ``loss``,
    the ``accuracy`` in percent (99.1), the ``n`` images seen and how many were ``correct``; each image's predicted
    class and its probability where asked for."""

    loss: float
    accuracy: float  # percent
    n: int
    correct: int = 0
    #: (N,) predicted classes and (N,) the softmax probability of each (how sure: the report's mistakes show it),
    #: on the CPU, when asked for. Not every class's probability: (N, classes) of a 10,000-class test set was 400 MB.
    predictions: torch.Tensor | None = field(default=None, repr=False)  # (N,): out of the repr, as N grows
    confidences: torch.Tensor | None = field(default=None, repr=False)


def evaluate(model: nn.Module, loader: BatchLoader, limit: int = 0, keep_outputs: bool = False,
             tta: TTA | None = None) -> EvalResult:
    """Mean cross-entropy and accuracy over ``loader`` (its first ``limit`` items if > 0); with ``tta``, of the
    softmax probabilities averaged over its views of each image. In float32 whatever ``torch.autocast`` its caller
    has on (:func:`cnnlab.devices.callers_autocast_off`)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=loader.device)
    correct = torch.zeros((), dtype=torch.int64, device=loader.device)
    n = 0
    preds, confidences = [], []
    with torch.inference_mode(), callers_autocast_off():
        for x, y in loader.batches(0):
            if limit and n >= limit:
                break
            if limit:
                x, y = x[: limit - n], y[: limit - n]
            logits = model(x).float() if tta is None else tta.log_probs(model, x, loader.shift)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            pred = logits.argmax(1)
            correct += (pred == y).sum()
            n += len(y)
            if keep_outputs:
                preds.append(pred.cpu())
                confidences.append(logits.softmax(1).gather(1, pred[:, None]).squeeze(1).cpu())
    model.train(was_training)
    if n == 0:
        raise CnnlabError("evaluation saw no images; the test split is empty")
    return EvalResult(
        loss=float(loss_sum) / n,
        accuracy=100.0 * int(correct) / n,
        n=n,
        correct=int(correct),
        predictions=torch.cat(preds) if keep_outputs else None,
        confidences=torch.cat(confidences) if keep_outputs else None,
    )


def report_run(run_dir: Path | None, model: nn.Module, data: Dataset, device: torch.device, *,
               history: list[dict] | None, batch_size: int = 1000, extra: dict | None = None, log: Log = say,
               result: EvalResult | None = None, context: dict | None = None, table: bool = False,
               wait: bool = True, keep: tuple[str, ...] = (), stopped: str = "stopped; run it again",
               guard: FolderGuard | None = None) -> tuple[dict, Figures | None]:
    """The test set's summary from ``result`` when it is the model's evaluation of the whole test set with
    its outputs kept (otherwise the test set is evaluated here first); with a ``run_dir``, summary.json and
    the figures written there. ``context`` (model, dataset...) is shown on every figure; ``table`` also logs
    the per-class table. With ``wait=False`` the figures are still being drawn: ``.wait()`` on them. ``keep``:
    keys of the summary.json already there that the new one carries over (the training's, for a run); ``history``:
    the epochs curves.png draws (None: the curves.png there is the run's, left as it is: :func:`write_report`);
    ``stopped``: how the line of a report stopped while its figures were drawn ends (:meth:`Figures.stopped`);
    ``guard``: the folder as its writer took it (a training's; else :func:`write_report` takes it)."""
    res = result
    if res is None or res.predictions is None or res.n != len(data.test_labels):
        test_loader = BatchLoader(data.test_images, data.test_labels, batch_size, mean=data.mean, std=data.std,
                                  shuffle=False, device=device)
        res = evaluate(model, test_loader, keep_outputs=True)
    summary = summarize(labels=data.test_labels, predictions=res.predictions.cpu(),
                        probabilities=res.confidences.cpu(), classes=list(data.classes), loss=res.loss,
                        accuracy=res.accuracy, extra=extra)
    if table:
        log(format_table(summary["per_class"]))
    figures = None
    if run_dir is not None:
        warn = lambda line: complain(f"cnnlab: warning: {printable(line)}")  # noqa: E731
        try:
            figures = write_report(run_dir, summary, history=history, images=data.test_images,
                                   classes=list(data.classes), context=context, keep=keep, log=log, guard=guard)
            for note in figures.left_out.values():
                log(note)
            if wait:
                try:  # a stop meanwhile: the figure being drawn is finished, the line says what was written
                    figures.wait(warn, stopped)
                except WriteError as err:  # summary.json is written, and maybe some figures: the line says which
                    raise figures.incomplete(err) from None
        except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM or SIGHUP (cli.common.take_sigint) after summary.json
            if (figures := figures or getattr(stop, "figures", None)) is not None:  # (none: before summary.json)
                figures.stopped(warn, stopped)
            raise
        if wait:
            kept = f" ({', '.join(figures.kept)} unchanged)" if figures.kept else ""
            log(f"wrote {', '.join(['summary.json', *figures.names])} in {printable(str(run_dir))}{kept}")
    return summary, figures


@dataclass
class Subject:
    """What an evaluation (or a prediction) runs: a model with its weights, its data, and where it came from."""

    model: nn.Module
    model_name: str
    data: Dataset
    source: str  # e.g. "runs/resnet-mnist-.../last.pt", "pretrained resnet (mnist)"
    #: Evaluate in the memory format the weights were trained in (a run's own figures are reproduced to the
    #: last digit), channels-last where nothing says (cnnlab's default: 1.2-1.4x faster on the CPU).
    channels_last: bool = True
    #: The run folder when this is the run's own final evaluation (its last.pt on its own dataset): its
    #: summary.json is what compare, ``cnnlab runs`` and load_run read as the run's result.
    run_dir: Path | None = None
    #: Why another evaluation of a run (best.pt, another dataset) is not the run's report.
    not_own: str = ""
    #: Which split ``data.test_images`` holds: "test", or "val", a run's own validation split (``--split val``).
    split: str = "test"
    #: Said before the figures when they may not mean what they seem (a net evaluated on another dataset's classes).
    warning: str = ""
    #: The input normalisation the net was trained with (its run's data, as recorded), which predict and export use
    #: too; None: unknown (a bare weights file), ``data``'s own.
    mean: float | None = None
    std: float | None = None
    #: The SHA-256 of the checkpoint's bytes that were loaded (a run's): its report is written into the run only
    #: while the file there is still these bytes (:func:`own_report`).
    digest: str = ""
    #: The optimiser steps the checkpoint had trained (a run's; None for shipped or bare weights): with ``digest``,
    #: what an analysis written into the run folder says it measured (a resume later makes it out of date).
    step: int | None = None
    #: The dataset the net trained on, as its run (or weights file, or the shipped weights) recorded it
    #: (``folder:/home/me/pics``, its whole path); "" where nothing says. A report's ``--out`` may not be where it
    #: reads (:func:`check_report_folder`), whichever dataset the net is evaluated on.
    trained_on: str = ""
    #: Where the weights came from, as its report's figures name it (:attr:`context`): ``{"run": name}`` (and the
    #: ``"checkpoint"`` when not last.pt), ``{"run": None, "shipped weights": ...}``, ``{"run": None, "weights": ...}``.
    origin: dict = field(default_factory=dict)

    @property
    def context(self) -> dict:
        """What the figures of its report show under their title: the model, the dataset, where the weights came
        from (never the folder the report is written into), and the split when it is not the test set."""
        return {"model": self.model_name, "dataset": self.data.name, **self.origin,
                **({"split": "validation"} if self.split == "val" else {})}

    @property
    def normalisation(self) -> tuple[float, float]:
        return (self.data.mean, self.data.std) if self.mean is None or self.std is None else (self.mean, self.std)

    @property
    def split_name(self) -> str:
        return "validation split" if self.split == "val" else "test set"


def open_subject(path: str | Path | None = None, *, which: str | None = None, weights: str | Path | None = None,
                 model_name: str | None = None, pretrained: str | None = None, dataset: str | Dataset | None = None,
                 data_dir: str | None = None, split: str = "test") -> Subject:
    """A run's checkpoint (``path``), a bare ``state_dict`` file (``weights`` for ``model_name``), or the
    shipped weights of ``pretrained`` on ``dataset`` (a name, or a loaded :class:`Dataset`; default mnist), with
    the dataset to test it on.
    ``split="val"``: a run's own validation split (trained with ``--val-split``) instead of the test set."""
    if split not in ("test", "val"):
        raise CnnlabError(f"unknown split {split!r}; use test or val")
    given = [what for what, value in (("RUN", path), ("--pretrained", pretrained), ("--weights", weights)) if value]
    if len(given) > 1:
        raise CnnlabError(f"give one of a run directory or checkpoint, --pretrained MODEL, or --weights FILE --model "
                          f"NAME, not {' and '.join(given)}")
    if split == "val" and path is None:
        raise CnnlabError("--split val evaluates a run's own validation split: give a run trained with --val-split "
                          "(shipped weights and weights files have none)")
    loaded = dataset if isinstance(dataset, Dataset) else None  # compare evaluates many runs of one dataset
    name = loaded.name if loaded is not None else dataset
    if pretrained is not None:
        state = load_pretrained(pretrained, name or "mnist")
        data = loaded or load_dataset(state["pretrained"].dataset, data_dir=data_dir)
        entry = state["pretrained"]
        return Subject(model_from_checkpoint(state), pretrained, data, f"pretrained {entry.name}",
                       channels_last=bool(entry.config.get("channels_last", True)), trained_on=entry.dataset,
                       origin={"run": None, "shipped weights": entry.name}, **_recorded_normalisation(state))
    if weights is not None:
        record = _weights_record(weights)  # read once: the model, classes and normalisation a cnnlab file records
        model_name = model_name or (record["model"]["name"] if record else None)
        if model_name is None:
            raise CnnlabError("--weights needs --model NAME to know which net the state_dict belongs to")
        data = loaded or load_dataset(name or "mnist", data_dir=data_dir)
        model = empty_model(model_name, **model_arguments(data.info()))
        state_dict = record["state_dict"] if record else load_state_dict_file(weights)
        try:
            load_into(model, state_dict)
        except CheckpointError as err:
            raise CnnlabError(f"{weights}: weights do not fit model {model_name!r}: {err}; pick the --model they were "
                              "trained as") from None
        recorded = _recorded_normalisation(record) if record else {}
        note = other_classes(record["data"].get("classes"), record["data"].get("name") or str(weights), data) \
            if recorded else (f"note: {weights} records no input normalisation; its images are normalised with "
                              f"{data.name}'s train-split mean and std")
        return Subject(model, model_name, data, str(weights), warning=note,
                       trained_on=str((record["data"].get("name") or "") if recorded else ""),
                       origin={"run": None, "weights": Path(weights).name}, **recorded)
    if path is None:
        raise CnnlabError("give a run directory or checkpoint, --pretrained MODEL, or --weights FILE --model NAME")
    ckpt = resolve_checkpoint(path, which)
    state, digest = load_checkpoint_and_digest(ckpt, expect_model=model_name, file_given=ckpt == Path(path))
    cfg = state["config"]
    again = f"cnnlab evaluate {shell_quoted(str(path))} {{new}}"  # a hint to copy: the path as a shell takes it
    if not (loaded or name) and (message := moved_away(cfg["dataset"], str(ckpt), again)):
        raise CnnlabError(message)
    data = loaded or load_dataset(name or cfg["dataset"], data_dir=data_dir or own_data_dir(cfg, name))
    trained_on = (state.get("data") or {}).get("name", cfg["dataset"])
    check_fits(state["model"].get("args") or {}, data, ckpt, trained_on)
    not_own = (f"{ckpt.name} is not the run's final weights (last.pt)" if ckpt.name != "last.pt" else
               f"{data.name} is not the dataset the run trained on ({trained_on})" if data.name != trained_on else "")
    if split == "val":
        data = _validation_data(data, cfg, ckpt, trained_on)
        not_own = "it is the validation split, not the test set"
    elif not not_own and (theirs := users_files(ckpt.parent, ckpt, same_run_as(ckpt, state))):  # a copy among theirs
        not_own = f"{ckpt.parent} is not a run folder (it holds {theirs})"
    elif not not_own and (changed := changed_data(state.get("data"), data)):
        not_own = changed
    elif not not_own and is_training(ckpt.parent):  # its training writes the run's result when it ends
        not_own = f"the run is still training ({holder(ckpt.parent)} holds it), so last.pt is not its final weights"
    elif not not_own and (why := diverged_last(ckpt)):  # measured, with a warning (checkpoint.diverged_warning)
        not_own = f"the run failed ({why}), so last.pt is not its result"
    first = diverged_warning(ckpt, file_given=ckpt == Path(path))  # its best.pt named as what was given takes it
    note = other_classes((state.get("data") or {}).get("classes"), trained_on, data)
    return Subject(model_from_checkpoint(state), state["model"]["name"], data, str(ckpt),
                   channels_last=bool(cfg.get("channels_last", False)), run_dir=None if not_own else ckpt.parent,
                   not_own=not_own, split=split,
                   warning=f"{first}; {note.removeprefix('warning: ')}" if first and note else first or note,
                   digest=digest, step=_step_of(state), origin=_run_origin(ckpt), trained_on=str(trained_on),
                   **_recorded_normalisation(state))


def _run_origin(ckpt: Path) -> dict:
    """A run's checkpoint as its report's figures name it: the run folder's name, and the file when not last.pt; a
    checkpoint in a folder that is no run's (a copy: ``shared/model-from-colleague.pt``) by its file's name, as
    ``--weights FILE`` is (the folder's name read as a run's, ``run shared``)."""
    if not is_run_dir(ckpt.parent):
        return {"run": None, "weights": ckpt.name}
    try:
        name = ckpt.parent.resolve().name
    except (OSError, RuntimeError):  # a folder that cannot be resolved: its name as given
        name = ckpt.parent.absolute().name
    return {"run": name, **({"checkpoint": ckpt.name} if ckpt.name != "last.pt" else {})}


def _step_of(state: dict) -> int | None:
    """The optimiser steps a loaded checkpoint had trained, None where it does not say."""
    step = (state.get("train_state") or {}).get("step") if isinstance(state.get("train_state"), dict) else None
    return step if type(step) is int else None


@contextlib.contextmanager
def own_report(subject: Subject) -> Iterator[str]:
    """Around the writing of a run's own report (its summary.json and figures): the run's lock, held, so that no
    training starts meanwhile; yields why nothing may be written ("" when it may). An evaluation that began before a
    ``cnnlab train --resume`` of the run and ends after it wrote the older checkpoint's figures over the finished
    run's: the report is written only while no training holds the run and its checkpoint is still the file loaded."""
    ckpt = Path(subject.source)
    try:
        lock = RunLock(ckpt.parent, task="evaluation").acquire()  # (not "training": checkpoint._why_none)
    except WriteError:  # a read-only run folder: no lock, and the report's own write says what is wrong
        lock = RunLock(ckpt.parent, task="evaluation")
    except RunBusy:
        yield _held_by_another(ckpt.parent)
        return
    except RunError as err:  # its lock is a planted link, a FIFO...: what is wrong, not a process that does not exist
        yield str(err)
        return
    try:
        yield "" if _still_loaded(ckpt, subject.digest) else \
            f"{ckpt.name} changed while it was evaluated (the run trained on), so this is not the run's result"
    finally:
        lock.release()


def _held_by_another(run: Path) -> str:
    """Why a run's report is not written while another holds its lock, by what the holder records it does
    (:func:`cnnlab.runs.lock_task`): a compare's hold said "its training resumed, or another evaluation"."""
    task = lock_task(run) or TRAINING  # (let go since: said as the training it most likely was)
    if task == TRAINING:
        return (f"{holder(run)} holds the run (its training resumed), so the checkpoint evaluated may not be its final "
                "weights")
    return (f"{holder(run)} holds the run (it is {DOING.get(task, task)} now), so its report is not written now; "
            "evaluate it again when that ends")


def _still_loaded(ckpt: Path, digest: str) -> bool:
    """Whether ``ckpt`` is still the bytes whose SHA-256 is ``digest``, hashed now (under the run's lock, so no save
    is in flight): not its sidecar's lines, which a run killed during a save leaves listing two hashes for good. A
    file gone is not; one whose open or read fails (an input/output error) is no sign of a change: one line naming
    it and the fix its error takes (a :class:`CheckpointError`), no report written (was: "the run trained on")."""
    try:
        fh, _ = open_if_regular(ckpt)  # without blocking: a FIFO put in its place is no longer the file loaded
        if fh is None:
            return False
        with fh:
            return sha256_of(fh) == digest
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        raise CheckpointError(f"{cannot_read(ckpt, err)} (no report written: {ckpt.name} could not be read again to "
                              "check that it is still the file evaluated)") from None


def _recorded_normalisation(state: dict) -> dict:
    """``mean`` and ``std`` of the data a checkpoint's net was trained on, as it recorded them; {} when it did not."""
    data = state.get("data") if isinstance(state.get("data"), dict) else {}
    try:
        return {"mean": float(data["mean"]), "std": float(data["std"])}
    except (KeyError, TypeError, ValueError):
        return {}


def _weights_record(weights: str | Path) -> dict | None:
    """A weights file as :func:`load_weights_file` reads one that cnnlab wrote (model, data, state_dict); None for a
    bare state_dict (a .pt, or safetensors without cnnlab's metadata)."""
    try:
        record = load_weights_file(weights)
    except CheckpointError:
        return None
    return record if isinstance(record.get("data"), dict) else None


def changed_data(recorded, data: Dataset) -> str:
    """Why ``data`` is not the data a run trained on, from what the run recorded of it (``ckpt["data"]``, config.json's
    "data"): an ``idx:``/``folder:`` dataset changed since (images added, files rewritten); empty when it is the same,
    or nothing was recorded. A folder whose split is drawn has drawn it again: its test images may be training ones."""
    changed = data.changed_since(recorded) if isinstance(recorded, dict) else []
    if not changed:
        return ""
    why = f"{data.name} is not the data the run trained on ({data.describe_changes(recorded)})"
    if dataset_kind(data.name) == "folder" and {"train_size", "test_size"} & set(changed) \
            and split_is_drawn(data.name.removeprefix("folder:")):
        why += "; its automatic test split was drawn again, so the test images may include the run's training images"
    return why


def own_data_dir(cfg: dict, dataset: str | None) -> str | None:
    """The run's ``data_dir``, where its own catalog dataset was read from: for that dataset only (``--dataset``
    naming another made the run's --data-dir go with it, and an ``idx:`` dataset refused it), and never for an
    ``idx:``/``folder:`` dataset, which reads its own directory (older runs recorded one beside it)."""
    own = cfg.get("dataset")
    if dataset and dataset != own or not isinstance(own, str) or dataset_kind(own) in DIRECTORY_KINDS:
        return None
    return cfg.get("data_dir")


def check_report_folder(subject: Subject, out: str | Path) -> None:
    """A report's ``--out``: neither another run's folder nor, for an evaluation that is not the run's result
    (``best.pt``, another dataset, the validation split), the run's own (its summary.json is the run's result); nor
    a folder that a ``folder:`` dataset of the net's reads (:func:`check_not_read_by_net`: its figures would be a
    class of the next load)."""
    out = Path(out)
    check_not_read_by_net(subject, out, f"--out {out}")
    check_not_own_folder(out, Path(subject.source).parent, subject.not_own)
    check_output_folder(out, subject.run_dir, writes=("summary.json", "confusion.png", "mistakes.png"))


def check_not_read_by_net(subject: Subject, out: str | Path, named: str) -> None:
    """Refuse (one line) a folder ``out`` (``named``: how the line names it) that a ``folder:`` dataset of
    ``subject``'s reads (:func:`cnnlab.data.folder.check_not_read`): the one it is measured on, and the one its net
    trained on (:attr:`Subject.trained_on`), whichever is given: ``evaluate RUN --dataset folder:OTHER --out
    DATA/a/rep`` wrote its figures into the net's own training data, whose next load took them for images of class
    ``a``."""
    for dataset in dict.fromkeys((subject.data.name, subject.trained_on)):
        check_not_read(dataset or None, out, named)


def check_not_own_folder(out: str | Path, run: Path, not_own: str, what: str = "evaluation") -> None:
    """``--out`` naming the run's own folder (``run``) for a measurement that is not the run's result (``not_own``:
    its best.pt, another dataset, the validation split): refused, for an evaluation's report and an analysis alike
    (the run folder's summary.json and branches.json are its last.pt's on its own data: README's table)."""
    out = Path(out)
    if not_own and is_run_dir(out) and resolved(out) == resolved(run):
        raise RunError(f"--out {out} is the run's own folder, and this {what} is not the run's result ({not_own}); "
                       "give another folder")


def other_classes(learned, trained_on: str, data: Dataset) -> str:
    """A warning when a net is evaluated on data whose classes are not the ones it learned (an MNIST net on
    Fashion-MNIST: 8% "accuracy", its digits read as clothes); empty when they are the same or not recorded."""
    if not learned or list(learned) == list(data.classes):
        return ""

    def few(names) -> str:
        return ", ".join(str(n)[:24] for n in names[:4]) + (", ..." if len(names) > 4 else "")

    return (f"warning: the net learned the classes of {trained_on} ({few(list(learned))}), and {data.name}'s are others "
            f"({few(list(data.classes))}): its output i is scored as {data.name}'s class i")


def check_fits(args: dict, data: Dataset, ckpt: Path, trained_on: str) -> None:
    """A net evaluated on data of another shape (a 2-class folder net on MNIST's 10 classes) was an IndexError."""
    have = (("num_classes", "classes", data.num_classes), ("in_channels", "input channels", data.in_channels),
            ("image_size", "image size", data.image_size))
    wrong = [f"{args[key]} {what} (the data: {v})" for key, what, v in have if key in args and args[key] != v]
    if wrong:
        raise CnnlabError(f"{ckpt}: the net does not fit {data.name}: {', '.join(wrong)}; evaluate it on data shaped "
                          f"like its own ({trained_on})")


def _validation_data(data: Dataset, cfg: dict, ckpt: Path, trained_on: str) -> Dataset:
    """``data`` with the run's validation split (the same seeded hold-out it was trained beside) as its test split."""
    fraction = float(cfg.get("val_split") or 0.0)
    if fraction <= 0:
        raise CnnlabError(f"{ckpt.parent} was trained without --val-split, so it has no validation split; "
                          "drop --split val to evaluate its test set")
    if data.name != trained_on:
        raise CnnlabError(f"--split val is the validation split of the run's own dataset ({trained_on}), not of "
                          f"{data.name}; drop --dataset")
    _, (images, labels) = split_validation(data, fraction, int(cfg["seed"]))
    return replace(data, test_images=images, test_labels=labels)


def evaluate_subject(subject: Subject, *, device: str = "auto", batch_size: int = 1000,
                     keep_outputs: bool = False, tta: TTA | None = None) -> EvalResult:
    dev = resolve_device(device)
    fmt = torch.channels_last if subject.channels_last else torch.contiguous_format
    subject.model.to(dev, memory_format=fmt)
    data = subject.data
    mean, std = subject.normalisation  # the net's own, not the evaluated dataset's (they differ on other data)
    loader = BatchLoader(data.test_images, data.test_labels, batch_size, mean=mean, std=std,
                         shuffle=False, device=dev, memory_format=fmt)
    return evaluate(subject.model, loader, keep_outputs=keep_outputs, tta=tta)


def evaluate_run(
    path: str | Path | None = None,
    *,
    which: str | None = None,
    weights: str | Path | None = None,
    model_name: str | None = None,
    pretrained: str | None = None,
    dataset: str | Dataset | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    batch_size: int = 1000,
    keep_outputs: bool = False,
    split: str = "test",
    tta: str | None = None,
) -> tuple[EvalResult, nn.Module, Dataset]:
    """Evaluate a run's checkpoint, a bare ``state_dict`` file (``weights``) for ``model_name``, or shipped
    ``pretrained`` weights, on the test set (``split="val"``: a run's own validation split); ``tta``: a
    :mod:`cnnlab.tta` spec, the probabilities averaged over those views of each image (off by default)."""
    views = parse_tta(tta)
    subject = open_subject(path, which=which, weights=weights, model_name=model_name, pretrained=pretrained,
                           dataset=dataset, data_dir=data_dir, split=split)
    result = evaluate_subject(subject, device=device, batch_size=batch_size, keep_outputs=keep_outputs, tta=views)
    return result, subject.model, subject.data
