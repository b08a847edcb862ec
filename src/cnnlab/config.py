"""The typed configuration saved into every run, and the named recipes that fill it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator

from cnnlab.dataset_names import DIRECTORY_KINDS, dataset_kind
from cnnlab.errors import CnnlabError, RunError, close_match, first_line, shell_quoted, short_repr
from cnnlab.fileio import as_path, read_small_text
from cnnlab.schedules import SCHEDULES as SCHEDULE_TABLE, WARMUP_SCHEDULES
from cnnlab.text import either, plural


#: The fields a recipe sets. In a :class:`TrainConfig` they default to ``None``, "from the recipe", and
#: :meth:`TrainConfig.resolve` fills them: the one place recipes are applied, for the CLI and the API alike.
#: More epochs than any run trains (a run of 10^30 epochs was trained, then listed as damaged by ``cnnlab runs``).
EPOCHS_LIMIT = 1_000_000_000
RECIPE_FIELDS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "bias_decay", "schedule",
                 "warmup_epochs", "augment", "clean_epochs", "label_smoothing", "ema", "evals_per_epoch",
                 "channels_last", "precision")


class DuplicateSetting(ValueError):
    """A config file sets one key twice (JSON and YAML parsers keep the last one without a word)."""


def _json(text: str):
    """A JSON config file's contents; its syntax errors as ValueError, a key given twice as DuplicateSetting."""

    def unique(pairs: list[tuple[str, object]]) -> dict:
        found = dict(pairs)
        if len(found) < len(pairs):  # a set, not a scan per key: a settings file of 90,000 keys stays linear
            seen: set[str] = set()
            twice = next(key for key, _ in pairs if key in seen or seen.add(key))
            raise DuplicateSetting(f"{twice!r} is set twice")
        return found

    return json.loads(text, object_pairs_hook=unique)


def _yaml(text: str):
    """A YAML config file's contents; its syntax errors as ValueError, a key given twice as DuplicateSetting.
    yaml is imported here, for the files written by hand, not by every command that imports this module (15-30 ms)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            lines: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True) if key_node.tag != "tag:yaml.org,2002:merge" else None
                if not isinstance(key, (str, int, float, bool)):  # a merge, or a key yaml itself refuses
                    continue
                line = key_node.start_mark.line + 1
                if key in lines:
                    raise DuplicateSetting(f"{key!r} is set twice (lines {lines[key]} and {line})")
                lines[key] = line
            return super().construct_mapping(node, deep)

    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as err:  # its text is lines: the problem, where, and the file's line quoted
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        context = f", {err.context}" if err.context else ""
        raise ValueError(f"{err.problem or 'unreadable'}{where}{context}") from None
    except yaml.YAMLError as err:
        raise ValueError(str(err)) from None


@dataclass
class TrainConfig:
    """Everything a training run is made of, typed; saved into every run's ``config.json``.

    Build one from keyword arguments (``TrainConfig(model="resnet", epochs=3)``), from a file with
    :meth:`from_file` (a run's ``config.json``, which re-runs that run exactly, or a YAML/JSON mapping of field
    names to values: ``cnnlab train --config``), or from a saved dict with :meth:`from_dict` (unknown keys are
    refused, fields added since the run was written take the values that reproduce it).

    The fields of :data:`RECIPE_FIELDS` (``epochs``, ``batch_size``, ``optimizer``, ``lr``, ``schedule``,
    ``augment``...) default to None, which means "the recipe's value": :meth:`resolve` fills each None from the
    named ``recipe`` (:data:`RECIPES`; ``"lecture"`` unless given; per-model or per-dataset values from
    :data:`RECIPE_VARIANTS`), and is the one place a recipe is applied. A value set explicitly always wins over the
    recipe's. :meth:`validate` checks the values and their combinations, each refusal one line.
    """

    model: str = "inception"
    dataset: str = "mnist"
    data_dir: str | None = None
    #: The named settings that every field left at None comes from (see RECIPES).
    recipe: str = "lecture"
    epochs: int | None = None
    #: Global batch size (split across ranks under torchrun).
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    #: Whether weight decay also applies to biases (PyTorch's default, and the path of every run made before
    #: this option); False puts biases in a parameter group without decay.
    bias_decay: bool | None = None
    #: Learning-rate schedule: a name of :data:`cnnlab.schedules.SCHEDULES` (constant is the lecture's).
    schedule: str | None = None
    #: Linear warm-up of the schedules that take one (``schedules.WARMUP_SCHEDULES``), in epochs (fractions allowed).
    warmup_epochs: float | None = None
    #: Batched augmentation on the device: a pipeline spec (see cnnlab.augment), e.g. none, shift, affine:rotate=10.
    augment: str | None = None
    #: The last N epochs train on the images as they are, without ``augment`` (YOLOX's no-augmentation epochs).
    clean_epochs: int | None = None
    label_smoothing: float | None = None
    #: Decay of an exponential moving average of the weights, evaluated, saved and exported instead of the
    #: raw weights; 0 = off.
    ema: float | None = None
    #: Evaluations per epoch while a target accuracy is set.
    evals_per_epoch: int | None = None
    channels_last: bool | None = None
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 1000
    #: Intra-op CPU threads; 0 keeps torch's default.
    threads: int = 0
    #: Keep freed host memory for reuse instead of returning it to the OS each step (glibc; see cnnlab.hostmem).
    malloc_tuning: bool = True
    #: Stop after this many optimiser steps in total; 0 = no limit (used by --dry-run and tests).
    max_steps: int = 0
    #: The evaluations during training (each epoch's, the target checks) take at most this many images of the
    #: eval split; 0 = all of it. The run's result, its final test evaluation, is always the whole test set
    #: (except a --dry-run's, which reports nothing).
    eval_limit: int = 0
    #: Write ``last`` every N steps as well as at each epoch's end; 0 = only at epoch ends.
    save_every: int = 0
    #: Fraction of the train split held out (seeded) to choose ``best``; the test set is then used once.
    val_split: float = 0.0
    #: fp32, or bf16 (autocast on CPU and CUDA; weights, optimiser and evaluation stay fp32).
    precision: str | None = None
    compile: bool = False
    #: Stop as soon as the evaluated accuracy reaches this (percent); 0 = off.
    target_accuracy: float = 0.0
    #: A finished run (or its checkpoint) whose net teaches this one (knowledge distillation, cnnlab.distill);
    #: None = no teacher. Saved as the checkpoint's absolute path.
    teacher: str | None = None
    #: Weight of the teacher's term in the loss, in (0, 1]; used only with a teacher.
    distill: float = 0.5
    #: Temperature of both nets' softmax in the teacher's term; used only with a teacher.
    distill_temperature: float = 1.0
    tensorboard: bool = False

    def resolve(self) -> "TrainConfig":
        """Fill every recipe field left at None from the recipe (for this model and dataset); idempotent."""
        values = recipe_values(self.recipe, self.model, self.dataset)
        for key in RECIPE_FIELDS:
            if getattr(self, key) is None:
                setattr(self, key, values[key])
        return self

    def validate(self, where: str | None = None, from_file: frozenset[str] | set[str] = frozenset()) -> "TrainConfig":
        """Refuse a value out of range, one line naming it: as the flag that sets it, or, for the settings in
        ``from_file`` (a config file's, not typed), as ``where: key`` (no flag was typed)."""
        with said_of_file(where, from_file):
            self._check()
        return self

    def _check(self) -> None:
        from_recipe = {key for key in RECIPE_FIELDS if getattr(self, key) is None}
        self.resolve()
        self._check_recipe_epochs(from_recipe)
        checks = [
            (1 <= self.epochs <= EPOCHS_LIMIT, f"--epochs must be 1 to {EPOCHS_LIMIT:,}, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"--eval-batch-size must be at least 1, got {self.eval_batch_size}"),
            (0 < self.lr < math.inf, f"--lr must be a positive finite number, got {self.lr}"),
            # beyond float32's largest the optimiser cannot hold the rate (torch's RuntimeError, a failed run)
            (not self.lr > MAX_LR, f"--lr {self.lr:g} is beyond float32's largest number ({MAX_LR:.3g}), in which the "
                                   "optimiser keeps the rate; give a rate such as 0.01"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (0 <= self.weight_decay < math.inf, f"--weight-decay must be a finite number >= 0, got {self.weight_decay}"),
            # decay coupled to the step (SGD's, AdamW's) takes lr x decay of every weight a step: 1 or more sends
            # each weight past zero every step (--weight-decay 1e9 diverged, and the message blamed the rate)
            (self.optimizer == "adam" or self.lr * self.weight_decay < 1,
             f"--weight-decay {self.weight_decay:g} with --lr {self.lr:g} takes lr x decay = "
             f"{self.lr * self.weight_decay:.3g} of every weight each step (1 or more sends them past zero); "
             f"give a decay well below 1/lr = {1 / self.lr if self.lr else math.inf:.3g} "
             f"(e.g. {0.05 if self.optimizer == 'adamw' else 5e-4:g})"),
            (0 <= self.threads <= MAX_THREADS, f"--threads must be in 0..{MAX_THREADS} (0: torch's default), "
                                                f"got {self.threads}"),
            # mixed into every epoch's order and every augmented batch's generator seed, which must fit 64 bits
            (abs(self.seed) <= MAX_SEED, f"--seed must be within +-{MAX_SEED:,}, got {self.seed}"),
            (self.max_steps >= 0, f"--max-steps must be >= 0, got {self.max_steps}"),
            # a negative limit trained the whole run, then its final evaluation saw no image: a failed run
            (self.eval_limit >= 0, f"eval_limit must be >= 0 (0: the whole test set), got {self.eval_limit}"),
            (self.save_every >= 0, f"--save-every must be >= 0, got {self.save_every}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (0 <= self.val_split < 1, f"--val-split must be in [0, 1), got {self.val_split}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (0 <= self.warmup_epochs < self.epochs or self.warmup_epochs == 0,
             f"--warmup-epochs must be in [0, --epochs), got {self.warmup_epochs}"),
            (self.momentum > 0 or self.optimizer != "nesterov" or self.schedule == "onecycle",
             "--optimizer nesterov needs a momentum: give --momentum (e.g. --momentum 0.9)"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (0 <= self.clean_epochs < self.epochs,
             f"--clean-epochs must be in [0, --epochs) (the last epochs without --augment), got {self.clean_epochs}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.ema < 1, f"--ema is a decay in [0, 1) (0: off), got {self.ema}"),
            (0 <= self.target_accuracy <= 100, f"--target-accuracy is a percentage in (0, 100], got {self.target_accuracy}"),
            # a fraction typed for a percentage (0.99 for 99%) stopped the run at its first check, "reached"
            (not 0 < self.target_accuracy <= 1, f"--target-accuracy is a percentage, and {self.target_accuracy:g}% is "
                                                 f"no target; for {self.target_accuracy * 100:g}% give "
                                                 f"--target-accuracy {self.target_accuracy * 100:g}"),
            (1 <= self.evals_per_epoch <= MAX_EVALS, f"--evals-per-epoch must be in 1..{MAX_EVALS:,} (more than "
                                                     f"one per step is one per step), got {self.evals_per_epoch}"),
            # an unset "$AUG" trained a best-recipe run without its augmentation, recorded as "" (a tester's fuzzing)
            (not isinstance(self.augment, str) or bool(self.augment.strip()),
             "--augment is empty (an unset variable?); give none for no augmentation, or leave it out for the "
             "recipe's"),
            (self.teacher is None or bool(self.teacher.strip()),
             "--teacher is an empty path (an unset variable?); give a run folder or its checkpoint, or leave it out"),
            (0 < self.distill <= 1, f"--distill is the weight of the teacher's term, in (0, 1], got {self.distill}"),
            (0 < self.distill_temperature <= 100,
             f"--distill-temperature must be in (0, 100], got {self.distill_temperature}"),
        ]
        for ok, message in checks:
            if not ok:
                raise CnnlabError(message)

    def _check_recipe_epochs(self, from_recipe: set[str]) -> None:
        """A recipe's count of epochs (its last clean ones, its warm-up) that does not fit the ``--epochs`` typed:
        said as the recipe's, with both ways past it (no one typed the recipe's number)."""
        for key, what in (("clean_epochs", "its last epochs without --augment"), ("warmup_epochs", "its warm-up")):
            value = getattr(self, key)
            if key in from_recipe and "epochs" not in from_recipe and value and not value < self.epochs:
                raise CnnlabError(f"--recipe {self.recipe} sets {key} {value:g} ({what}), which must be below "
                                  f"--epochs {self.epochs}; give {flag(key)} N below {self.epochs} (0: none), or "
                                  f"--epochs {math.floor(value) + 1} or more")

    def to_dict(self) -> dict:
        """Every field by name, as ``config.json`` records them (None where the recipe has not been applied)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "the run's config") -> "TrainConfig":
        """A saved config. Fields added since it was written take the values that reproduce its run. A ``data_dir``
        beside an ``idx:``/``folder:`` dataset, which reads its own directory, is dropped: runs recorded both before
        ``--data-dir`` was refused with them, and it meant nothing (kept, it made their resumes refused)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known, key=str)
        if unknown:  # no cnnlab version removed a field: a typo, or a newer cnnlab's (unknowable here)
            raise CnnlabError(f"{where}: unknown settings {unknown}{_did_you_mean(unknown, known)}; fix the key (the "
                              "settings are the flags' names with '_' for '-', see 'cnnlab train --help')")
        cfg = cls(**{**ADDED_FIELDS, **typed_values(data, where)})
        if isinstance(cfg.dataset, str) and dataset_kind(cfg.dataset) in DIRECTORY_KINDS:
            cfg.data_dir = None
        return cfg

    @classmethod
    def from_file(cls, path: str | Path, *, flag: str | None = None) -> "TrainConfig":
        """A config file: a run's ``config.json`` (re-runs it exactly), or a JSON/YAML mapping of field names to
        values (the fields it leaves out keep their defaults; recipe fields come from its recipe). ``flag``: how
        the caller named the file, which refusals repeat (the CLI's ``--config``); else ``TrainConfig.from_file(
        'PATH')``, as a Python caller wrote it."""
        path = as_path(path, flag or "TrainConfig.from_file(path)")
        where = f"{flag} {path}" if flag else f"TrainConfig.from_file({str(path)!r})"
        if path.suffix.lower() in (".pt", ".pth", ".safetensors", ".onnx"):  # "not text (byte 64 is not UTF-8)"
            raise CnnlabError(f"{where}: a weights file, not settings; give its run folder (or the run's config.json), "
                              "or a YAML/JSON settings file")
        text = read_small_text(path, where)
        try:
            data = _json(text) if path.suffix == ".json" else _yaml(text)
        except DuplicateSetting as err:  # the parsers would keep the last one, and the first would be ignored
            raise CnnlabError(f"{where}: {err}; keep the one you mean") from None
        except (ValueError, RecursionError) as err:  # nesting thousands deep recurses in both parsers
            why = "nested too deeply" if isinstance(err, RecursionError) else first_line(err)[:200]
            raise CnnlabError(f"{where}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} "
                              f"({why}); fix the file") from None
        if not isinstance(data, dict):
            raise CnnlabError(f"{where}: expected a mapping of settings (e.g. 'model: resnet'), "
                              f"got {type(data).__name__}")
        if isinstance(data.get("config"), dict):  # a run's config.json: every value, as the run had them
            _refuse_settings_beside(data, where)
            return cls.from_dict(data["config"], f"{where}: config")
        if "config" in data and {"data", "model_args"} & set(data):  # a run's config.json, its settings damaged
            raise CnnlabError(f"{where}: a run's config.json whose 'config' is not its settings (got "
                              f"{type(data['config']).__name__}): the run folder is damaged; give another run's "
                              "config.json, or a settings file")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            raise CnnlabError(f"{where}: unknown settings {unknown}{_did_you_mean(unknown, known)}; they "
                              "are the flags' names with '_' for '-' (see 'cnnlab train --help')")
        return cls(**typed_values(data, where))


#: The top-level keys of a run's config.json (engine._write_config): its settings are inside "config".
RUN_RECORD_KEYS = frozenset({"config", "model_args", "data", "world_size", "cpu_threads", "eval_batch_sizes", "teacher"})


def _refuse_settings_beside(record: dict, where: str) -> None:
    """A setting (a field of :class:`TrainConfig`, or a near miss of one's name) written beside a run record's
    ``config``, where it would be ignored, is refused: "put them inside it". Another key there is no setting: a
    record key this cnnlab does not know (a newer cnnlab's run), ignored as the record's other keys (``data``,
    ``model_args``...) are; it was refused with "put them inside it", and inside it was refused again."""
    known = sorted(f.name for f in fields(TrainConfig))
    beside = sorted((k for k in set(record) - RUN_RECORD_KEYS if k in known or close_match(k, known)), key=str)
    if beside:  # settings beside 'config' would be ignored: the run's own are inside it
        raise CnnlabError(f"{where}: unknown settings {beside} beside 'config' (put them inside it)")


def _did_you_mean(unknown: list, known: set[str]) -> str:
    """`` (did you mean 'epochs'?)`` for the unknown keys that look like a setting's name (:func:`cnnlab.errors.
    close_match`); '' for none."""
    close = {str(k): close_match(k, sorted(known)) for k in unknown}
    hints = [f"{m!r} for {k!r}" if len(close) > 1 else repr(m) for k, m in close.items() if m]
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


@contextlib.contextmanager
def said_of_file(where: str | None, from_file) -> Iterator[None]:
    """A refusal inside (of :meth:`TrainConfig.validate`, or of what a run checks outside it: ``engine.
    check_settings``) said of the config file ``where``'s settings in ``from_file`` as the file's keys
    (:func:`_in_file`); its class kept."""
    try:
        yield
    except CnnlabError as err:
        said = _in_file(str(err), where, from_file)
        if said == str(err):
            raise
        raise err.reworded(said) from None


def _in_file(message: str, where: str | None, keys) -> str:
    """A refusal that names flags (``--batch-size must be...``, ``--weight-decay 1e9 with --lr 0.01``) said of a
    config file's settings, which no flag set: ``r.yaml: batch_size must be...``, each of the file's settings by its
    key (a typed flag keeps its name)."""
    if where is None:
        return message
    named = False

    def rename(match: re.Match) -> str:
        nonlocal named
        key = match.group(1).replace("-", "_")
        named = named or key in keys
        return key if key in keys else match.group(0)

    said = FLAG_IN_TEXT.sub(rename, message)
    return f"{where}: {said}" if named else message


#: A flag's name in a refusal: ``--weight-decay`` (not a negative number such as ``-5``); the API says it as an
#: argument (``api.as_arguments``), a settings file as its key (:func:`_in_file`).
FLAG_IN_TEXT = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")


#: What each annotation in :class:`TrainConfig` accepts from a JSON or YAML file.
_KINDS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
#: A value of each kind for the refusal's example.
_EXAMPLES = {"int": 10, "float": 0.01, "str": "resnet", "bool": True}
#: Examples for the settings whose default (None) and recipe say nothing.
_FIELD_EXAMPLES = {"data_dir": "data", "teacher": "runs/RUN"}


def typed_values(data: dict, where: str, assign: str = ": ") -> dict:
    """``data`` with each value checked against its field's type: ``epochs: ten`` is one line naming the field,
    not a TypeError later. A float field also takes a number written as a string, as PyYAML reads ``1e-3``
    (YAML 1.1 wants ``1.0e-3``). ``assign`` joins a field and a value in the refusal's example (``=`` for
    keyword arguments)."""
    out = dict(data)
    for f in fields(TrainConfig):
        if f.name not in data:
            continue
        value, names = data[f.name], [n.strip() for n in str(f.type).split("|")]
        if value is None and "None" in names:
            continue
        if "float" in names and isinstance(value, str):
            try:
                value = out[f.name] = float(value)
            except ValueError:
                pass
        kinds = tuple(k for n in names for k in _KINDS.get(n, ()))
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise CnnlabError(_type_refusal(f, names, value, where, assign))
    return out


def _type_refusal(f: dataclasses.Field, names: list[str], value, where: str, assign: str) -> str:
    """The one line for a value of the wrong type, with an example (the field's default, or the lecture's
    value, where it has one)."""
    python = assign != ": "
    wanted = " or ".join(n for n in names if n != "None")
    if "None" in names:
        wanted += " (or None)" if python else " (or null)"
    example = next((v for v in (f.default, RECIPES["lecture"].get(f.name), _FIELD_EXAMPLES.get(f.name))
                    if v is not None and v is not dataclasses.MISSING and not isinstance(v, bool)),
                   _EXAMPLES.get(names[0], 1))
    if python:
        example = repr(example)
    elif isinstance(example, bool):
        example = str(example).lower()
    return f"{where}: {f.name} must be {wanted}, got {short_repr(value)}; fix the value (e.g. {f.name}{assign}{example})"


OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
#: The --schedule names: the schedules' one table's (cnnlab.schedules.SCHEDULES, which the engine builds from).
SCHEDULES = tuple(SCHEDULE_TABLE)
PRECISIONS = ("fp32", "bf16")
#: The ops of ``--augment`` (cnnlab.augment._OPS, which imports torch), for its help, which answers without torch;
#: of them, those that mix the labels too (augment.MIXING). tests/test_augment.py fails, naming an op, until they agree.
AUGMENT_OPS = ("shift", "affine", "elastic", "flip", "erase", "mixup", "cutmix")
LABEL_MIXING_OPS = ("mixup", "cutmix")
#: The largest seed whose batch seeds (``augment.batch_seed``: seed * 1,000,003 * 100,003 + ...) fit torch's 64 bits.
MAX_SEED = 90_000_000
#: float32's largest number: the optimisers keep the rate in float32 (a larger one raised torch's RuntimeError).
MAX_LR = 3.4028234663852886e38
#: More threads than any machine has cores (torch raised an overflow's ValueError at 2**63).
MAX_THREADS = 4096


def valid_threads(n) -> bool:
    """A CPU thread count a run can have trained at (config.json's ``cpu_threads`` entries; ``--threads``' bound)."""
    return type(n) is int and 1 <= n <= MAX_THREADS


def recorded_threads(record: dict) -> list[int | None] | None:
    """The CPU threads each part of a run trained at, from its config.json as read (``cpu_threads``): a count no run
    can have is unknown (None); None when it records none (an older cnnlab's run, a run off the CPU)."""
    threads = record.get("cpu_threads")
    return ([n if valid_threads(n) else None for n in threads]
            if isinstance(threads, list) and threads and len(threads) <= 10_000 else None)
#: More checks per epoch than steps are one per step (:class:`cnnlab.observers.TargetStop`); a bound for the value.
MAX_EVALS = 1_000_000

#: Fields added after runs were first saved, with the values that reproduce those runs (no EMA, biases decayed,
#: augmentation to the end).
ADDED_FIELDS = {"bias_decay": True, "warmup_epochs": 0.0, "ema": 0.0, "clean_epochs": 0, "teacher": None, "distill": 0.5,
                "distill_temperature": 1.0}

#: Named recipes: the values they set unless a flag sets them explicitly. Every recipe sets every RECIPE_FIELD.
RECIPES: dict[str, dict] = {
    # The lecture's settings. Channels-last memory format (the same fp32 math, summed in another order by
    # oneDNN's kernels) since cnnlab 0.2: 1.2-1.4x faster on both nets on the CPU (docs/speed.md); runs agree
    # with the NCHW runs of cnnlab 0.1 within noise, not to the last bit: --no-channels-last is that path.
    "lecture": {"epochs": 10, "batch_size": 64, "optimizer": "sgd", "lr": 0.01, "momentum": 0.5,
                "weight_decay": 0.0, "bias_decay": True, "schedule": "constant", "warmup_epochs": 0.0,
                "augment": "none", "clean_epochs": 0, "label_smoothing": 0.0, "ema": 0.0, "evals_per_epoch": 1,
                "channels_last": True, "precision": "fp32"},
    # Reach 99% test accuracy as early as possible: Adam with a one-cycle schedule over a
    # short run, a larger batch, and frequent checks against the target (see docs/speed.md).
    # Measured on 2 CPU cores (docs/speed.md): label smoothing 0.1 moved the residual net's first
    # 99% from epoch 1.4-1.5 to 1.0 on every seed; channels-last is 1.2-1.3x faster on both nets
    # here (and keeps fp32); shift augmentation delayed 99% to epoch 1.25, so it is off. bf16 autocast (since
    # 2026-12-05, night; --precision fp32 is the recipe before, bit for bit): on a validation split it reached 99%
    # no later than fp32 (residual net at epochs 0.75, 0.81, 0.94 against 0.75, 0.81 and not reached; the Inception
    # net on all 3 seeds against 1 of 3), and on the test set both nets got there at the same epochs, 1.17x (residual)
    # and 1.65x (Inception) sooner (docs/speed.md). Evaluation stays fp32.
    "fast": {"epochs": 2, "batch_size": 128, "optimizer": "adam", "lr": 0.006, "momentum": 0.0,
             "weight_decay": 0.0, "bias_decay": True, "schedule": "onecycle", "warmup_epochs": 0.0,
             "augment": "none", "clean_epochs": 0, "label_smoothing": 0.1, "ema": 0.0, "evals_per_epoch": 4,
             "channels_last": True, "precision": "bf16"},
    # The most accuracy these nets reach in under 15 minutes on 2 CPU cores, every choice made on a held-out
    # validation split of the train set (--val-split), never on the test set (docs/accuracy.md has the
    # ablation, 3 seeds each): AdamW without decay on biases, one-cycle, label smoothing 0.1, an EMA of the
    # weights, random affine augmentation. On the residual net's validation split (3 seeds): shift instead of
    # affine -0.01 points, no label smoothing -0.02, Adam without weight decay -0.04, no EMA -0.004; 30 or 40
    # epochs, rotations of 15-20 degrees, translations of 20% and elastic distortion were no better; nor was ending
    # on unaugmented digits (the last 3 epochs: +0.02 points, higher validation loss on every seed), nor SGD (with
    # one-cycle; or with Nesterov momentum and a step schedule: -0.04 points, a lower loss).
    "best": {"epochs": 15, "batch_size": 128, "optimizer": "adamw", "lr": 0.008, "momentum": 0.0,
             "weight_decay": 0.05, "bias_decay": False, "schedule": "onecycle", "warmup_epochs": 0.0,
             "augment": "affine:rotate=10,scale=0.1,translate=0.1", "clean_epochs": 0, "label_smoothing": 0.1,
             "ema": 0.999, "evals_per_epoch": 1, "channels_last": True, "precision": "fp32"},
}
#: Values that differ per model and dataset kind, on top of the recipe's: ``{recipe: {(model, kind): values}}``,
#: ``"*"`` matching any model or kind (the more specific entry wins).
RECIPE_VARIANTS: dict[str, dict[tuple[str, str], dict]] = {
    "fast": {
        # The residual net on MNIST: one epoch at batch 64 (the one-cycle schedule anneals within it) first reached
        # 99% on a validation split (seeds 0-2, 10% held out, checked 16 times an epoch) at epochs 0.75, 0.81, 1.00,
        # against 1.06, 1.19, 1.37 with 2 epochs at batch 128; lr 0.01 no earlier, lr 0.004 and batch 128 over one
        # epoch did not always get there, batch 32 no earlier and slower per image (docs/speed.md). The Inception
        # net does not reach 99% within one epoch on every seed, so it keeps the 2 epochs at batch 128.
        ("resnet", "mnist"): {"epochs": 1, "batch_size": 64},
    },
    "best": {
        # The Inception net: validation 99.36% at lr 0.004 (15 epochs), 99.26% with cosine at lr 0.003. Half the
        # residual net's rate was tried after its test figure at 0.008 (99.31 +- 0.10%, 3 seeds): a lapse of the
        # validation-only rule that docs/accuracy.md records; measured since on validation over the 10 epochs
        # (seed 0): lr 0.004 99.42%, lr 0.008 99.32%, lr 0.004 without augmentation 99.32%. Its steps cost 4x the
        # residual net's (70 s an epoch on 2 cores): 10 epochs keep a run under 15 minutes, a choice by time.
        ("inception", "*"): {"lr": 0.004, "epochs": 10},
        # Clothes are not digits: a horizontal flip keeps the class. Validation (residual net, one seed):
        # shift+flip+erase, 30 epochs, lr 0.004 92.17%; lr 0.008 91.56%; shift+flip, lr 0.008, 15 epochs 91.33%.
        # Its last 10 epochs without augmentation (--clean-epochs; the net fits its augmented batches to only
        # ~91.6%). Validation, seeds 0-2: none 92.62, 92.73, 92.17%; the last 5 clean 92.72, 93.23, 92.48%; the
        # last 10 clean 92.90, 93.83, 93.03% (+0.44 points over 5, the validation loss lower on every seed); the
        # last 15 overfit (seeds 0-1: 92.78, 93.15% against 93.08, 93.03%, the loss higher on both). Since
        # 2026-12-05: --clean-epochs 5 is the recipe of that morning, --clean-epochs 0 the one before.
        ("*", "fashion-mnist"): {"augment": "shift+flip+erase:p=0.5", "lr": 0.004, "epochs": 30, "clean_epochs": 10},
        # The residual net: 45 epochs (the last 10 clean). Validation on an AVX-512 machine, seeds 0-2, 1 thread:
        # 45 epochs 93.22, 93.70, 93.33% (loss 0.2691, 0.2664, 0.2691); 60 epochs 93.27, 93.62, 92.95% (0.2648,
        # 0.2626, 0.2707); 30 epochs 93.08, 93.03, 93.03% (0.2718, 0.2721, 0.2765). Since 2026-12-05 (night);
        # --epochs 30 is the recipe before. About 5 minutes on 2 AVX-512 cores, about 20 on the AVX2 machine.
        ("resnet", "fashion-mnist"): {"epochs": 45},
        # ...but the Inception net's 10 epochs (time) hold here too, and it does best with no augmentation at all:
        # validation (seed 0, 10 epochs, 10% held out) none 91.18%, flip 90.70%, shift+flip 89.82%,
        # shift+flip+erase 89.08%. With only two nonlinear stages (docs/accuracy.md) it underfits, and
        # augmentation is regularisation it cannot use. Batch 64 (twice the steps in the same epochs): validation,
        # seeds 0-2, 91.30, 91.13, 91.25% against 91.10, 91.07, 91.00% at 128, the loss lower on every seed
        # (2026-12-05; --batch-size 128 is the recipe before). Less regularisation (no label smoothing, no weight
        # decay: 90.95%, seed 0) was no better; 15 epochs 91.37% (seed 0) but 1.5x the time.
        ("inception", "fashion-mnist"): {"epochs": 10, "augment": "none", "clean_epochs": 0, "batch_size": 64},
    },
}


#: Models that take another model's recipe variants: the Inception net with GoogLeNet's ReLUs in its modules
#: (models/inception.py) costs the same per step and gets the Inception net's values, not tuned for it.
RECIPE_MODEL_AS = {"inception_relu": "inception"}


def recipe_values(recipe: str, model: str, dataset: str) -> dict:
    """Every RECIPE_FIELD's value under ``recipe`` for this model and dataset."""
    if recipe not in RECIPES:
        raise CnnlabError(f"--recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    values = dict(RECIPES[recipe])
    kind, model = dataset_kind(dataset), RECIPE_MODEL_AS.get(model, model)
    variants = RECIPE_VARIANTS.get(recipe, {})
    for key in (("*", "*"), (model, "*"), ("*", kind), (model, kind)):
        values.update(variants.get(key, {}))
    return values


def recipe_rate(cfg: TrainConfig) -> tuple[str, float] | None:
    """A learning rate measured to train ``cfg``'s model on its dataset with its optimizer, and the recipe that sets
    it: its own recipe's where that recipe's optimizer is ``cfg``'s, else the lowest of the recipes whose is; None
    where no recipe uses that optimizer (nesterov). What a diverged run's refusal names (``Trainer``): a tenth of
    the rate that diverged (1e6) diverged again, about six times before a rate that trains."""
    rates = [(name, values["lr"]) for name in RECIPES
             if (values := recipe_values(name, cfg.model, cfg.dataset))["optimizer"] == cfg.optimizer]
    return next((found for found in rates if found[0] == cfg.recipe), min(rates, key=lambda r: r[1], default=None))


#: Fields that say how a process runs a run, not what the run is: a resume may change them, and they do not make
#: runs incomparable (compare's config hash leaves them out).
PROCESS_FIELDS = ("max_steps", "device", "threads", "malloc_tuning")
#: The process fields a resume takes from the invocation even when not given: the step limit is the process's own
#: (``--resume RUN`` without it trains to the end). The others are the run's own unless given: a resume without
#: ``--threads`` of a run trained at 1 thread went on at torch's default, and ended with other weights.
INVOCATION_FIELDS = ("max_steps",)
#: Fields that do not change what a run is either, but that a resume keeps from the run unless given.
ADJUSTABLE_FIELDS = ("data_dir", "save_every", "eval_batch_size", "tensorboard")


#: What a resume may change of a run (:func:`resumed_config`): its process's fields, the adjustable ones, and its
#: epochs (where its schedule allows). Every other field is what the run *is* (:func:`other_run`).
RESUME_MAY_CHANGE = PROCESS_FIELDS + ADJUSTABLE_FIELDS + ("epochs",)


def other_run(own: dict, other: dict, same_data: bool | None = None) -> list[str]:
    """The fields in which the saved settings ``other`` (a checkpoint's) are another run's than ``own`` (the run's
    config.json, or the checkpoint a resume continues): those a resume may not change (not
    :data:`RESUME_MAY_CHANGE`), each read as a run's config is (:meth:`TrainConfig.from_dict`: a field added since at
    the value that reproduces the older run), in the order of :class:`TrainConfig`. ``epochs`` differs where a resume
    of ``own`` could not be given ``other``'s (:func:`epochs_change`: another length of a run whose schedule or clean
    epochs depend on it). ``same_data``: whether the two runs' records of their data (their fingerprints:
    ``cnnlab.data.dataset.same_data``) are of the same data; None where that is not known. ``dataset`` differs where
    that data is other data (whatever its place is called), or where its place differs, unless the same data moved
    (:func:`relocated`, as :func:`resumed_config` takes it: the resume checks it is the same data): any two ``idx:``
    directories were taken for one moved, and another run's best.pt beside a resumed checkpoint was written over. Empty:
    the same run, perhaps at another epoch, lengthened, resumed on another device, or with its data moved. A
    :class:`CnnlabError` when either is no run's config."""
    mine, theirs = TrainConfig.from_dict(own), TrainConfig.from_dict(other)

    def differs(key: str) -> bool:
        if key == "dataset":
            return same_data is False or (mine.dataset != theirs.dataset
                                          and not (same_data and relocated(mine.dataset, theirs.dataset)))
        if key == "epochs":  # (None: a config written by hand, its recipe's)
            return mine.epochs != theirs.epochs and (None in (mine.epochs, theirs.epochs)
                                                     or bool(epochs_change(mine, theirs.epochs)))
        return key not in RESUME_MAY_CHANGE and getattr(mine, key) != getattr(theirs, key)

    return [f.name for f in fields(TrainConfig) if differs(f.name)]


#: The settings that are each process's own in a torchrun group (:func:`rank_settings`): how it runs (its device,
#: threads, allocator), where its machine keeps its files (its data's place, whose contents the ranks compare by their
#: fingerprint instead, and its ``--data-dir``), and ``tensorboard``, written by rank 0 alone.
RANK_OWN_FIELDS = ("device", "threads", "malloc_tuning", "data_dir", "dataset", "tensorboard")


def rank_settings(cfg: TrainConfig) -> dict:
    """What every process of a torchrun group must have the same of its resolved settings, for the ranks to compare
    (``engine.refuse_other_data_on_ranks``): every field but :data:`RANK_OWN_FIELDS`, ``teacher`` as whether there is
    one (its file's place is its machine's). Ranks started by hand with other flags trained each at its own --lr on
    averaged gradients, aborted in gloo's C++ (another --batch-size) or hung at the end (another --epochs)."""
    values = {f.name: getattr(cfg, f.name) for f in fields(TrainConfig) if f.name not in RANK_OWN_FIELDS}
    values["teacher"] = cfg.teacher is not None
    return values


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _no_effect(cfg: TrainConfig) -> dict[str, str | None]:
    """For each setting that acts only together with another: why it has no effect in ``cfg`` (None: it acts)."""
    sgd = cfg.optimizer in ("sgd", "nesterov")
    return {
        "momentum": (f"--optimizer {cfg.optimizer} has no momentum setting (it is SGD's: sgd, nesterov)" if not sgd
                     else "--schedule onecycle cycles the momentum itself, between 0.95 and 0.85"
                     if cfg.schedule == "onecycle" else None),
        "warmup_epochs": (None if cfg.schedule in WARMUP_SCHEDULES else
                          f"it is the warm-up of --schedule {either(WARMUP_SCHEDULES)}, not of {cfg.schedule}"
                          + (" (which warms up over its first 30% itself)" if cfg.schedule == "onecycle" else "")),
        "distill": None if cfg.teacher else "it weighs a teacher's term, and there is no --teacher",
        "distill_temperature": None if cfg.teacher else "it is the teacher's temperature, and there is no --teacher",
        "evals_per_epoch": (None if cfg.target_accuracy else
                            "checks inside an epoch are made only for --target-accuracy; every epoch ends with one"),
        "clean_epochs": (None if cfg.augment != "none" else
                         "it turns --augment off for the last epochs, and there is no augmentation (--augment none)"),
        "bias_decay": None if cfg.weight_decay else "there is no weight decay (--weight-decay 0) to apply or not",
    }


def flag_with_value(key: str, value) -> str:
    """How the command line spells a setting: ``--lr 0.1``, ``--no-bias-decay``."""
    if isinstance(value, bool):
        return flag(key) if value else "--no-" + flag(key)[2:]
    return f"{flag(key)} {value:g}" if isinstance(value, float) else f"{flag(key)} {value}"


def check_given_settings_act(cfg: TrainConfig, given, shown=flag_with_value) -> None:
    """Refuse a setting given explicitly (a flag typed, an argument passed) that would change nothing in the
    resolved ``cfg`` (``--momentum 0.9`` with Adam, ``--distill`` without ``--teacher``...): one line naming it,
    why, and the fix. Values from a recipe or a config file are not checked: only what the user gave.
    ``shown(key, value)`` spells the setting as the user gave it."""
    for key, why in _no_effect(cfg).items():
        value = getattr(cfg, key)
        neutral = key in ("momentum", "warmup_epochs", "clean_epochs") and not value  # 0: asks for nothing
        if why and key in given and not neutral:
            raise CnnlabError(f"{shown(key, value)} has no effect here: {why}; drop it, or give what it acts with")


def relocated(recorded: str, given: str) -> bool:
    """Whether ``given`` names the same kind of dataset directory as ``recorded`` in another place (a folder the user
    moved): a resume may take it, and then refuses it unless it holds the data the run trained on."""
    return dataset_kind(recorded) in DIRECTORY_KINDS and dataset_kind(given) == dataset_kind(recorded)


@dataclass(frozen=True)
class Naming:
    """How a one-line refusal names the settings a user gave: as the command line's flags (``--lr 0.1``), or as
    the Python API's arguments (``lr=0.1``: its users typed no flags)."""

    api: bool = False

    def setting(self, key: str, value) -> str:
        return f"{key}={value!r}" if self.api else f"{flag(key)} {value}"

    def value(self, value) -> str:
        return repr(value) if self.api else str(value)

    @property
    def resume(self) -> str:
        return "cnnlab.train(resume=...)" if self.api else "--resume"

    def resumed(self, run) -> str:
        """The resume of ``run`` as the user asked for it: ``--resume RUN``, ``cnnlab.train(resume='RUN')``."""
        return f"cnnlab.train(resume={str(run)!r})" if self.api else f"--resume {shell_quoted(str(run))}"

    @property
    def new_run(self) -> str:
        return "cnnlab.train(..., out=...)" if self.api else "--out"


#: The command line's way of naming settings (:class:`Naming`).
FLAGS = Naming()


def resumed_config(saved: TrainConfig, invocation: TrainConfig, changes: dict | None = None,
                   naming: Naming = FLAGS) -> TrainConfig:
    """The config a resume runs with: the run's own, with this invocation's step limit (``INVOCATION_FIELDS``).

    ``changes`` are the values the user gave explicitly: the process and adjustable fields among them apply (the
    run's own device, threads, allocator setting, evaluation batch... otherwise). A change to what the run *is*
    (model, lr, batch size...) is refused with one line naming it (as ``naming`` names settings); ``epochs`` may grow
    where the schedule allows it (a constant learning rate), which extends a finished run.
    """
    cfg = dataclasses.replace(saved)
    for key in INVOCATION_FIELDS:
        setattr(cfg, key, getattr(invocation, key))
    changes = changes or {}
    for key in PROCESS_FIELDS + ADJUSTABLE_FIELDS:
        if key in changes:
            setattr(cfg, key, changes[key])
    free = PROCESS_FIELDS + ADJUSTABLE_FIELDS
    changed = {k: v for k, v in changes.items() if k not in free and v != getattr(saved, k)}
    if "dataset" in changed and relocated(saved.dataset, changed["dataset"]):
        cfg.dataset = changed.pop("dataset")  # the same data moved; the resume checks it is the same
    epochs = changed.pop("epochs", None)
    if changed:
        named = ", ".join(f"{naming.setting(k, v)} (the run's: {naming.value(getattr(saved, k))})"
                          for k, v in sorted(changed.items()))
        raise RunError(f"{naming.resume} continues a run with its own settings, and {named} would change it; "
                       f"drop {'them' if naming.api else 'these flags'}, or start a new run with {naming.new_run}")
    if epochs is not None:
        if why := epochs_change(saved, epochs, naming):
            raise RunError(why)
        cfg.epochs = epochs
    return cfg


def epochs_change(saved: TrainConfig, epochs: int, naming: Naming = FLAGS) -> str:
    """Why a run of the settings ``saved`` cannot be given another number of ``epochs`` (a resume's ``--epochs``, or
    a checkpoint of another length beside it: :func:`other_run`): its last epochs trained without augmentation
    (``clean_epochs``), or a schedule planned over its length (any but a constant rate); "" where it can (the same
    number, or a constant rate: the run lengthened or shortened)."""
    if epochs == saved.epochs:
        return ""
    asked = naming.setting("epochs", epochs)
    if saved.clean_epochs:
        return (f"{asked}: the run trains its last {saved.clean_epochs} of {saved.epochs} epochs without augmentation, "
                f"and a run of another length would have augmented other epochs; start a new run with {asked}")
    if saved.schedule != "constant":
        how = "extended" if epochs > saved.epochs else "shortened"
        return (f"{asked}: the run's {saved.schedule} learning-rate schedule was planned for "
                f"{plural(saved.epochs, 'epoch')} and cannot be {how} without changing the rates already used; "
                f"start a new run with {asked}")
    return ""
