"""The Python API: what ``import cnnlab`` offers (docs/api.md shows it in use).

    import cnnlab
    net = cnnlab.create_model("resnet", pretrained=True)          # the shipped weights, ready to use
    result = cnnlab.train("resnet", recipe="fast", epochs=1)      # recipes applied exactly as the CLI does
    run = cnnlab.load_run("latest")                                # config, metrics, summary, status, weights
    predict = run.predictor()                                      # callable: paths, PIL images, arrays, tensors
    predict("my_digit.png").label

Everything here calls the same library functions as the command line; nothing is special-cased.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import inspect
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

# torch (~1.3 s, 7-10 s cold) and the library behind it (engine, checkpoint, evaluation, models, predict,
# pretrained) are imported inside the functions that need them: list_runs and load_run read a run's files only,
# and answer as fast as 'cnnlab runs' does.
from cnnlab.config import FLAG_IN_TEXT, Naming, TrainConfig, check_given_settings_act, typed_values
from cnnlab.dataset_names import canonical_dataset_name
from cnnlab.errors import CnnlabError, RunError, did_you_mean, printable, shell_unquoted, short_repr, yes_no
from cnnlab.fileio import as_path, exists, expand_user, is_file, paths_explained, read_json, resolved
from cnnlab.runs import (CHECKPOINTS, DEFAULT_CHECKPOINT, LATEST, check_columns, describe_listed, describe_run,
                         find_runs, is_cnnlab_run, matches, read_metrics, resolve_run, run_config)

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from cnnlab.engine import TrainResult
    from cnnlab.evaluation import EvalResult
    from cnnlab.predict import Predictor

#: The names of the library that this module offers (``cnnlab.TrainResult``), each imported on first access;
#: ``cnnlab.Predictor`` is :func:`predictor_class`'s.
_LAZY = {"TrainResult": "cnnlab.engine", "EvalResult": "cnnlab.evaluation"}


def __getattr__(name: str):
    if name == "Predictor" or name in _LAZY:
        value = predictor_class() if name == "Predictor" else getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnlab.api' has no attribute {name!r}")


def device_name(device, where: str = "device") -> str:
    """A device argument as the library takes it: a name (``"auto"``, ``"cpu"``, ``"cuda:1"``), or a
    ``torch.device`` as its name; anything else is one line."""
    import torch  # the library's (see the top)

    if isinstance(device, torch.device):
        return str(device)
    if not isinstance(device, str):
        raise CnnlabError(f"{where} must be a device name ('auto', 'cpu', 'cuda', 'cuda:N', 'mps') or a torch.device, "
                          f"got {short_repr(device)}")
    return device


#: One word as :func:`cnnlab.errors.shell_quoted` writes a name, read by the grammar it writes, whole and possessively
#: (no quote inside a name ends it): ``$'...'`` (backslash escapes), ``'...'`` (a quote inside written ``'\''``), or
#: plain text without quotes (a ``,`` or ``:`` inside it, not at its end). A quote after plain text ends the word.
_SHELL_WORD = r"\$'(?:[^'\\]|\\.)*+'|'(?:[^']|'\\'')*+'|(?:[,:](?=[^\s'])|[^\s;,:()'\"\\])++"
#: A command-line flag in a refusal, and the value after it: ``--device cuda``, ``--val-split``, ``--teacher 'a b'``.
_FLAG_AND_VALUE = re.compile(FLAG_IN_TEXT.pattern + r"(?: (%s))?" % _SHELL_WORD)
#: The command line's flags whose argument has another name in the API (``--checkpoint best``: ``which='best'``).
_ARGUMENT_NAMES = {"checkpoint": "which"}
#: The command line's commands (its parser's, as a test checks): ``cnnlab process`` or ``cnnlab writes`` is none.
COMMANDS = ("train", "compare", "evaluate", "runs", "models", "data", "analyze", "predict", "export", "export-weights",
            "serve")
#: A ``cnnlab`` command named in a message (``cnnlab evaluate RUN --dataset ...``, ``'cnnlab train --resume r1'``).
_COMMAND = re.compile(r"(?<![^\s(\[])('?)cnnlab (%s)(?![\w-])" % "|".join(sorted(COMMANDS, key=len, reverse=True)))
#: One word of a command, after its space (:data:`_SHELL_WORD`).
_WORD = re.compile(r" (%s)" % _SHELL_WORD)
#: What may follow a value in a message: its end, a space or a mark (``--out r: ...``), a closing quote.
_VALUE_END = re.compile(r"$|[\s;:,()']|\.(?:\s|$)")
#: A placeholder in a command (``RUN``, ``NEW_PLACE``, ``N``): said as it is, not as a string.
_PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")


def as_arguments(message: str, given: dict, paths: tuple = ()) -> str:
    """A library refusal said to a caller of the API, who typed no flags: each flag by its argument's name
    (``--val-split``: ``val_split``); a flag with the value the caller gave as the caller wrote it (``--device cuda``:
    ``device='cuda'``); a flag the API names otherwise, or a name quoted to be copied, with its value in Python
    (``--checkpoint last``: ``which='last'``; ``--teacher 'a b'``: ``teacher='a b'``). A ``cnnlab train`` command in
    it is the call that does the same (``'cnnlab train --resume r1'``: ``cnnlab.train(resume='r1')``, its quoted
    names read by the grammar :func:`cnnlab.errors.shell_quoted` writes); another command, or one with a flag
    ``cnnlab.train`` has no argument for (``--config``), is quoted as it is, flags and all: a command to run.
    The folders and files of the call (``paths``, and the path arguments in ``given``: ``out``, ``resume``,
    ``teacher``), which the library names as they are, are read as the names they are, whatever they hold (a quote,
    a newline, a flag, a command): ``--out kids' run``: ``out="kids' run"``; ``/home/u/cnnlab train --out x: ...``
    as it is."""
    names = _names(given, paths)
    said, at = [], 0
    for start, end, part in _spans(message, given, names):
        said += [_FLAG_AND_VALUE.sub(lambda match: _argument(match, given), message[at:start]), part]
        at = end
    return "".join(said) + _FLAG_AND_VALUE.sub(lambda match: _argument(match, given), message[at:])


def _argument(match: re.Match, given: dict) -> str:
    """One flag of a refusal (and its value) as the argument the API's caller gave or may give."""
    flag, word = match.group(1).replace("-", "_"), match.group(2)
    key = _ARGUMENT_NAMES.get(flag, flag)
    if word is None:
        return key
    if key in given and str(given[key]) in (word, shell_unquoted(word)):
        return f"{key}={given[key]!r}"
    if key != flag or word.startswith(("'", "$'")):  # a value of the API's own argument (which), a name to copy
        return f"{key}={_python_value(word, _kinds().get(key, 'str'))}"
    return f"{key} {word}"


#: The API's arguments that name a folder or a file, which the library's messages name as they are.
_PATH_ARGUMENTS = ("out", "resume", "teacher", "run")


def _names(given: dict, paths: tuple) -> list[str]:
    """The texts by which a message may name the call's folders and files: each as given, as a ``Path`` says it, made
    absolute and resolved, and a checkpoint's folder; longest first."""
    found = set()
    for path in (*paths, *(given.get(k) for k in _PATH_ARGUMENTS)):
        if spelt := _spellings(path):
            forms = {*spelt, str(Path(spelt[0]).absolute()), os.path.realpath(spelt[0])}
            found |= forms | {str(Path(f).parent) for f in forms if f.endswith(".pt")}
    return sorted(found - {"", ".", "/"}, key=len, reverse=True)


def _spellings(value) -> list[str]:
    """A str or path-like argument as a message may spell it: as given, and as a ``Path`` says it (no ``./``, no
    trailing ``/``); none for another value."""
    if not isinstance(value, (str, os.PathLike)) or not isinstance(text := os.fspath(value), str) or not text:
        return []
    return list(dict.fromkeys((text, str(Path(text)))))


def _spans(message: str, given: dict, names: list[str]) -> Iterator[tuple[int, int, str]]:
    """``(start, end, said)`` of each part of ``message`` said whole, in order: a flag followed by the value the caller
    gave it or by one of the call's ``names`` (:func:`_named_flag`), a name alone (as it is), and each ``cnnlab``
    command (:func:`_command`). Of two at one place the longer, and of those a name: a folder's name that reads as a
    command (``/home/u/cnnlab train --out x``) stays its name."""
    at = 0
    while True:
        found = [_named_flag(message, at, given, names), _name(message, at, names)]
        if command := _COMMAND.search(message, at):
            found.append(_command(message, command, names))
        found = [span for span in found if span is not None]
        if not found:
            return
        first = min(found, key=lambda span: (span[0], -span[1]))
        yield first
        at = first[1]


def _named_flag(message: str, at: int, given: dict, names: list[str]) -> tuple[int, int, str] | None:
    """The first flag from ``at`` followed by the value the caller gave its argument, exactly (spaces, quotes, a
    newline and all: ``--out kids' run already holds a run``), or by one of the call's ``names``: as the argument,
    in Python."""
    for match in FLAG_IN_TEXT.finditer(message, at):
        key = _ARGUMENT_NAMES.get(match.group(1).replace("-", "_"), match.group(1).replace("-", "_"))
        value = given.get(key)
        mine = _spellings(value)
        for text in [*mine, *names]:
            end = match.end() + 1 + len(text)
            if text and message.startswith(" " + text, match.end()) and _VALUE_END.match(message, end):
                return match.start(), end, f"{key}={value if text in mine else text!r}"
    return None


def _name(message: str, at: int, names: list[str]) -> tuple[int, int, str] | None:
    """The first of the call's ``names`` alone from ``at`` (a word of its own, or a path's start: ``/r/my run/x``)."""
    first = None
    for name in names:  # (longest first: of two at one place, the longer)
        match = re.compile(r"(?<![^\s(\[])%s(?=/|%s)" % (re.escape(name), _VALUE_END.pattern)).search(message, at)
        if match is not None and (first is None or match.start() < first[0]):
            first = (match.start(), match.end(), name)
    return first


def _command(message: str, match: re.Match, names: list[str] = ()) -> tuple[int, int, str]:
    """``(start, end, said)`` of the ``cnnlab`` command ``match`` found: a ``cnnlab train`` of the API's arguments as
    the call (:func:`_train_call`, which ends it at its first word that is no flag or value), another as it is. Its
    words are read whole (:data:`_SHELL_WORD`); a quoted command ends at the quote right after its last word. A word
    that is one of the call's ``names`` is that name, never a placeholder (a folder called ``EXP1``)."""
    words, end = _words(message, match.end())
    quoted = bool(match.group(1)) and message.startswith("'", end)
    start = match.start() if quoted else match.start(2) - len("cnnlab ")
    call, used = _train_call(words, names) if match.group(2) == "train" else (None, 0)
    if call is not None and (not quoted or used == len(words)):
        return start, end + 1 if quoted else match.end() + sum(len(w) + 1 for w in words[:used]), call
    end += 1 if quoted else 0
    return start, end, message[start:end]


def _words(message: str, start: int) -> tuple[list[str], int]:
    """The words of a command from ``start`` (each after its space), and where they end."""
    words, end = [], start
    while word := _WORD.match(message, end):
        words.append(word.group(1))
        end = word.end()
    return words, end


def _kinds() -> dict[str, str]:
    """The type of each argument of :func:`train` a message may name (``config``: a run's settings, ``...``)."""
    return {"resume": "str", "out": "str", "config": "...", **{f.name: str(f.type) for f in fields(TrainConfig)}}


def _train_call(words: list[str], names: list[str] = ()) -> tuple[str | None, int]:
    """``cnnlab train``'s flags (``words``) as the call of :func:`train` that does the same, and how many words it
    took (up to the first that is no flag or value); a run's settings (``--config RUN``) are ``...``, as the call
    that made it gave them. None where a flag has no argument there (``--help``)."""
    kinds = _kinds()
    arguments, i = [], 0
    while i < len(words) and words[i].startswith("--"):
        key = words[i][2:].replace("-", "_")
        if key not in kinds:
            return None, 0
        flag = "bool" in kinds[key]  # a flag of its own: --channels-last
        value = None if flag or i + 1 == len(words) or words[i + 1].startswith("--") else words[i + 1]
        if value is None and not flag:
            return None, 0
        arguments.append("..." if key == "config" else f"{key}={_python_value(value, kinds[key], names)}")
        i += 1 if flag else 2
    return f"cnnlab.train({', '.join(arguments)})", i


def _python_value(word: str | None, kind: str, names: list[str] = ()) -> str:
    """A command's value as Python writes it, by its setting's type: ``3``, ``0.01``, ``'runs/r1'``, ``True`` (a
    flag without one); a placeholder (``RUN``) as it is, unless it is one of the call's folders (``names``: a run
    called ``EXP1`` was said ``resume=EXP1``, a NameError)."""
    if word is None or (_PLACEHOLDER.fullmatch(word) and word not in names):
        return "True" if word is None else word
    text = shell_unquoted(word)
    for number in (int, float):
        if number.__name__ in kind:
            with contextlib.suppress(ValueError):
                return repr(number(text))
    return repr(text)


#: Whether this thread is inside an :func:`api_call` already: a call of the API made by another (``Run.predictor``'s
#: ``Predictor.from_run``) is said by the outer one, in the words of the call its caller made.
_INSIDE_CALL = contextvars.ContextVar("cnnlab_api_call", default=False)


@contextlib.contextmanager
def api_call(*paths, **given) -> Iterator[None]:
    """Around the API's calls into the library: a refusal names the caller's arguments, not the command line's
    flags, in one line (:func:`as_arguments`; ``paths``: the call's folders and files, such as a run's, which a
    message names as they are, whatever they hold). Inside another (:data:`_INSIDE_CALL`) it says nothing: the
    outer call does. The caller's global torch RNG is left as it is by the library
    itself: a net whose weights are loaded draws none (``checkpoint.empty_model``), a run draws its own inside
    ``models.seeded``.
    (Saved and put back here, it rewound the draws of the caller's other threads, and a run's.)"""
    if _INSIDE_CALL.get():
        yield
        return
    token = _INSIDE_CALL.set(True)
    try:
        yield
    except CnnlabError as err:
        said = printable(as_arguments(str(err), given, paths))  # one line: a folder's newline not given as an argument
        if said == str(err):
            raise
        raise err.reworded(said) from None  # its class and what it carries (Interrupted's exit code) kept
    finally:
        _INSIDE_CALL.reset(token)


def _said_as_called(method):
    """A class method of the library's :class:`cnnlab.predict.Predictor` (its function, docstring and signature),
    called inside :func:`api_call` with the arguments it was given: its refusals name them (``which='last'``), not
    the flags of the commands that call the library's own (``--checkpoint last``). A :class:`Run` given as ``run``
    (``from_run``) brings its checkpoint (:func:`run_and_which`): the library takes it as the path of its folder."""
    library = method.__func__

    @functools.wraps(library)
    def call(cls, *args, **kwargs):
        given = inspect.signature(library).bind(cls, *args, **kwargs).arguments
        with api_call(given.get("path"), **{k: v for k, v in given.items() if k != "cls"}):
            if isinstance(given.get("run"), Run):
                given["run"], given["which"] = run_and_which(given["run"], given.get("which"))
            return library(**given)

    return classmethod(call)


@functools.cache
def predictor_class() -> type:
    """``cnnlab.Predictor``: the library's :class:`cnnlab.predict.Predictor`, whose class methods (``from_run``,
    ``from_file``, ``pretrained``) say a refusal in their caller's words, as the API's functions do (``which='last'``,
    ``a lower lr``, ``cnnlab.train(model=NAME, ...)``); ``cnnlab predict`` and ``cnnlab serve`` call the library's own,
    which name their flags. The predictors the API makes (``cnnlab.predictor()``, ``Run.predictor()``) are of it."""
    from cnnlab import predict  # the library's (see the top)

    class Predictor(predict.Predictor):
        __doc__ = predict.Predictor.__doc__
        from_run = _said_as_called(predict.Predictor.from_run)
        from_file = _said_as_called(predict.Predictor.from_file)
        pretrained = _said_as_called(predict.Predictor.pretrained)

    Predictor.__module__, Predictor.__qualname__ = __name__, "Predictor"  # as cnnlab.Predictor, which pickle finds
    return Predictor


@paths_explained()
def create_model(name: str, *, pretrained: bool = False, dataset: str | None = None, **kwargs) -> nn.Module:
    """A registered model by name; ``pretrained=True`` loads cnnlab's shipped weights for ``dataset``
    (``mnist`` unless given, or ``fashion-mnist``) and returns it in eval mode, verified against the manifest.
    Without ``pretrained`` the weights are new, and ``dataset`` is refused (it would be ignored: the model's
    classes and input come from ``num_classes``, ``in_channels`` and ``image_size``)."""
    from cnnlab.checkpoint import model_from_checkpoint  # the library's (see the top)
    from cnnlab.models import create_model as _create_model
    from cnnlab.pretrained import load_pretrained

    if not yes_no("pretrained", pretrained, none=""):
        if dataset is not None:
            raise CnnlabError(f"create_model({name!r}, dataset={dataset!r}): dataset picks shipped weights; add "
                              "pretrained=True, or size a new net with num_classes, in_channels, image_size")
        return _create_model(name, **kwargs)
    if kwargs:
        raise CnnlabError(f"pretrained weights fix the model's arguments; drop {sorted(kwargs)}")
    with api_call(dataset=dataset):
        return model_from_checkpoint(load_pretrained(name, dataset or "mnist")).eval()


#: The settings whose None is TrainConfig's own "not given" (the recipe's value, or none: no teacher, no step limit):
#: given as None to :func:`train`, as a script forwards its optional arguments (``momentum=args.momentum``), they
#: are not given, as a flag not typed is not (``momentum=None`` with Adam was refused as "momentum=0.5 has no
#: effect", a value the caller never gave). A setting whose default is another (``seed``) keeps its type check.
_NONE_UNSET = frozenset(f.name for f in fields(TrainConfig) if f.default is None)


@paths_explained()
def train(model: str | None = None, *, dataset: str | None = None, recipe: str | None = None,
          out: str | Path | None = None, resume: str | Path | None = None, quiet: bool = False, verbose: bool = False,
          **overrides) -> TrainResult:
    """Train ``model`` (default inception) on ``dataset`` (default mnist) with ``recipe`` (default lecture);
    ``overrides`` are any other :class:`~cnnlab.config.TrainConfig` fields (``epochs=3``, ``lr=0.01``...), applied
    on top of the recipe exactly as the CLI's flags are.

    ``quiet`` prints nothing at all; ``verbose`` adds the per-class table. ``resume`` continues a run
    (``"latest"`` works) with its own model, dataset and recipe (naming another is refused), and ``overrides``
    limited to what a resume may change (e.g. ``epochs`` of a constant-rate run, ``threads``).
    """
    quiet, verbose = yes_no("quiet", quiet), yes_no("verbose", verbose)
    given = {k: v for k, v in (("model", model), ("dataset", dataset), ("recipe", recipe)) if v is not None}
    overrides = {k: v for k, v in overrides.items() if not (v is None and k in _NONE_UNSET)}  # as never given
    if "device" in overrides:  # a torch.device as its name, as config.json records it
        overrides["device"] = device_name(overrides["device"], "cnnlab.train(device=...)")
    if overrides.get("teacher") == LATEST:  # as the CLI's --teacher latest: the newest run
        overrides["teacher"] = str(resolve_run(LATEST))
    elif isinstance(overrides.get("teacher"), os.PathLike):  # a Path, or a cnnlab.Run: the checkpoint it stands for
        overrides["teacher"] = os.fspath(checkpoint_of(overrides["teacher"]))
    cfg = _train_config({**overrides, **given})
    folders = {k: v for k, v in (("out", out), ("resume", resume)) if v is not None}
    with api_call(**overrides, **given, **folders):  # the library's refusals in the caller's words (lr, not --lr)
        return _train(cfg, given, overrides, out, resume, quiet, verbose)


def _train(cfg: TrainConfig, given: dict, overrides: dict, out, resume, quiet: bool, verbose: bool) -> TrainResult:
    from cnnlab import engine  # the library's (see the top)

    log = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    if resume is None:
        check_given_settings_act(cfg.validate(), overrides, shown=lambda key, value: f"cnnlab.train({key}={value!r})")
    if resume is not None:
        if out is not None:
            raise CnnlabError(f"cnnlab.train(resume=..., out={str(out)!r}): a resume continues the run in its own "
                              "folder; drop out")
        changes = {**overrides, **{k: getattr(cfg, k) for k in given}}  # the dataset's name made canonical
        return engine.train(cfg, resume=resolve_run(checkpoint_of(resume)), changes=changes, quiet=quiet, log=log,
                            verbose=verbose, silent=quiet, naming=Naming(api=True))
    out = None if out is None else as_path(out, "cnnlab.train(out=...), the run's folder,")  # not --out: no flag typed
    return engine.train(cfg, out=out, quiet=quiet, log=log, verbose=verbose, silent=quiet)


def _train_config(settings: dict) -> TrainConfig:
    """The config of :func:`train`'s arguments, each name and type checked as a config file's are: a misspelt
    or mistyped setting is one line naming it, not a TypeError from inside."""
    names = [f.name for f in fields(TrainConfig)]
    for key in settings:
        if key not in names:
            raise CnnlabError(f"cnnlab.train(): unknown setting {key!r}{did_you_mean(key, names)}; the settings are "
                              "TrainConfig's fields, the CLI's flags with '_' for '-' (see 'cnnlab train --help')")
    values = typed_values(settings, "cnnlab.train()", "=")
    if "dataset" in values:
        values["dataset"] = canonical_dataset_name(values["dataset"])
    if isinstance(values.get("data_dir"), str) and values["data_dir"].strip():  # recorded absolute, as the CLI does
        values["data_dir"] = str(resolved(expand_user(values["data_dir"])))
    return TrainConfig(**values)


@dataclass
class Run:
    """A run folder, read: what it is, how it went, and its weights on demand.

    ``path`` is the folder as it was given; its files are read in ``folder``, the same folder made absolute when
    the run was loaded (after an ``os.chdir`` a relative path named another folder: the weights, checkpoint and
    evaluation of another run, beside this one's config and metrics). ``which``: the checkpoint its methods use
    unless given another, ``"best"`` for a run loaded from its best.pt, else ``"last"`` (a run loaded from best.pt
    predicted and evaluated with last.pt)."""

    path: Path
    config: dict
    metrics: list[dict]
    summary: dict | None
    status: str
    info: dict = field(repr=False, default_factory=dict)
    folder: Path | None = field(repr=False, default=None)
    which: str = field(repr=False, default=DEFAULT_CHECKPOINT)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder if self.folder is not None else self.path).absolute()

    def __fspath__(self) -> str:
        """The run's folder: a Run goes wherever a run's path does (``open``, ``Path``). Where the API takes a run, a
        Run brings the checkpoint it stands for, :attr:`which` (:func:`run_and_which`, :func:`checkpoint_of`), not
        the folder's last.pt."""
        return str(self.folder)

    def __repr__(self) -> str:
        """One line: what the run is and how it went, and the checkpoint it stands for where that is not last.pt
        (``which='best'``); its config, metrics and summary are its attributes (the summary of a run of 1,000
        classes is megabytes)."""
        which = f", which={self.which!r}" if self.which != DEFAULT_CHECKPOINT else ""
        return (f"Run(path={str(self.path)!r}, model={self.config.get('model')!r}, "
                f"dataset={self.config.get('dataset')!r}, status={self.status!r}, final_accuracy={self.final_accuracy!r}"
                f"{which})")

    @property
    def final_accuracy(self) -> float | None:
        """The test accuracy of the run's final weights, its result (summary.json's ``accuracy``, in percent: 99.1);
        None while no summary exists (a run still training, stopped or failed before its test pass)."""
        return self.summary["accuracy"] if self.summary else None

    @paths_explained()
    def checkpoint(self, which: str | None = None) -> dict:
        """The run's ``which`` checkpoint (``"last"``: the end of training, ``"best"``: its best evaluation, an
        epoch's end or the check that met its target), as a dict, loaded checked (its SHA-256 sidecar, format version,
        ``torch.load(weights_only=True)``): ``model`` (the net's name and arguments), ``state_dict`` (the weights
        inference loads: their moving average where the run kept one), ``optimizer``, ``scheduler``, ``config``,
        ``data`` (classes, normalisation) and ``train_state`` (the position in training). A missing, damaged
        or altered file is a one-line :class:`cnnlab.CheckpointError`; :meth:`model` builds the net from it. ``which``
        unless given: :attr:`which`, the checkpoint the run was loaded from (``"last"`` for its folder)."""
        which = self.which if which is None else which
        with api_call(self.folder, self.path, which=which):  # the caller's words, as the other methods' (which='last')
            return self._checkpoint(which)

    def _checkpoint(self, which: str) -> dict:
        from cnnlab.checkpoint import load_checkpoint, resolve_checkpoint  # the library's (see the top)

        return load_checkpoint(resolve_checkpoint(self.folder, which))

    @paths_explained()
    def model(self, which: str | None = None) -> nn.Module:
        """The trained net (the weights' moving average where the run kept one), on the CPU, in eval mode."""
        from cnnlab.checkpoint import model_from_checkpoint  # the library's (see the top)

        which = self.which if which is None else which
        with api_call(self.folder, self.path, which=which):
            return model_from_checkpoint(self._checkpoint(which)).eval()

    @paths_explained()
    def predictor(self, which: str | None = None, device: str | torch.device = "cpu") -> Predictor:
        """A callable :class:`cnnlab.Predictor` of the run's ``which`` checkpoint (``"last"`` or ``"best"``) on
        ``device`` (a name, ``"auto"``, or a ``torch.device``): it takes paths, bytes, open files, PIL images, numpy
        arrays and tensors, one or a list, and preprocesses them as ``cnnlab predict`` does (docs/predict.md)."""
        device, which = device_name(device, "Run.predictor(device=...)"), self.which if which is None else which
        with api_call(self.folder, self.path, which=which, device=device):
            return predictor_class().from_run(self.folder, which=which, device=device)

    @paths_explained()
    def evaluate(self, which: str | None = None, device: str | torch.device = "auto", split: str = "test",
                 tta: str | None = None) -> EvalResult:
        """Loss and accuracy of the test set (``split="val"``: the run's validation split); ``tta``: views of
        each image whose probabilities are averaged, e.g. ``"shift"`` (see :mod:`cnnlab.tta`)."""
        from cnnlab.evaluation import evaluate_run  # the library's (see the top)

        device, which = device_name(device, "Run.evaluate(device=...)"), self.which if which is None else which
        with api_call(self.folder, self.path, which=which, device=device, split=split, tta=tta):
            return evaluate_run(self.folder, which=which, device=device, split=split, tta=tta)[0]


@paths_explained()
def load_run(path: str | Path = "latest", root: str | Path = "runs") -> Run:
    """The run in ``path`` (``"latest"``: the newest run under ``root``); given its last.pt or best.pt, or a
    :class:`Run` (read again), the run whose methods use that checkpoint (:attr:`Run.which`)."""
    given = path
    run, which = run_and_which(path, None) if isinstance(path, Run) else (resolve_run(path, root), DEFAULT_CHECKPOINT)
    if is_file(run) and is_file(run.parent / "config.json"):  # a stat that fails: one line naming the file
        which = _checkpoint_named(run)
        run = run.parent  # a checkpoint inside its run folder
    if not exists(run / "config.json") or not is_cnnlab_run(run):  # another tool's config.json: no run of cnnlab's
        what = ("no such folder" if not exists(run) else "not a run folder (no config.json)"
                if not exists(run / "config.json") else
                "not a cnnlab run folder (its config.json is not the one cnnlab writes, and it holds no run's files)")
        raise RunError(f"{run}: {what}; give a folder written by 'cnnlab train' (see 'cnnlab runs'), or 'latest'")
    config = run_config(run)  # each field of its type: a value edited to another ("epochs": "2") is one line
    # read once (the row is made from these rows); a row past the run's epochs is damage, found without the rest
    read = is_file(run / "metrics.csv")
    metrics = read_metrics(run / "metrics.csv", config["epochs"]) if read else []
    summary = _run_json(run / "summary.json") if is_file(run / "summary.json") else None
    info = describe_run(run, metrics if read else None)
    if isinstance(given, Run):  # the same run, read again: named as it was, its files in the same folder
        return Run(given.path, config, metrics, summary, info["status"], info, folder=run, which=which)
    return Run(run, config, metrics, summary, info["status"], info, which=which)


def run_and_which(run, which: str | None) -> tuple:
    """A :class:`Run` where a run is taken with a ``which`` of its own (``cnnlab.predictor``, ``Predictor.from_run``,
    :func:`load_run`): its folder, and the checkpoint it stands for (:attr:`Run.which`: best.pt for a run loaded from
    it) unless ``which`` names another, as its own methods take one (``Run.predictor(which=...)``); a path (a Run is
    one, of its folder) had given a best.pt's Run the folder's last.pt. Anything else as it is."""
    if isinstance(run, Run):
        return run.folder, run.which if which is None else which
    return run, which


def checkpoint_of(run):
    """A :class:`Run` where a run or a checkpoint file is taken and no ``which`` (``train(teacher=...)``,
    ``train(resume=...)``): the checkpoint it stands for, its best.pt for a Run loaded from it (:attr:`Run.which`),
    else its folder (whose checkpoint is last.pt). Anything else as it is."""
    if isinstance(run, Run) and run.which != DEFAULT_CHECKPOINT:
        return run.folder / f"{run.which}.pt"
    return run


def _checkpoint_named(file: Path) -> str:
    """Which of its run's checkpoints ``file`` is (``"best"`` for best.pt; ``"last"`` for last.pt or another file of
    the run, its config.json...); another ``.pt`` file there (teacher.pt, a copy) is no checkpoint of the run: one
    line (its methods used last.pt, another net)."""
    if file.suffix != ".pt":
        return DEFAULT_CHECKPOINT
    if file.stem not in CHECKPOINTS:
        raise RunError(f"{file}: not one of its run's checkpoints (last.pt, best.pt); give the run folder or one of "
                       f"those, or for this file's net: cnnlab.predictor({str(file)!r})")
    return file.stem


def _run_json(path: Path, key: str | None = None) -> dict:
    """A run's JSON file (its ``key`` entry), or one line naming the damaged file."""
    data = read_json(path, str(path), fix="the run folder is damaged (cnnlab writes these files whole)")
    if key is not None:
        data = data.get(key) if isinstance(data, dict) else None
    if not isinstance(data, dict):
        raise CnnlabError(f"{path}: not the file cnnlab writes there; the run folder is damaged")
    return data


@paths_explained()
def list_runs(root: str | Path = "runs", **wanted) -> list[dict]:
    """Every run under ``root``, newest first, as ``cnnlab runs`` lists them; ``wanted`` narrows them as its
    flags do, e.g. ``model="resnet", status="stopped"`` (any column of the rows, case-insensitive; numbers as numbers,
    ``final_acc=96`` for 96.0); a column given None is no filter, as a flag not typed is none (a script forwarding its
    own ``model=args.model`` found nothing). ``final_acc`` is the test accuracy of the run's final weights;
    ``best_acc`` its best epoch's, on the split ``best_split`` names (``"val"`` for a run trained with ``val_split``,
    else ``"test"``)."""
    check_columns(wanted)  # once, and also where there are no runs
    wanted = {key: value for key, value in wanted.items() if value is not None}
    return [row for row in describe_listed(find_runs(root), lambda: find_runs(root)) if matches(row, wanted)]


@paths_explained()
def predictor(run: str | Path | None = None, *, model: str | None = None, dataset: str | None = None,
              which: str | None = None, device: str | torch.device = "cpu") -> Predictor:
    """A callable predictor: of a run (a folder, a .pt file, or ``"latest"``; ``which`` checkpoint of a folder,
    ``"last"`` unless given), or, without one, of the shipped weights of ``model`` (``"resnet"`` unless given) on
    ``dataset`` (``"mnist"`` unless given). An argument of the other kind is refused, not ignored."""
    device = device_name(device, "cnnlab.predictor(device=...)")
    with api_call(model=model, dataset=dataset, which=which, device=device, run=run):
        return _predictor(run, model, dataset, which, device)


def _predictor(run, model: str | None, dataset: str | None, which: str | None, device: str) -> Predictor:
    from cnnlab.pretrained import pretrained_entries  # the library's (see the top)

    if run is not None:
        if isinstance(run, str) and not exists(run) and run in {e.model for e in pretrained_entries()}:
            raise CnnlabError(f"{run!r} is not a run folder or checkpoint here; for the shipped weights of "
                              f"{run}: cnnlab.predictor(model={run!r})")
        for name, value in (("model", model), ("dataset", dataset)):
            if value is not None:
                raise CnnlabError(f"cnnlab.predictor(run, {name}={value!r}): {name} picks the shipped weights, and a "
                                  f"run's net is its own; drop {name}, or drop the run for the shipped weights")
        run, which = run_and_which(run, which)  # a Run: its folder, and the checkpoint it stands for
        return predictor_class().from_run(resolve_run(run), which=which, device=device)
    if which is not None:
        raise CnnlabError(f"cnnlab.predictor(which={which!r}) picks a run folder's checkpoint; the shipped weights are "
                          "one file: drop which, or give a run")
    return predictor_class().pretrained(model or "resnet", dataset or "mnist", device=device)


def pretrained_weights() -> list[dict]:
    """The shipped weights and how they were made (model, dataset, test accuracy, recipe, command, sha256)."""
    from cnnlab.pretrained import pretrained_entries  # the library's (see the top)

    return [vars(entry) for entry in pretrained_entries()]
