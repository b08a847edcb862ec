"""What several commands share, written once: arguments, their defaults and help, and the error format."""

from __future__ import annotations

import argparse
import os
import re
import signal
import textwrap
import threading

from cnnlab.config import TrainConfig
from cnnlab.dataset_names import canonical_dataset_name
from cnnlab.errors import CnnlabError, SignalTaken
from cnnlab.runs import CHECKPOINTS, DEFAULT_CHECKPOINT
from cnnlab.text import plural  # noqa: F401  (the commands take it from here)

#: The library's defaults (the lecture's recipe): every default shown in the help comes from here.
DEFAULTS = TrainConfig()

DEVICE_CHOICES_HELP = "auto (CUDA if available, then MPS, else CPU), cpu, cuda, cuda:N or mps"
CHECKPOINT_HELP = ("which checkpoint of a run directory: last (the end of training) or best (the highest evaluated "
                   "accuracy: chosen on the test set, unless the run was trained with --val-split); only for a run "
                   "folder: with a .pt file (other than last.pt for last, best.pt for best){pretrained} it is refused "
                   "(default: %(default)s)")
RUN_HELP = "run directory, or a checkpoint (.pt) inside one, written by 'cnnlab train'; 'latest': the newest run"


class SignalBeforeTraining(SignalTaken):
    """SIGTERM or SIGHUP taken before the training loop takes signals (:class:`cnnlab.observers.SignalStop`): a start
    stopped there removes the folder it made, as Ctrl-C does; the engine's line says the signal."""


def _stop_before_training(signum, frame) -> None:
    raise SignalBeforeTraining(signum)


def take_sigint() -> None:
    """A command that trains takes SIGINT even when it started with SIGINT ignored (a shell's background job:
    ``cnnlab train ... &`` in a script), as its training loop does (:class:`cnnlab.observers.SignalStop`).
    Taken here, before torch's import, so that ``kill -INT`` in the first second ends the process (exit 130,
    ``cnnlab: interrupted``) instead of being ignored until the loop begins. SIGTERM and SIGHUP are taken here too
    (a SIGHUP ignored under nohup stays ignored), as the loop takes them: one in the moment after the run's folder is
    made killed the process and left the folder holding its lock; now the start cleans up and exits 143 / 129. Not
    under torchrun, whose SIGTERM (a restart of the group) stays deadly, as in the loop."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if _under_torchrun():
        return
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _stop_before_training)


def _under_torchrun() -> bool:
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    except ValueError:
        return False


def says_notes() -> bool:
    """Whether this process prints the command line's notes and closing lines: a process alone, or rank 0 of a torchrun
    group (every rank runs the same command line: each said them, twice and unlabelled; the engine's lines are rank
    0's too)."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, without breaking lines inside flag names (``--val-`` / ``split``)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class RawDescriptionHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """The description as written (its own line breaks), the options as :class:`HelpFormatter` has them."""


#: What a command line's negative number looks like (``-1``, ``-.5``, ``-1e-3``, ``-2.5E+4``, ``-inf``, ``-nan``, any
#: case): argparse reads such a token as a value, never as an option (the parsers have no option spelled so).
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-inf(inity)?$|^-nan$", re.IGNORECASE)


class Parser(argparse.ArgumentParser):
    """argparse with the house error format: one line, ``cnnlab: error: ...``, exit 2.

    argparse's own format prints the usage first (15 lines for ``train``) and buries the error.
    Subparsers are of this class too (``add_subparsers`` uses the parent's class)."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        # no abbreviations (--ep for --epochs): given_flags() reads the flags as typed
        super().__init__(*args, formatter_class=formatter_class, allow_abbrev=False, **kwargs)
        # every negative number is a value, not an option: argparse's own test (-1, -.5) took --lr -1e-3 and
        # --ema -inf for a flag, "expected one argument", where the flag's range check names the real problem
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str):
        self.exit(2, f"cnnlab: error: {message}; see '{self.prog} --help'\n")


def given_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options typed in ``argv`` (``--lr 0.1`` and ``--no-channels-last`` alike),
    whatever their values: a value equal to the default was still given."""
    return set(typed_options(parser, argv))


def typed_options(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, str]:
    """Each typed option's destination, and the option as it was typed (``--pretrained`` for ``model``)."""
    typed: dict[str, str] = {}
    for token in argv:
        if token == "--":
            break
        option = token.split("=", 1)[0]
        action = parser._option_string_actions.get(option) if token.startswith("-") else None
        if action is not None:
            typed.setdefault(action.dest, option)
    return typed


DATASET_HELP = ("mnist, fashion-mnist, idx:DIR (a directory with the four IDX files) or folder:DIR (one "
                "subfolder of images per class)")


def add_dataset_name(p: argparse.ArgumentParser) -> None:
    """The dataset as a positional argument (``cnnlab data fetch NAME``)."""
    p.add_argument("name", type=_canonical, help=f"dataset: {DATASET_HELP}")


def path_arg(text: str) -> str:
    """The type of every argument that names a file or folder: an empty one ("$RUN" with RUN unset) is refused
    by the parser, not read as '.' (every image in the folder) or as no value at all (a run without its
    --teacher or --config)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?); give a file or folder")
    return text


def model_arg(text: str) -> str:
    """The type of every argument that names a model: an empty one ("$MODEL" unset) is refused by the parser
    (``predict --model ''`` took the first image for a run; ``evaluate --pretrained ''`` looked for weights of '')."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty model name (an unset shell variable?); give one of "
                                         "'cnnlab models', e.g. resnet")
    return text


def dataset_arg(text: str) -> str:
    """The type of every ``--dataset``: an empty name ("$DATA" unset) is refused by the parser (with shipped
    weights it was taken for the default, mnist, without a word), a path inside ``idx:``/``folder:`` made absolute
    (and refused when empty: ``folder:$DIR`` with DIR unset read the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty dataset name (an unset shell variable?); give mnist, fashion-mnist, "
                                         "idx:DIR or folder:DIR")
    return _canonical(text)


def _canonical(text: str) -> str:
    """:func:`cnnlab.dataset_names.canonical_dataset_name`, its refusal (a loop of links in ``idx:DIR``) the parser's
    error, not a traceback."""
    try:
        return canonical_dataset_name(text)
    except CnnlabError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_data_args(p: argparse.ArgumentParser, default: str | None = DEFAULTS.dataset, use: str = "") -> None:
    """``--dataset`` and ``--data-dir``; ``default=None`` means the run's own dataset."""
    shown = "%(default)s" if default else "the run's own"
    p.add_argument("--dataset", default=default, type=dataset_arg,
                   help=f"dataset{use}: {DATASET_HELP} (default: {shown})")
    p.add_argument("--data-dir", default=None, type=path_arg,
                   help="directory holding the dataset's IDX files (raw or .gz, also torchvision's MNIST/raw "
                        "layout); tried before the cache and downloads (default: none)")


def add_device(p: argparse.ArgumentParser, default: str = DEFAULTS.device, why: str = "") -> None:
    p.add_argument("--device", default=default, help=f"{DEVICE_CHOICES_HELP} (default: %(default)s{why})")


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=DEFAULTS.threads,
                   help="CPU threads for torch; 0 keeps torch's default, usually one per physical core; more than "
                        "the CPUs there are makes every step many times slower (a warning says so) (default: %(default)s)")


def refuse_typed(args, dest: str, why: str) -> None:
    """A flag the user typed (``args.typed``, set by :func:`cnnlab.cli.main`) that this invocation would ignore is
    one line, not silence: ``--checkpoint best has no effect with --pretrained (...); drop it``."""
    typed = getattr(args, "typed", {})
    if dest in typed:
        raise CnnlabError(f"{typed[dest]} has no effect {why}; drop it")


def chosen_checkpoint(args) -> str | None:
    """``--checkpoint`` as the library takes it: its value where it was typed (``args.typed``, or a value other than
    the default), None where not: a run folder's last.pt, or the .pt file given itself, whichever it is
    (:func:`cnnlab.checkpoint.resolve_checkpoint`, which refuses a typed ``--checkpoint last`` beside ``RUN/best.pt``
    as it does ``--checkpoint best`` beside ``RUN/last.pt``)."""
    typed = "checkpoint" in getattr(args, "typed", {}) or args.checkpoint != DEFAULT_CHECKPOINT
    return args.checkpoint if typed else None


#: Why ``--checkpoint`` is refused beside ``--pretrained`` (export, export-weights, analyze branches).
WITH_PRETRAINED = "with --pretrained: it picks a run folder's last or best checkpoint"


def add_run(p: argparse.ArgumentParser, optional: bool = False, pretrained: bool = True) -> None:
    """The positional RUN and ``--checkpoint``: one default for every command that reads a run (``pretrained``:
    whether the command also takes the shipped weights, which --checkpoint then refuses)."""
    p.add_argument("run", nargs="?" if optional else None, metavar="RUN", type=path_arg, help=RUN_HELP)
    p.add_argument("--checkpoint", choices=CHECKPOINTS, default=DEFAULT_CHECKPOINT,
                   help=CHECKPOINT_HELP.format(pretrained=" or the shipped weights" if pretrained else ""))


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse says which flag, and exits 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_eval_batch_size(p: argparse.ArgumentParser, flag: str = "--batch-size") -> None:
    p.add_argument(flag, type=positive_int, default=DEFAULTS.eval_batch_size,
                   help="images per evaluation batch; changes memory use and speed, not the accuracy (the "
                        "loss, summed batch by batch, may differ in its last digits) (default: %(default)s)")


def add_json(p: argparse.ArgumentParser, instead_of: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print JSON instead of {instead_of} (default: off)")
