"""Run folders: ``runs/<model>-<dataset>-<timestamp>/`` with config, metrics and checkpoints.

Which folder a ``train`` writes (a fresh one, ``--out``, the one it resumes, the one a torchrun launch
and its restarts share), the lock that makes a folder belong to one process, and metrics.csv.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import shutil
import stat
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

try:
    import fcntl  # POSIX: the run-folder lock
except ImportError:  # pragma: no cover - Windows has no flock: runs there are not locked
    fcntl = None

from cnnlab.config import EPOCHS_LIMIT, typed_values
from cnnlab.data.safefs import open_regular, read_bounded, read_error
from cnnlab.dataset_names import DIRECTORY_KINDS, canonical_dataset_name, dataset_kind, directory_of
from cnnlab.errors import (DIVERGED, DIVERGED_KEPT, CnnlabError, DataUnreadable, RunBusy, RunError, WriteError,
                           did_you_mean, first_line, shell_quoted, short_repr)
from cnnlab.text import plural
from cnnlab.fileio import (NO_INODES, RUN_FILE_LIMIT, as_path, atomic_write_text, exists, in_the_way, is_dir, is_file,
                           is_loop, kind_of, lexists, link_trouble, make_dirs, mode_kind, not_a_folder, nowhere,
                           open_if_regular, out_of_room, png_marked, protection_of, reason, remove_stale_temp_files_in,
                           resolved, sha256_of, sidecar_hashes, usual_fix, write_error)

METRIC_FIELDS = [
    "epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr", "seconds",
    "images_per_s",
]
#: metrics.csv's columns that count (whole numbers); every other one is a measure, read as a float even where its cell
#: reads "91" (``_fmt``'s ``.6g`` of 91.0): ``best_acc`` was an int in one row of ``cnnlab runs --json`` and a float
#: in the next.
COUNT_FIELDS = frozenset({"epoch", "step"})
#: Files whose presence means a folder holds a run that trained (config.json alone is written before training).
RUN_MARKERS = ("last.pt", "metrics.csv")
#: Every name cnnlab writes into a run folder (training, its report, export and analyses): a folder holding only
#: these is a run's (perhaps one killed before its first checkpoint), anything else is the user's.
RUN_FILES = frozenset({"config.json", "status.json", "summary.json", "metrics.csv", "last.pt", "last.pt.sha256",
                       "best.pt", "best.pt.sha256", "curves.png", "confusion.png", "mistakes.png", "tensorboard",
                       "model.safetensors", "best.safetensors", "last.onnx", "last.torchscript.pt", "best.onnx",
                       "best.torchscript.pt", "branches.json", "branches.png", "teacher.pt"})
LOCK_FILE = ".lock"
#: How a run that stopped at its --target-accuracy begins its status.json's detail.
TARGET_REACHED = "reached --target-accuracy"
#: The lock file an analysis holds on the folder it writes (hidden: a report's folder stays a report's folder; not
#: the run's .lock, which ``evaluate`` and ``train`` read as "the run is training").
ANALYSIS_LOCK = ".analysis.lock"
#: What the report and analysis commands write into their ``--out`` folder (evaluate, analyze branches and
#: gradients, compare), and the files beside a run's that can sit in a report folder.
REPORT_FILES = frozenset({"summary.json", "confusion.png", "mistakes.png", "curves.png", "branches.json",
                          "branches.png", "gradients.json", "gradients.png", "depth.png", "comparison.md",
                          "comparison.png"})
#: The run files that ``cnnlab export`` and ``export-weights`` write by default: replaced by an export of the same
#: run, never by anything else.
EXPORT_FILES = frozenset({"model.safetensors", "best.safetensors", "last.onnx", "last.torchscript.pt", "best.onnx",
                          "best.torchscript.pt"})


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)

#: The checkpoints a run folder holds, as ``<name>.pt``: ``last`` (the end of training, or of the last
#: save) and ``best`` (the highest evaluated accuracy: on the test set, or on the validation split
#: when the run used one). Commands that read a run take ``last`` unless told otherwise.
CHECKPOINTS = ("last", "best")
DEFAULT_CHECKPOINT = "last"


def new_run_dir(root: str | Path, model: str, dataset: str) -> Path:
    """A fresh directory under ``root``; a numeric suffix avoids clobbering a run of the same second. A ``root``
    removed in the moment between its ``mkdir`` and the run folder's (another command's start that failed, and took
    the empty ``runs/`` it had made with it: :func:`remove_if_unused`) is made again."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{model}-{_safe(dataset_kind(dataset))}-{stamp}"
    make_dirs(base.parent)
    path, n, tries = base, 1, 0
    while True:
        try:
            path.mkdir(exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        except FileNotFoundError as err:
            tries += 1
            if tries > 3:
                raise write_error(path / ".", err) from None
            make_dirs(base.parent)
        except OSError as err:
            raise write_error(path / ".", err) from None


def new_analysis_dir(root: str | Path, kind: str, dataset: str) -> Path:
    """A fresh folder under ``root`` for an analysis's results (``analyze gradients`` without --out). First the
    temp files that killed analyses left in such folders go (a SIGKILL between its files left one beside the JSON:
    no later command locks that folder again, a re-run makes its own): in each folder under ``root`` whose
    :data:`ANALYSIS_LOCK` no process holds, those whose writer is gone (:mod:`cnnlab.fileio`'s rule). What such a
    folder holds besides (the JSON it wrote) is left as it is."""
    try:
        with os.scandir(root) as entries:
            folders = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:  # no root yet, or one not to be listed: new_run_dir says what is wrong
        folders = []
    for folder in folders:
        if lexists(folder / ANALYSIS_LOCK) and not is_running(folder, ANALYSIS_LOCK):
            remove_stale_temp_files_in(folder, owned=False)
    return new_run_dir(root, kind, dataset)


def folders_made(folder: str | Path) -> tuple[Path, ...]:
    """The folders a command that makes ``folder`` makes (``mkdir -p``), each as the OS reads it (:func:`_physical`),
    in the order it makes them, the topmost first; empty when ``folder`` is there. The path is walked as ``mkdir -p``
    walks it: a ``..`` on the way is no folder of its own, but the parent of the folder before it (once that one is
    made), so ``new/sub/../run`` makes new, new/sub and new/run, ``new/sub/..`` new and new/sub (the run folder is
    new), and ``n1/n2/../../n3/n4`` n1, n1/n2, n3 and n3/n4; ``new/../keep/run`` makes new and keep/run, not a keep
    that was there."""
    parts, made = Path(folder).parts, []
    for end in range(1, len(parts) + 1):
        typed = Path(*parts[:end])
        if typed.name in ("", ".", ".."):  # the root, or a folder named through another: made, if at all, before
            continue
        real = _physical(typed)
        if real not in made and not lexists(real):
            made.append(real)
    return tuple(made)


def _physical(path: str | Path) -> Path:
    """``path`` as the OS reads it, absolute: the folder it lies in with its links and ``..`` resolved (as far as it
    is there; the rest read as ``mkdir -p`` makes it), its own name kept (a link stays the link)."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def remove_if_unused(folder: Path, leftovers: tuple[str, ...] = (), made: tuple[Path, ...] = ()) -> bool:
    """Remove ``folder``, which this command made, when it holds nothing but ``leftovers`` (names: its lock file, the
    status.json of a start that failed) and their temp files: what a command that failed, or wrote nothing, left (a
    full disk left empty ``evaluate --out``, ``analyze --out`` and ``compare --out`` folders, and analyses' lock
    files; :func:`cnnlab.engine.train`'s fresh run folder goes the same way). A link, or a folder holding anything
    else (a file written since, by this command or another), stays. ``made``: the folders the command made for it
    (:func:`folders_made`), ``folder`` only where it is one of them (``--out new/..`` made new, not the folder it
    names): each of them left empty goes too, the last made first, by the name the OS reads (``--out full/a/b/c``
    left full/a and full/a/b; ``--out new/sub/../run`` left new and new/sub; ``--out new/sub/..`` left new, its lock
    and status.json, and new/sub: ``new/sub/..`` was not removed under that name). True when ``folder`` was
    removed."""
    own, removed, made = _physical(folder), False, tuple(map(_physical, made))
    if not made:  # the caller's own folder, all it made
        return _remove_unused(own, leftovers)
    for each in reversed(made):  # a folder's made subfolders before it (os.rmdir removes only empty folders)
        if each == own:
            removed = _remove_unused(own, leftovers)
            continue
        try:
            os.rmdir(each)
        except OSError:
            pass
    return removed


def _remove_unused(folder: Path, leftovers: tuple[str, ...]) -> bool:
    """:func:`remove_if_unused` of ``folder`` itself."""
    if os.path.islink(folder) or not is_dir(folder, if_unknown=False):
        return False
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    if not all(name in leftovers or any(name.startswith(f".{left}.") and name.endswith(".tmp") for left in leftovers)
               for name in names):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return not os.path.lexists(folder)


@contextlib.contextmanager
def removed_if_unused(folder: str | Path, leftovers: tuple[str, ...] = ()):
    """Inside, ``folder``, when it is not there yet, is the command's own: made by it, and removed at the end if
    nothing was written into it (:func:`remove_if_unused`: an error, a stop, a write the disk refused), with the
    folders above it that the command made on the way."""
    made = folders_made(folder)
    try:
        yield
    finally:
        if made:
            remove_if_unused(Path(folder), leftovers, made)


def run_dir_of(path: str | Path) -> Path:
    """The run folder of a path: a run folder itself, or the folder a checkpoint file lies in, a link's that of the
    file it leads to (:func:`followed`)."""
    p = Path(path)
    return p if is_dir(p) else followed(p).parent


def followed(path: Path) -> Path:
    """The file the symbolic link ``path`` leads to (relative to the current folder where it lies in it), else
    ``path``: a link to a checkpoint (``mylast.pt -> runs/r5/last.pt``) is that run's checkpoint, whose resume
    continues ``runs/r5`` (it trained a run of the link's own folder, writing its files among the user's), as a
    copy's resume continues the folder the copy lies in."""
    if not os.path.islink(path):
        return path
    real = resolved(path)
    try:
        return real.relative_to(resolved(Path.cwd()))
    except (ValueError, OSError):
        return real


def holds_run(path: str | Path) -> bool:
    """Whether ``path`` holds a run that trained (a checkpoint or metrics), which a new run must not mix with."""
    return any(exists(Path(path) / name) for name in RUN_MARKERS)


# ----------------------------------------------------------------------------- torchrun


def _process_start(pid: int) -> str:
    """When process ``pid`` started, as a timestamp (Linux /proc); '' where that cannot be read."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return time.strftime("%Y%m%d-%H%M%S", time.localtime(boot + ticks / os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError, IndexError, StopIteration):
        return ""


def torchrun_launch_id(env: dict | None = None) -> str:
    """An id that is the same for every worker of one torchrun launch and its restarts, and new per launch.

    ``--rdzv-id`` when given (TORCHELASTIC_RUN_ID; several machines share it); otherwise the torchrun
    agent that started this worker (our parent: the same across its restarts) with its start time, so
    that a new launch, even of the same command, never writes into an earlier launch's folder.
    """
    env = os.environ if env is None else env
    run_id = env.get("TORCHELASTIC_RUN_ID", "none")
    if run_id and run_id != "none":
        return _safe(run_id)
    agent = os.getppid()
    started = _process_start(agent)
    return f"{started}-{agent}" if started else f"agent{agent}"


# ----------------------------------------------------------------------------- which folder, locked


@dataclass
class RunPlan:
    """Where a ``train`` writes (None: nothing) and the checkpoint it continues from (None: a new run)."""

    run_dir: Path | None
    resume_from: Path | None
    #: The folders made for this run, ``run_dir`` among them (a timestamped folder, or a new ``--out``, and the
    #: folders on the way to it that were not there: :func:`folders_made`); empty when ``run_dir`` was there.
    made: tuple[Path, ...] = ()

    @property
    def fresh(self) -> bool:
        """Whether ``run_dir`` was made for this run just now."""
        return bool(self.made)


def plan_run(model: str, dataset: str, *, out: str | Path | None, resume: str | Path | None,
             runs_root: str | Path, write: bool, distributed: bool, restart_count: int) -> RunPlan:
    """Resolve the run folder: ``resume``, ``out``, a torchrun launch's folder, or a fresh timestamped one.

    Refuses (one line) a new run into a folder that already holds a run, unless torchrun restarted this
    launch (then it continues from the folder's last.pt, or starts again if none was saved).
    """
    if resume is not None:
        resume = Path(resume)
        if not exists(resume):  # a stat that fails (an input/output error): one line naming it
            raise RunError(f"--resume {resume}: no such run folder or checkpoint; check the path "
                           "('cnnlab runs' lists your runs)")
        ckpt = resume / "last.pt" if is_dir(resume) else followed(resume)  # a link: the file, in its run folder
        return RunPlan(run_dir_of(resume) if write else None, ckpt)
    if distributed and out is None:
        out = Path(runs_root) / f"{model}-{_safe(dataset_kind(dataset))}-torchrun-{torchrun_launch_id()}"
    if out is not None:
        out = as_path(out, "--out (the run's folder)", RunError)
        if restart_count > 0 and is_file(out / "last.pt"):
            return RunPlan(out if write else None, out / "last.pt")  # torchrun restarted the group
        if write and restart_count == 0:
            check_new_run_folder(out)
        return RunPlan(out if write else None, None, made=folders_made(out) if write else ())
    if not write:
        return RunPlan(None, None)
    above = folders_made(runs_root)  # (runs/ made for it too)
    run_dir = new_run_dir(runs_root, model, dataset)
    return RunPlan(run_dir, None, made=(*above, _physical(run_dir)))


def check_new_run_folder(out: Path, files: bool = True) -> None:
    """A new run's ``--out``, refused (one line) when it holds a run that trained (:func:`holds_run`), or files of the
    user's (:func:`_refuse_other_files`): by :func:`plan_run` before any folder is made, and again by the training
    once it holds the folder's lock (:func:`cnnlab.engine.train`: a run another process trained and finished there
    in between was written over). ``files=False`` (that second look): the run alone; the folders this process made on
    the way (``--out new/sub/..``: ``sub``) are no user's files, and the user's were looked for before."""
    if holds_run(out):
        raise RunError(f"--out {out} already holds a run; continue it with 'cnnlab train --resume {shell_quoted(str(out))}', "
                       "or pick a fresh --out")
    if files:
        _refuse_other_files(out)


def _refuse_other_files(out: Path) -> None:
    """A new run gets a folder of its own: ``--out .`` in a folder of notes, or ``--out /``, scattered a run's
    files among the user's. A run's own files (:data:`RUN_FILES`: a run killed before its first checkpoint, which
    compare trains again) and hidden files such as .DS_Store do not count."""
    try:
        others = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name not in RUN_FILES) \
            if out.is_dir() else []
    except OSError:
        return  # unreadable: the writes that follow say what is wrong
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise RunError(f"--out {out} is a folder with other files in it ({shown}); a run gets a folder of its own: "
                       f"pick a new or empty one, e.g. --out {shell_quoted(str(out / 'run1'))}")


def check_resumed_folder(folder: Path, ckpt: Path, same_run: Callable[[Path], bool] | None = None) -> None:
    """A resume writes its run's files (config.json, status.json, checkpoints, metrics.csv, summary.json, figures)
    into the folder its checkpoint lies in: ``--resume project/model.pt`` of a file copied into a folder of the
    user's wrote its config.json and summary.json over theirs and read their metrics.csv as the run's. Refused (one
    line, before anything is written) unless ``folder`` is a run folder (:func:`users_files`; ``same_run``: whether a
    checkpoint there, best.pt or last.pt, is of ``ckpt``'s run: :func:`cnnlab.checkpoint.same_run_as`, which reads
    checkpoints)."""
    if theirs := users_files(folder, ckpt, same_run):
        raise RunError(f"--resume {ckpt}: {folder} is not a run folder (it holds {theirs}), and a resume writes its "
                       "run's files (config.json, summary.json, metrics.csv, checkpoints, figures) into the folder "
                       "of the checkpoint it continues; copy the file into a folder of its own (a new, empty one) "
                       "and resume it there")


def users_files(folder: Path, ckpt: Path, same_run: Callable[[Path], bool] | None = None) -> str:
    """What of the user's the folder ``ckpt`` lies in holds, as a message names it (``notes.txt, summary.json``);
    empty when it is a run folder: its config.json cnnlab's or, as ``--out`` takes a folder for a new run
    (:func:`_refuse_other_files`), nothing of the user's in it: only hidden files, ``ckpt`` and its sidecar, and a
    run's own files, each of those a resume or a report writes over as cnnlab writes it (:func:`_written_by_run`: a
    run whose config.json is gone). ``same_run``: whether a checkpoint there (best.pt, last.pt) is of ``ckpt``'s run;
    without it, none is (both callers pass :func:`cnnlab.checkpoint.same_run_as`). What a resume
    (:func:`check_resumed_folder`) and a run's report or analysis written beside its checkpoint
    (:func:`cnnlab.evaluation.open_subject`) write into; a folder that cannot be read is left to those writes."""
    if _cnnlab_file(folder / "config.json"):
        return ""
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError:
        return ""  # unreadable: the writes that follow say what is wrong
    own = (ckpt.name, f"{ckpt.name}.sha256")
    theirs = _another_runs_report(folder, same_run)  # (its figures with it)
    others = [name for name in names if not name.startswith(".") and name not in own
              and (name not in RUN_FILES or name in _WRITTEN_OVER and (
                  theirs and name in _REPORT_PARTS or not _written_by_run(folder / name, same_run)))]
    return ", ".join(map(short_repr, others[:4])) + (", ..." if len(others) > 4 else "")


#: The files of a run's report that say which run they are of (:func:`report_agrees`): its epochs, its result.
_REPORT = ("metrics.csv", "summary.json")
#: Those, and the figures drawn from them: another run's report is the user's whole (:func:`users_files`).
_REPORT_PARTS = frozenset({*_REPORT, "curves.png", "confusion.png", "mistakes.png"})


def _another_runs_report(folder: Path, same_run: Callable[[Path], bool] | None) -> bool:
    """Whether the report in ``folder`` (its metrics.csv or summary.json, as cnnlab writes them) is of another run than
    the checkpoint resumed or measured: ``same_run`` of each (:func:`cnnlab.checkpoint.same_run_as`, which asks
    :func:`report_agrees`). A copy of another run's metrics.csv, summary.json and curves.png beside a checkpoint was
    counted the run's, as any file cnnlab writes was, and a resume wrote its own over them without a word."""
    return same_run is not None and any(_cnnlab_file(folder / name) and not same_run(folder / name) for name in _REPORT)


def report_agrees(path: Path, config: dict, data: dict | None, history: list[dict]) -> bool:
    """Whether the report file ``path`` (metrics.csv or summary.json) may be of the run whose checkpoint records
    ``config``, ``data`` and ``history``, by what it says of its run: metrics.csv's rows the history covers, each cell
    as :func:`write_metrics` writes it from the history (rows past it are later epochs of the run, and rows lost are
    not compared); summary.json's test set (its size), class names and moving average (``ema``), where it says them.
    True where it cannot be read or says nothing of them (a damaged metrics.csv is written again from the history:
    ``engine._metrics_from_history``); a read that fails now (an input/output error) is one line naming it."""
    if path.name == "metrics.csv":
        try:
            rows = read_metrics(path)
        except DataUnreadable:
            raise
        except (OSError, CnnlabError):
            return True
        return all(_cells(row) == _cells(past) for row, past in zip(rows, history))
    summary, data = _mapping(path, []), data if isinstance(data, dict) else {}
    if summary is None:
        return True
    per_class = summary.get("per_class")
    said = {"n": summary.get("n") if summary.get("split") == "test" else None, "ema": summary.get("ema"),
            "classes": [str(c.get("class")) for c in per_class if isinstance(c, dict)]
            if isinstance(per_class, list) else None}
    classes = data.get("classes")
    ours = {"n": data.get("test_size"), "ema": config.get("ema"),
            "classes": [str(c) for c in classes] if isinstance(classes, list) else None}
    return all(said[k] is None or ours[k] is None or said[k] == ours[k] for k in said)


def _cells(row: dict) -> list[str]:
    """A metrics row's cells as :func:`write_metrics` writes them: a row read back and a row of the history compare
    as text, as the file holds them (91.0 and 91 both ``91``)."""
    return [str(_fmt(row.get(k))) for k in METRIC_FIELDS]


#: The files of a run folder that a folder of the user's may hold under the same name, with other contents (a
#: resume writes the first three; an analysis beside the checkpoint, branches.json).
_WRITTEN_WHOLE = ("config.json", "summary.json", "metrics.csv", "branches.json")
#: The run files a resume or a report writes over (a run's files, its figures), each of which a folder of the user's
#: may hold under the same name (their best.pt of another run, their curves.png, their notes as status.json), and
#: what each is when cnnlab wrote it (:func:`_written_by_run`). The others of :data:`RUN_FILES` are left alone.
_WRITTEN_OVER = frozenset({*_WRITTEN_WHOLE, "status.json", "curves.png", "confusion.png", "mistakes.png",
                           "branches.png", *(f"{c}.pt{s}" for c in CHECKPOINTS for s in ("", ".sha256"))})


def _written_by_run(path: Path, same_run: Callable[[Path], bool] | None) -> bool:
    """Whether ``path``, a file of :data:`_WRITTEN_OVER` beside a resumed checkpoint, is as its run writes it: its
    config.json, summary.json and metrics.csv (:func:`_cnnlab_file`), its status record, a figure cnnlab drew (a PNG
    with its mark, :func:`cnnlab.fileio.png_marked`: any PNG of the name counted, and a user's curves.png was written
    over; a figure of a cnnlab before the mark is the user's too, which only refuses the resume, losing nothing), or a
    checkpoint of the same run (``same_run``), a sidecar with its checkpoint (one without its checkpoint is a save's
    left over). What cannot be read now (an input/output error) is one line naming it."""
    if path.name.endswith(".sha256"):
        checkpoint = path.with_name(path.name[: -len(".sha256")])
        return not lexists(checkpoint) or _written_by_run(checkpoint, same_run)
    if path.suffix == ".pt":
        return same_run is not None and is_file(path, if_unknown=False) and same_run(path)
    if path.suffix == ".png":
        try:
            stream = open_run_file(path)
        except DataUnreadable:
            raise
        except (CnnlabError, OSError):
            return False
        with stream if stream is not None else contextlib.nullcontext():
            return stream is not None and png_marked(stream)
    return _cnnlab_file(path)


def _cnnlab_file(path: Path) -> bool:
    """Whether ``path`` is a config.json, summary.json, metrics.csv, branches.json or status.json as cnnlab writes
    them: the settings of a run, a report with its accuracy, the metrics' header, an analysis's baseline and modules,
    a status record (not ``{"my": "project settings"}`` of the same name). One that cannot be read now (an
    input/output error) is one line naming it (:class:`~cnnlab.errors.DataUnreadable`)."""
    try:
        if path.name == "metrics.csv":
            stream = open_run_file(path, METRICS_LIMIT)
            with stream if stream is not None else contextlib.nullcontext():
                return stream is not None and stream.readline(1024).decode("utf-8", "replace").strip() == \
                    ",".join(METRIC_FIELDS)
        data = load_run_json(path, missing=ABSENT)
    except DataUnreadable:
        raise
    except (CnnlabError, OSError):
        return False
    if path.name == "config.json":
        return isinstance(data, dict) and isinstance(data.get("config"), dict)
    if path.name == STATUS_FILE:
        return isinstance(data, dict) and status_record(data.get("status"), data.get("detail", "")) is not None
    if path.name == "branches.json":  # analyze branches': its baseline's accuracy, and the modules it measured
        return isinstance(data, dict) and isinstance(data.get("baseline"), dict) and \
            _number(data["baseline"].get("accuracy")) and isinstance(data.get("modules"), list)
    return isinstance(data, dict) and _number(data.get("accuracy"))


#: The run locks this process holds, by their file's (device, inode): a lock held by one of them is another thread's
#: call of this process, not another process (the pid in the file does not tell: two containers' processes may
#: both be pid 1).
_HELD_HERE: set[tuple[int, int]] = set()
_HELD_HERE_LOCK = threading.Lock()


def held_here(run: Path) -> bool:
    """Whether a run folder's lock is held by this very process (another thread of it)."""
    try:
        return _held_here(os.stat(Path(run) / LOCK_FILE, follow_symlinks=False))
    except OSError:
        return False


def _held_here(st: os.stat_result) -> bool:
    with _HELD_HERE_LOCK:
        return (st.st_dev, st.st_ino) in _HELD_HERE


def holder(run: Path) -> str:
    """Who holds a run folder's lock, for a message: "another cnnlab process", or "another thread of this process"."""
    return "another thread of this process" if held_here(run) else "another cnnlab process"


#: What a run folder's lock is held for, as its holder records it after its pid (:class:`RunLock`): its training, or
#: an evaluation writing the run's report, a compare rewriting its metrics.csv, an analysis writing its results.
TRAINING = "training"
#: What a lock's holder is doing, for a message ("it is training now", "it is writing its evaluation report now").
DOING = {TRAINING: "training", "evaluation": "writing its evaluation report", "compare": "rewriting its metrics.csv",
         "analysis": "writing an analysis"}
#: How a run's detail ends when a process holds it for other work than training (a finished run's detail is shown
#: in ``cnnlab runs`` then alone): "another cnnlab process is writing its evaluation report now".
NOW = " now"
#: The bytes of a lock file's record (pid and task, padded), written in one write: a reader sees a whole record.
_RECORD = 32


def _record(pid: int | str, task: str) -> bytes:
    return f"{pid} {task}".encode().ljust(_RECORD)[:_RECORD]


def _recorded(data: bytes) -> tuple[str, str | None]:
    """``(pid, task)`` of a lock file's record: ``("", None)`` when blank (its holder is about to write it), the task
    None where only a pid is written (an older cnnlab's, or another tool's)."""
    pid, _, task = data.decode(errors="replace").strip().partition(" ")
    return pid, (task.strip() or None) if pid else None


#: A busy line's fields, and its braces written twice (:func:`braces_kept`), read in one pass by :func:`_filled`.
_BUSY_FIELD = re.compile(r"\{\{|\}\}|\{pid\}|\{doing\}")


def braces_kept(text: str) -> str:
    """``text`` (a folder's name) as a :class:`RunLock` busy line holds it: its braces written twice, so that a
    folder called ``r{pid}`` is not filled in with the holder's pid."""
    return text.replace("{", "{{").replace("}", "}}")


def _filled(busy: str, pid: str, doing: str) -> str:
    """A :class:`RunLock`'s busy line with its holder's pid and what it does, in one pass: ``{pid}``, ``{doing}``, and
    ``{{``/``}}`` for a brace of a folder's name in it (:func:`braces_kept`; not ``str.format``, which a stray brace
    of a name made raise, and not two ``replace``, which filled in a folder called ``r{pid}``)."""
    values = {"{{": "{", "}}": "}", "{pid}": pid, "{doing}": doing}
    return _BUSY_FIELD.sub(lambda m: values[m.group(0)], busy)


def lock_task(run: Path, lock: str = LOCK_FILE) -> str | None:
    """What a live process holds the run folder's lock for (:data:`DOING`'s keys), None when none holds it; a holder
    that records no task (an older cnnlab's) is taken as a training, as every holder was. A record still blank is
    read again (its holder writes it just after it takes the lock, and blanks it as it lets go)."""
    for _ in range(50):
        held, data = _probe(run / lock)
        if not held:
            return None
        pid, task = _recorded(data)
        if pid:
            return task or TRAINING
        time.sleep(0.002)
    return TRAINING


def is_training(run: Path) -> bool:
    """Whether a live process trains the run now (holds its lock for that), not one that holds it a moment to write
    the run's report (``evaluate``) or its metrics.csv (``compare``): "it is training now" is said of it alone."""
    return lock_task(run) == TRAINING


def lock_in_the_way(path: Path) -> str | None:
    """What stands at a lock file's ``path`` that no process may lock, and how to clear it: a folder, a FIFO...
    (``RUN/.lock is a directory, not the lock file cnnlab writes; remove it (rmdir RUN/.lock)``), and what
    :meth:`RunLock._open` refuses to open, a symbolic link or a file with other names (a hard link: a run listed
    "stopped (... resume to go on)" refused every resume); None where it is the lock file (a regular file with one
    name), or nothing."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    mode, rm = st.st_mode, f"rm {shell_quoted(str(path))}"
    if stat.S_ISLNK(mode):
        return f"{path} is a symbolic link, which cnnlab does not follow (it would write where it points); remove it ({rm})"
    if stat.S_ISREG(mode):
        return None if st.st_nlink <= 1 else \
            f"{path} has other names (a hard link), not the lock file cnnlab writes; remove it ({rm})"
    how = f"rmdir {shell_quoted(str(path))}" if stat.S_ISDIR(mode) else rm
    return f"{path} is {mode_kind(mode)}, not the lock file cnnlab writes; remove it ({how})"


class RunLock:
    """An exclusive OS lock on a run folder (``flock`` on ``.lock``), held while a process writes it.

    The kernel releases it when the process dies, however it dies, so a killed run never leaves its
    folder locked. Where ``fcntl`` does not exist (Windows) there is no lock.
    """

    def __init__(self, run_dir: Path, busy: str = "wait for it to finish, or pick another --out",
                 busy_here: str = "wait for that call to return, or pick another --out", task: str = TRAINING,
                 name: str = LOCK_FILE):
        self.path = Path(run_dir) / name
        self.fd: int | None = None
        self.key: tuple[int, int] | None = None  # the lock file's (device, inode) while held
        # what to do when another process holds it, and when another thread of this process does ({pid}: its pid,
        # {doing}: what it does, DOING's words)
        self.busy, self.busy_here = busy, busy_here
        self.task = task  # what this lock is held for, recorded after the pid (DOING's keys)

    def acquire(self) -> "RunLock":
        if fcntl is None:
            return self
        make_dirs(self.path.parent)
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid, task = _recorded(os.pread(fd, _RECORD, 0))
            pid, doing = pid or "?", DOING.get(task or TRAINING, task)
            here = _held_here(os.fstat(fd))  # flock is per open file: a thread of ours may hold it
            os.close(fd)
            if here:
                raise RunBusy(f"{self.path.parent} is in use by another thread of this process (a call that has not "
                              f"returned yet); {_filled(self.busy_here, pid, doing)}") from None
            raise RunBusy(f"{self.path.parent} is in use by another cnnlab process (pid {pid}); "
                          + _filled(self.busy, pid, doing)) from None
        try:  # who holds it and what for (the message above, lock_task), one write: never a record half written
            os.pwrite(fd, _record(os.getpid(), self.task), 0)
            os.ftruncate(fd, _RECORD)
        except OSError as err:  # a full disk: the run could not save anything either
            os.close(fd)
            raise write_error(self.path, err) from None
        self.fd = fd
        st = os.fstat(fd)
        self.key = (st.st_dev, st.st_ino)
        with _HELD_HERE_LOCK:
            _HELD_HERE.add(self.key)
        remove_stale_temp_files_in(self.path.parent)  # ours now: what killed writers left is garbage
        return self

    def _open(self) -> int:
        """The lock file, opened for writing its holder's pid: never through a symbolic link, and only a regular file
        with no other name (a link planted at ``.lock`` by whoever could write the folder truncated any file the
        opener may write: a student's notes, root's files), created as readable and writable as the umask lets
        other files be (a fixed 0644 kept a group sharing the folder from resuming)."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
            | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as err:
            # a link, or a folder ("cannot write .lock: Is a directory; check the path and the disk")
            if err.errno in (errno.ELOOP, errno.EISDIR) or os.path.islink(self.path):
                what = lock_in_the_way(self.path) or f"{self.path} is a symbolic link or a directory, not the lock " \
                                                      "file cnnlab writes; remove it"
                raise RunError(f"{what} if the folder is yours, else copy the run and use the copy") from None
            if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and holds_run(self.path.parent) \
                    and protection_of(self.path, err.errno) is None:  # (an immutable .lock: write_error's lift)
                # another user's run (a teacher's, shared read-only): '--out' does not go with --resume or evaluate
                raise WriteError(f"cannot write {self.path}: {err.strerror or err}; the run folder is not writable "
                                 f"by you: copy it (cp -r {shell_quoted(str(self.path.parent))} COPY) and use the "
                                 "copy, or ask its owner", err.errno) from None
            raise write_error(self.path, err) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:  # (cnnlab runs lists the run damaged in the same words)
            os.close(fd)
            what = "has other names (a hard link)" if stat.S_ISREG(st.st_mode) else f"is {mode_kind(st.st_mode)}"
            what = lock_in_the_way(self.path) or f"{self.path} {what}, not the lock file cnnlab writes; remove it"
            raise RunError(f"{what} if the folder is yours, else copy the run and use the copy")
        return fd

    def release(self) -> None:
        if self.fd is not None:
            with _HELD_HERE_LOCK:
                _HELD_HERE.discard(self.key)
            with contextlib.suppress(OSError):  # no record of a holder gone: the next one's is all a reader sees
                os.pwrite(self.fd, b" " * _RECORD, 0)
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------------------- finding runs

STATUS_FILE = "status.json"
LATEST = "latest"


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run's config.json; a stat of it that fails (an input/output error, not "nothing there")
    is one line naming it (:func:`cnnlab.fileio.is_file`), not a traceback."""
    return is_file(path / "config.json")


#: The files of a run folder other than its config.json that only cnnlab writes, each checked to be as cnnlab writes
#: it (:func:`is_cnnlab_run`): a checkpoint's SHA-256 sidecar, metrics.csv's header, a status record.
_RUN_MARKS = (*(f"{c}.pt.sha256" for c in CHECKPOINTS), "metrics.csv", STATUS_FILE)


def is_cnnlab_run(path: Path) -> bool:
    """Whether the folder ``path`` is a run by cnnlab's own marks, not by a file's name alone: its config.json as
    cnnlab writes it (the run's settings under ``"config"``), or, that file damaged, edited or gone, a file only a run
    writes (:data:`_RUN_MARKS`: a checkpoint's sidecar, metrics.csv with its header, status.json with a status
    record). Another tool's folder that holds a config.json of its own (a Hugging Face ``save_pretrained``'s,
    ``{"architectures": ...}``) is none: ``cnnlab runs`` does not list it, nor is it ever ``latest``. A file whose
    read fails now (an input/output error) is one line naming it (:class:`~cnnlab.errors.DataUnreadable`)."""
    if _cnnlab_file(path / "config.json"):
        return True
    return any(is_file(path / name) if name.endswith(".sha256") else _cnnlab_file(path / name) for name in _RUN_MARKS)


#: What a run folder holds before its config.json is written: the run's lock, the status.json that says it trains, the
#: copy of its teacher (``distill.TEACHER_FILE``).
BEFORE_CONFIG = frozenset({LOCK_FILE, STATUS_FILE, "teacher.pt"})


def unsaved_run_dir(path: Path) -> bool:
    """Whether ``path`` is a folder cnnlab made for a run stopped before it wrote its config.json (killed while its
    data, its teacher or its torchrun group were loading): nothing in it but :data:`BEFORE_CONFIG`'s files (one at
    least) and the temp files of a run's writes cut short. Its resume said "no such checkpoint; pass a run directory",
    which is what was passed; the command that started it starts it again there."""
    try:
        names = os.listdir(path)
    except OSError:
        return False
    cut_short = {f".{name}." for name in RUN_FILES | {STATUS_FILE}}
    return any(n in BEFORE_CONFIG for n in names) and all(
        n in BEFORE_CONFIG or n.endswith(".tmp") and any(n.startswith(p) for p in cut_short) for n in names)


# ----------------------------------------------------------------------------- outputs never clobber a run


def _same_folder(a: Path, b: Path | None) -> bool:
    return b is not None and resolved(a) == resolved(b)


def check_output_folder(folder: str | Path, own: Path | None, flag: str = "--out", writes: tuple[str, ...] = ()) -> None:
    """Refuse (one line) to write a report or an analysis into ``folder`` when it holds a run other than
    ``own`` (its summary.json and figures are that run's results, and ``cnnlab runs`` reads them), or when it
    is no cnnlab report's folder (it holds files no cnnlab report writes) and one of the files the command
    ``writes`` is there already: that file is the user's (``--out .`` in a project with its own summary.json)."""
    folder = Path(folder)
    if not is_dir(folder):
        # a file, FIFO, device or link to nowhere at the folder's place, or where a folder on its way should be:
        # said before the work, not after it (evaluate --out afile evaluated the whole split, then warned)
        blocked = not_a_folder(folder) if lexists(folder) else in_the_way(folder, "cannot create folder")
        if blocked is not None:
            raise blocked
        return
    if is_run_dir(folder):
        if not _same_folder(folder, own):
            raise RunError(f"{flag} {folder} holds another run, whose summary.json and figures are its results; "
                           "give a folder of its own (a new or empty one)")
        return
    clash = [name for name in writes if exists(folder / name)]
    foreign = _foreign(folder) if clash else []
    if foreign:
        shown = ", ".join(map(short_repr, foreign[:3])) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise RunError(f"{flag} {folder} is not a cnnlab report's folder (it holds {shown}), and this would replace "
                       f"its {', '.join(clash)}; give a new or empty folder")


def _entries(folder: Path) -> list[Path]:
    """What ``folder`` holds (nothing when it is missing or cannot be read)."""
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _foreign(folder: Path, depth: int = 1) -> list[str]:
    """What in ``folder`` no cnnlab report, analysis or compare writes, sorted; inside a folder that holds such
    things too, the file itself (``inner/notes.txt``, not ``inner``: another compare's folder is a report's)."""
    found = []
    for path in sorted(_entries(folder)):
        if not _reported(path, depth):
            inside = _foreign(path, depth - 1) if depth > 0 and path.is_dir() and not path.is_symlink() else []
            found += [f"{path.name}/{name}" for name in inside] or [path.name]
    return found


def _reported(path: Path, depth: int = 1) -> bool:
    """Whether ``path`` is something a cnnlab report, analysis or compare writes (or a hidden file): also a
    folder of such things (``depth`` levels down), as another compare's folder nested in this one, or a run
    folder whose config.json is gone."""
    if path.name.startswith(".") or path.name in REPORT_FILES or (path.is_dir() and is_run_dir(path)):
        return True
    if path.is_symlink() or not path.is_dir():
        return False
    inside = _entries(path)
    if holds_run(path) and all(p.name in RUN_FILES or p.name.startswith(".") for p in inside):
        return True  # a run's folder, its config.json gone
    return depth > 0 and all(_reported(p, depth - 1) for p in inside)


def check_output_file(target: str | Path, source: Path | None, flag: str = "--out") -> None:
    """Refuse (one line) an export over a file it must not replace: the checkpoint it reads (``source``), a
    cnnlab checkpoint (it has a ``.sha256`` sidecar), or a run's own file (:data:`RUN_FILES`: its checkpoints,
    config, metrics, report; its lock), which only that run's own exports (:data:`EXPORT_FILES`) may replace."""
    target = Path(target)
    name, folder = target.name, target.parent
    another = "another file name" if flag == "--out" else "--out FILE with another name"  # none typed: say the flag
    # a link at the name is replaced by the write (fileio.atomic_write_bytes), not written through: never the source
    if source is not None and not target.is_symlink() and exists(target) and resolved(target) == resolved(source):
        raise RunError(f"{flag} {target} is the checkpoint being exported; give {another}")
    if os.path.isfile(target.with_name(name + ".sha256")):  # False for a name too long to have a sidecar
        raise RunError(f"{flag} {target} is a cnnlab checkpoint (it has a .sha256 beside it); writing over it "
                       f"would lose its weights: give {another}")
    if not is_run_dir(folder):
        return
    own = source is not None and _same_folder(folder, source.parent)
    protected = name in RUN_FILES or name == LOCK_FILE or name.endswith(".sha256")
    if (name in EXPORT_FILES and not own) or (protected and name not in EXPORT_FILES):
        whose = "this run's" if own else "another run's"
        raise RunError(f"{flag} {target} is {whose} own file ({folder} holds a run); give a file name of its own "
                       "(the default writes beside the checkpoint)")


def find_runs(root: str | Path = "runs") -> list[Path]:
    """Run folders under ``root`` (and one level below, where ``compare`` puts its runs), newest first."""
    root = as_path(root, "the folder of runs (root)", RunError)
    if is_dir(root) and is_run_dir(root) and is_cnnlab_run(root):  # a run folder itself: that run
        return [root]
    if exists(root) and not is_dir(root):
        raise RunError(f"{root} is a file, not a folder of runs; give the folder that holds them (runs/ by default)")
    if is_dir(root):
        try:
            next(iter(os.scandir(root)), None)
        except PermissionError:  # a folder one may enter but not list (0711): "no runs" was a wrong answer
            raise RunError(f"cannot list {root}/ (permission denied); ask its owner for read permission, or name a "
                           "run folder in it directly") from None
    found: dict[Path, Path] = {}  # each run once, by its real folder (a link back to the root listed all twice)
    top = sorted(_subfolders(root), key=os.path.islink)  # a run's own path before a link's (False: an lstat failed)
    runs = [p for p in top if _listed(p)]
    held = set(runs)
    runs += [q for p in top if p not in held for q in sorted(_subfolders(p), key=os.path.islink) if _listed(q)]
    for run in runs:  # the shortest path to a run names it
        found.setdefault(_real(run), run)
    return sorted(found.values(), key=last_activity, reverse=True)


def _listed(path: Path) -> bool:
    """Whether ``cnnlab runs`` lists ``path``: a run folder (:func:`is_cnnlab_run`), or one whose config.json is gone
    (it holds a run's checkpoint or metrics and nothing but a run's files), which evaluate and compare still use:
    listed as damaged; and a folder one may not look into (another user's, 0700), or whose files' ``stat`` fails (an input/output
    error): listed, its row saying so (it stopped the listing)."""
    try:
        if is_run_dir(path):
            return is_cnnlab_run(path)  # not another tool's folder with a config.json of its own
        return holds_run(path) and all(p.name in RUN_FILES or p.name.startswith(".") for p in _entries(path))
    except (PermissionError, CnnlabError):  # CnnlabError: cnnlab.fileio.is_file's line for a stat that failed
        return True


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13)
        return path


def _subfolders(folder: Path) -> list[Path]:
    """The folders in ``folder`` (none when it is missing or cannot be read), and the entries whose ``stat`` fails
    (an input/output error: a run folder, maybe, whose row then says so; not a listing stopped for every run). A link
    in a loop of links is no folder, as a dangling link is none."""
    return [p for p in _entries(folder) if not is_loop(p) and is_dir(p, if_unknown=True)]


def last_activity(run: Path) -> float:
    """When the run last wrote its config, checkpoint or metrics (mtime)."""
    times = []
    for name in ("config.json", "last.pt", "metrics.csv", STATUS_FILE):
        try:
            times.append((run / name).stat().st_mtime)
        except OSError:  # not there, or in a folder one may not look into: no activity to go by
            pass
    return max(times, default=0.0)


def resolve_run(text: str | Path, root: str | Path = "runs") -> Path:
    """``latest`` -> the run under ``root`` that was trained or resumed last; anything else -> itself."""
    path = as_path(text, "a run (a folder, a checkpoint or 'latest')", RunError)
    if str(text) != LATEST:
        return path
    runs = find_runs(root)
    if not runs:
        raise RunError(f"'latest': no runs under {Path(root)}/ yet; train one with 'cnnlab train', or give a run folder")
    return runs[0]


def is_running(run: Path, lock: str = LOCK_FILE) -> bool:
    """Whether a live process holds the run folder's lock (probed with a shared lock, released at once; ``lock``:
    another lock file of the folder, an analysis's). The lock file is opened without blocking and must be a regular
    file (a FIFO in its place waited for a writer)."""
    return _probe(run / lock)[0]


def _probe(path: Path) -> tuple[bool, bytes]:
    """Whether a live process holds the lock file ``path`` (:func:`is_running`), and, when one does, its record."""
    if fcntl is None:
        return False, b""
    try:
        fh, _ = open_if_regular(path)
    except OSError:  # none, or in a folder one may not look into
        return False, b""
    if fh is None:
        return False, b""
    with fh:  # closing it releases the probe's shared lock, if it got one
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False, b""
        except OSError:
            try:
                return True, os.pread(fh.fileno(), _RECORD, 0)
            except OSError:
                return True, b"?"


def write_status(run: Path, status: str, detail: str = "", max_steps: int | None = None) -> None:
    """How the run's last process ended: finished, stopped (resumable) or failed, and why; or :data:`RUNNING`, written
    when a process begins to train the run, so that a status of an earlier process never speaks for it, with that
    process's ``max_steps`` (the command that continues it, should it be killed: :func:`_recorded_max_steps`)."""
    limit = {} if max_steps is None else {"max_steps": max_steps}
    atomic_write_text(run / STATUS_FILE, json.dumps({"status": status, "detail": detail, **limit,
                                                     "at": time.time()}) + "\n")


#: The detail of a run whose process ended without a word (killed), with a checkpoint to resume from.
KILLED = "killed, or interrupted without saying so: it resumes from last.pt"

#: The status a process writes when it begins to train a run (a new one, or a resume that trains): read while no
#: process holds the run, it says that process ended without a word (killed), whatever an earlier one wrote.
RUNNING = "running"


#: What a run's detail adds when it ended without a word on a file system that is full (no space, or no free inodes:
#: a process that fails a write there cannot write status.json either, and was listed as if killed).
FULL_NOTES = {
    "space": "its file system has no space left, which may be why it stopped: free some disk space before resuming",
    "inodes": ("its file system has no free inodes left (too many files, though it has free space, as df -i shows), "
               f"which may be why it stopped: {NO_INODES[1]} before resuming"),
}


def _recorded_max_steps(run: Path) -> int:
    """The ``--max-steps`` of the process killed while it trained the run (0: none, or not readable): a process's
    limit, which a resume keeps only when given again. Its status.json's :data:`RUNNING` record says it (a resume
    writes config.json only with its first checkpoint: killed before, config.json still had the run's earlier limit,
    a position the run was at already), else config.json's (a run before that record)."""
    status = _mapping(run / STATUS_FILE, [])
    steps = status.get("max_steps") if status is not None and status.get("status") == RUNNING else None
    if steps is None:
        data = _mapping(run / "config.json", [])
        cfg = data.get("config") if data is not None else None
        steps = cfg.get("max_steps") if isinstance(cfg, dict) else None
    return steps if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else 0


def failure_cause(run: Path) -> str:
    """Why a run's last process failed, as its status.json records it (what ``cnnlab runs`` shows in its row): what
    a command that finds no checkpoint there says instead of "it stopped before its first epoch ended" (a run that
    diverged at its second step: train it again failed the same way). Empty when status.json records no failure, or
    is missing, damaged or not what cnnlab writes."""
    got = _mapping(run / STATUS_FILE, [])
    detail = got.get("detail") if got is not None and got.get("status") == "failed" else None
    return bounded(detail.strip()) if isinstance(detail, str) else ""


def _diverged_after_saving(run: Path) -> str | None:
    """:func:`diverged`'s clause when the run's status.json says its training diverged after it had saved a last.pt
    (its line ends "the last finite checkpoint is kept: RUN/last.pt"; "no checkpoint was saved" otherwise); read from
    the file whole, as :func:`failure_cause` reads it (also under the lock of a resume asking)."""
    got = _mapping(run / STATUS_FILE, [])
    detail = got.get("detail") if got is not None and got.get("status") == "failed" else None
    if not isinstance(detail, str) or not detail.startswith(DIVERGED) or DIVERGED_KEPT not in detail:
        return None
    return bounded(detail.split(";")[0])


def run_status(run: Path, complete: bool = False, problems: list[str] | None = None) -> tuple[str, str]:
    """(status, detail): running, finished, stopped or failed. A process that was killed (or a run written
    before status.json existed) said nothing: ``complete`` (all epochs and a summary) makes it "finished",
    a checkpoint to resume from "stopped", and nothing "failed". A status.json that says :data:`RUNNING` while no
    process holds the run was left by a process killed while it trained the run: a checkpoint makes it "stopped"
    (killed) even when complete (killed while it wrote its report: its resume writes it again), nothing "failed"
    (its first epoch never saved), never what an earlier process's status said. A status.json that is damaged, or
    says what cnnlab never writes, is read as none and added to ``problems`` (one line, for the run's row). A process
    that holds the run for other work than training (an ``evaluate`` writing its report) leaves the status what the
    files say, the detail telling what that process does."""
    task = lock_task(run)
    if task == TRAINING:
        return "running", ""
    status, detail = _status_from_files(run, complete, [] if problems is None else problems)
    if task is None:
        return status, detail
    now = f"{holder(run)} is {DOING.get(task, task)}{NOW}"
    return status, f"{detail}; {now}" if detail else now


def status_record(status: object, detail: object) -> str | None:
    """What a status.json's ``status`` and ``detail`` say, as cnnlab writes them: one of :data:`ENDINGS` with its
    detail, or :data:`RUNNING` (no detail); None for anything else (edited, damaged, or not cnnlab's file)."""
    if status in ENDINGS and isinstance(detail, str):
        return status
    return RUNNING if status == RUNNING and detail == "" else None


def _status_from_files(run: Path, complete: bool, problems: list[str]) -> tuple[str, str]:
    """:func:`run_status` of a run that no process trains now, from its status.json and checkpoints."""
    got = _mapping(run / STATUS_FILE, problems)
    if got is not None:
        status, detail = got.get("status"), got.get("detail", "")
        record = status_record(status, detail)
        if record in ENDINGS:
            return status, bounded(detail)
        if record == RUNNING:
            complete = False
        else:
            problems.append(f"{STATUS_FILE}: not what cnnlab writes there (status {short_repr(status)}, detail "
                            f"{short_repr(detail)}); {_FIXES[STATUS_FILE]}")
    if complete:
        return "finished", ""
    if is_file(run / "last.pt"):
        return "stopped", KILLED
    if is_file(run / "best.pt"):
        return "failed", (f"no last.pt to resume from; best.pt holds the weights of its best epoch: cnnlab evaluate "
                          f"{run} --checkpoint best")
    return "failed", "no checkpoint was saved"


def diverged(run: Path) -> str | None:
    """How a run whose training diverged failed (its status.json: failed, with the :class:`~cnnlab.errors.Diverged`
    line), that line's first clause: ``training diverged: the loss exploded (...) at step 4 (epoch 1, batch 4)``;
    None for any other run. Its last.pt is the last save before the loss was seen to explode (a probe's: 9% accuracy,
    a test loss of 4e5), and a resume from it takes the same steps and diverges again."""
    status, detail = run_status(run)
    return detail.split(";")[0] if status == "failed" and detail.startswith(DIVERGED) else None


def describe_run(run: Path, metrics: list[dict] | None = None) -> dict:
    """One row of ``cnnlab runs``: what the run is, how far it got, its accuracies and its status. It never blocks
    and never fails on what the folder holds: a file that is not what cnnlab writes there (damaged, edited, a
    FIFO in its place) makes the status "damaged", the detail naming the file and what to do, one line, and the
    row tells what the other files (and the readable fields) say; so does a file whose ``stat`` or read fails (an
    input/output error: ``cannot be read``, the fix its error takes). ``metrics``: metrics.csv's rows, read already
    (:func:`read_metrics` with the run's epochs), not read again."""
    row = {"run": str(run), "model": "?", "dataset": "?", "recipe": "?", "teacher": None, "epochs": None, "epochs_done": 0,
           "final_acc": None, "best_acc": None, "best_split": None, "eval_limit": None, "train_seconds": None}
    try:
        os.stat(run / "config.json")
    except PermissionError:  # another user's folder (0700): one row, not a listing stopped for everyone
        return {**row, "status": "damaged", "detail": "the folder cannot be read or entered (permission denied); ask its "
                                                      "owner for read and search (r-x) permission, or leave it out of "
                                                      "this folder of runs"}
    except OSError:
        pass
    try:
        return _described(run, row, metrics)
    except CnnlabError as err:  # a stat that failed (an input/output error: cnnlab.fileio.is_file's line): the file
        detail = str(err)       # named, the row kept with what was read before it; the other runs listed
        return {**row, "status": "damaged", "detail": bounded(detail.removeprefix(f"{run}{os.sep}"))}


def _described(run: Path, row: dict, metrics: list[dict] | None = None) -> dict:
    """:func:`describe_run`'s ``row`` filled in from the run's files (one whose ``stat`` fails: a
    :class:`~cnnlab.errors.CnnlabError`)."""
    problems: list[str] = []
    row.update(_config_columns(run, problems))
    rows_read = _add_metrics(row, run / "metrics.csv", problems, metrics)
    summary = _mapping(run / "summary.json", problems, _FIXES["summary.json"].format(run=shell_quoted(str(run))))
    if summary is not None:
        _add_summary(row, summary, problems)
    complete = row["final_acc"] is not None and row["epochs"] is not None and row["epochs_done"] >= row["epochs"]
    row["status"], row["detail"] = run_status(run, complete, problems)
    if row["status"] == "finished" and rows_read:
        problems += _rows_lost(run, row, summary)
    if row["detail"] == KILLED and (steps := _recorded_max_steps(run)):
        row["detail"] = f"{KILLED} (continue with: cnnlab train --resume {shell_quoted(str(run))} --max-steps {steps})"
    if row["detail"].startswith(KILLED) and (short := out_of_room(run)):  # its status.json could not be written
        row["detail"] += f"; {FULL_NOTES[short]}"
    if row["status"] != "running":
        problems += _checkpoint_problems(run, row["status"] == "finished")
        # no process can take its lock: every resume and report refused (it was listed "finished", "resume to go on")
        problems += [lock for lock in (lock_in_the_way(run / LOCK_FILE),) if lock]
    if problems and row["status"] != "running":
        row["status"], row["detail"] = "damaged", bounded("; ".join(problems))
    return row


def _rows_lost(run: Path, row: dict, summary: dict | None) -> list[str]:
    """A finished run whose metrics.csv holds fewer rows than its epochs (rows lost since the run wrote them: a
    backup restored, a copy of the folder taken while it trained, an edit): its epochs, best and time would be read
    from what is left ("1/2 ... finished"). Not a run that stopped at its --target-accuracy (no row for the epoch it
    stopped in). Asked only of a metrics.csv whose rows were read (one gone says 0 epochs done; a damaged one is named
    as such). Its last.pt holds the whole history, which a listing does not read (no torch): its resume writes the
    file again from it (engine.restore)."""
    epochs, done = row["epochs"], row["epochs_done"]
    target = (summary or {}).get("target") is not None or row["detail"].startswith(TARGET_REACHED)
    if not isinstance(epochs, int) or done >= epochs or target:
        return []
    return [f"metrics.csv: {plural(done, 'row')} for the run's {plural(epochs, 'epoch')}, which it finished (rows lost "
            f"since it wrote them); cnnlab train --resume {shell_quoted(str(run))} writes it again from last.pt's "
            "history"]


def describe_listed(runs: list[Path], rescan: Callable[[], list[Path]] | None = None) -> list[dict]:
    """:func:`describe_run` of each of ``runs``, for a listing: a folder renamed or deleted while it was read (its
    files missing one by one) is left out, not listed as damaged with a repair to make; a damaged row is read once
    more, so that a folder moved away and back meanwhile is listed as it is. Where a folder went, ``rescan`` (the
    listing's own search, again) finds it under its new name: its row joins the others in that search's order."""
    rows = [row for row in map(_listed_row, runs) if row is not None]
    if len(rows) == len(runs) or rescan is None:
        return rows
    again = rescan()
    seen = {str(run) for run in runs}
    rows += [row for row in map(_listed_row, (p for p in again if str(p) not in seen)) if row is not None]
    order = {str(p): i for i, p in enumerate(again)}
    return sorted(rows, key=lambda row: order.get(row["run"], len(order)))


def _listed_row(run: Path) -> dict | None:
    row = describe_run(run)
    if row["status"] == "damaged" and is_dir(run, if_unknown=True):
        row = describe_run(run)
    return row if is_dir(run, if_unknown=True) else None  # gone (renamed, deleted) since; not a stat that failed


def run_problem(run: Path) -> str:
    """Why ``run`` must not be reused as it is (what makes its ``cnnlab runs`` row "damaged": its config.json missing,
    half-written or edited, a checkpoint cut short, a finished run's last.pt gone); empty when there is nothing
    wrong, or while a process trains it. For compare, before it reuses or resumes a run."""
    row = describe_run(run)
    return row["detail"] if row["status"] == "damaged" else ""


def _checkpoint_problems(run: Path, finished: bool) -> list[str]:
    """What is wrong with a run's checkpoints, without torch: a checkpoint that is not a regular file (a FIFO or a
    folder in its place), not a whole zip archive (torch.save's: cut short, its directory at the end lost), or not
    the bytes its ``.sha256`` sidecar names (altered in place); and a finished run without last.pt (deleted or
    moved)."""
    found = [f"{name}.pt: {why}" for name in CHECKPOINTS if (why := checkpoint_damage(run / f"{name}.pt"))]
    if finished and not lexists(run / "last.pt"):
        best = (f"its best.pt holds its best epoch's weights (cnnlab evaluate {shell_quoted(str(run))} --checkpoint best)"
                if is_file(run / "best.pt") else "train it again")
        found.append(f"last.pt: missing, the run finished and its final weights were deleted or moved; put it back, "
                     f"or {best}")
    return found


#: A run's other checkpoint, which a refusal of a damaged one may name instead (:func:`checkpoint_fix`).
_OTHER_CHECKPOINT = {"last.pt": "best.pt", "best.pt": "last.pt"}


def checkpoint_fix(path: Path, flag: str | None = None, file_given: bool = False) -> str:
    """What to do about the damaged checkpoint ``path``: put back the run's own copy, or train it again; and use the
    run's other checkpoint (its best.pt for a last.pt, and the reverse) only where that one is there and whole
    (:func:`checkpoint_damage`): "use the other checkpoint (last.pt / best.pt)" of a run that saved no best.pt sent its
    user to ``--checkpoint best``, which answered "use --checkpoint last". The other is named as the command that
    asks takes it, as :func:`cnnlab.checkpoint.diverged_refusal` names a best.pt: ``--checkpoint best`` beside a
    run folder; the file itself where ``path`` was given as a file (``file_given``: ``--checkpoint best`` is refused
    beside a file); ``flag`` with the file for an option that names a file (``--resume r/best.pt``: train has no
    ``--checkpoint``)."""
    other = path.with_name(_OTHER_CHECKPOINT[path.name]) if path.name in _OTHER_CHECKPOINT else None
    whole = other is not None and is_file(other, if_unknown=False) and not _damage(other, lambda: "")
    if not whole:
        return "put back the run's own copy, or train it again"
    return (f"put back the run's own copy, or use its {other.name} ({checkpoint_as_taken(other, flag, file_given)}), "
            "or train it again")


def checkpoint_as_taken(path: Path, flag: str | None = None, file_given: bool = False) -> str:
    """A run's checkpoint ``path`` named as the command that asks takes it: ``--checkpoint best`` beside a run folder,
    the file itself where the command was given a file (``file_given``: ``--checkpoint`` is refused beside a file),
    ``flag`` with the file for an option that names a file (``--resume r/best.pt``, ``--teacher``)."""
    named = shell_quoted(str(path))
    return f"{flag} {named}" if flag else named if file_given else f"--checkpoint {path.stem}"


def checkpoint_damage(path: Path) -> str:
    """Why the checkpoint file ``path`` cannot be whole: not a regular file (opened without blocking, so a FIFO in
    its place never hangs the listing), not what torch.save writes (its first bytes, and the zip directory it writes
    last, which a file cut short has lost), or not the bytes its sidecar names; empty when it is whole or not there.
    The fix it names is :func:`checkpoint_fix`'s."""
    return _damage(path, lambda: checkpoint_fix(path))


def _damage(path: Path, fix: Callable[[], str]) -> str:
    """:func:`checkpoint_damage`, with ``fix()`` the fix of a file that is not a whole checkpoint."""
    try:
        fh, st = open_if_regular(path)
    except FileNotFoundError:
        return ""
    except OSError as err:
        return f"cannot be read ({reason(err)}); {usual_fix(err)}"
    if fh is None:
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else mode_kind(st.st_mode)
        return f"{kind}, not a file (cnnlab writes its checkpoint there); remove it, then {fix()}"
    with fh:
        try:
            return _torch_file_damage(fh, fix) or _sidecar_mismatch(path, fh, fix)
        except OSError as err:
            return f"cannot be read ({reason(err)}); {usual_fix(err)}"


def _torch_file_damage(fh, fix: Callable[[], str]) -> str:
    """Why the open file ``fh`` is not what torch.save writes, from its first bytes and its zip directory."""
    head = fh.read(4)
    if head[:1] == b"\x80":  # torch.save's legacy format (a pickle): no cheap check of its structure
        return ""
    if head != b"PK\x03\x04":
        return f"{'empty' if not head else 'not a checkpoint'} (not what cnnlab writes there); {fix()}"
    try:
        zipfile.ZipFile(fh)  # reads the directory at the end only
    except (zipfile.BadZipFile, ValueError, EOFError):
        return f"cut short (truncated or altered: its end is missing); {fix()}"
    return ""


def _sidecar_mismatch(path: Path, fh, fix: Callable[[], str]) -> str:
    """Why the open checkpoint ``fh`` is not the file its sidecar (``path.sha256``) names: its SHA-256 is none of the
    sidecar's hashes (one; two while a save is in flight). Empty without a sidecar, or while a process holds the
    run (its save may land between the two reads)."""
    side = path.with_name(path.name + ".sha256")
    try:
        data = read_run_file(side, SIDECAR_LIMIT)
    except CnnlabError as err:
        return f"its sidecar {_in_run(side, str(err))}"
    if data is None:
        return ""
    fh.seek(0)
    got = sha256_of(fh)
    if got in sidecar_hashes(data.decode("utf-8", "replace")) or is_running(path.parent):
        return ""
    return (f"altered (its SHA-256 {got[:12]}... is not the one {side.name} names: flipped, zeroed or "
            f"appended bytes); {fix()}")


def link_to_nowhere(path: Path) -> str | None:
    """Where ``path`` points when it is itself a symbolic link to nothing (its target deleted, moved, or on a file
    system not mounted now), as its links say it (:func:`cnnlab.fileio.nowhere`); None for anything else (a file,
    nothing at all, a loop of links, a link to nowhere further up its path)."""
    trouble = link_trouble(path)
    return nowhere(Path(path)) if trouble is not None and trouble.dangling and trouble.part == Path(path) else None


def checkpoints_gone(run: Path) -> str:
    """Why a run folder that trained holds neither last.pt nor best.pt, for a refusal: empty when it has one, never
    ended an epoch (then it saved none), or its last process failed (:func:`failure_cause`: a disk that filled up as
    it wrote its first last.pt, after that epoch's metrics.csv row; what the refusal names instead, as ``export``'s
    and ``predict``'s do, not checkpoints "deleted or moved"). A checkpoint that is a link to nothing is named with
    its target (:func:`link_to_nowhere`: such a link was taken for a checkpoint there, and the run was said to have
    saved none); a run that diverged after it saved a last.pt (its status.json says it kept one) and has none now had
    it deleted or moved."""
    links = [f"{name}.pt is a link to {target}" for name in CHECKPOINTS
             if (target := link_to_nowhere(run / f"{name}.pt")) is not None]
    if links:
        them = "them" if len(links) > 1 else "it"
        return (f"{' and '.join(links)}, which {'do' if len(links) > 1 else 'does'} not exist: remount what held {them}, "
                f"or put {them} back")
    if any(lexists(run / f"{name}.pt") for name in CHECKPOINTS):
        return ""
    if (why := _diverged_after_saving(run)) is not None:
        return (f"the run failed, {why} (its status.json), and the last.pt it kept, the weights it diverged with, was "
                "deleted or moved since: train it again with a lower --lr")
    if failure_cause(run):
        return ""
    kept = [name for name in ("metrics.csv", "summary.json") if is_file(run / name)]
    if not kept:
        return ""
    remain = "remain" if len(kept) > 1 else "remains"
    return (f"the run trained ({' and '.join(kept)} {remain}) but its checkpoints (last.pt, best.pt) were deleted or "
            "moved: put them back, or train it again")


def last_gone(run: Path) -> str:
    """Why a run folder holds its best.pt but nothing at last.pt's place, for a resume's refusal: the run saved one
    (it saves last.pt before best.pt, at every position: ``observers.CheckpointSaver``), deleted or moved since, as
    :func:`_checkpoint_problems` says of a finished run (the refusal said "the run saved no last.pt before it
    stopped"), with the fix: put it back, or continue from best.pt (which, saved at the run's end, the resume writes as
    last.pt again: ``engine._recover_last``). Empty where something is at last.pt's place, or best.pt is not there."""
    if lexists(run / "last.pt") or not is_file(run / "best.pt"):
        return ""
    status = _mapping(run / STATUS_FILE, [])
    saved = ("finished and its final weights (last.pt) were" if status is not None and status.get("status") == "finished"
             else "saved a last.pt (it saves one before its best.pt, at every position) and it was")
    return (f"the run {saved} deleted or moved since: put it back, or continue from its best epoch: cnnlab train "
            f"--resume {shell_quoted(str(run / 'best.pt'))}")


# ----------------------------------------------------------------------------- reading a run's files

#: How a run's last process ended, as :func:`write_status` writes it (``cnnlab runs`` adds running and damaged).
ENDINGS = ("finished", "stopped", "failed")
#: The most characters of a text from a run's files that a row of ``cnnlab runs`` holds (a status's detail, a
#: model's name): a status.json edited to a 1 MB detail made a 1 MB line.
TEXT_LIMIT = 500
#: The most characters of a name from a run's settings (a model, a dataset's path) that its row holds.
NAME_LIMIT = 4096
#: The most of a checkpoint's sidecar that is read (a hash and a name per line, two lines while a save is in flight).
SIDECAR_LIMIT = 64 << 10
#: The most of a metrics.csv that is read (a row per epoch, about 100 bytes each).
METRICS_LIMIT = 64 << 20
_DAMAGED = "the run folder is damaged (cnnlab writes these files whole)"
#: What to do about each of a run's files that is not what cnnlab writes there.
_FIXES = {
    "config.json": "fix the file, or put back the one the run wrote",
    STATUS_FILE: "remove it, and the run's other files tell how it ended",
    "summary.json": "cnnlab evaluate {run} writes it again",
    "metrics.csv": "delete it: the run's checkpoints do not need it, and its next epoch writes it whole again",
}
#: The settings every config.json that cnnlab writes holds (each run's resolved settings): one without them was
#: half-written or edited.
REQUIRED_SETTINGS = ("model", "dataset", "epochs")
#: The columns a row takes from the run's settings, and their types.
_CONFIG_COLUMNS = {"model": str, "dataset": str, "recipe": str, "epochs": int, "teacher": str, "eval_limit": int}


def bounded(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text``, cut to ``limit`` characters with a mark."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_run_file(path: Path, limit: int = RUN_FILE_LIMIT, fix: str = _DAMAGED) -> bytes | None:
    """The bytes of a file in a run folder; None when there is none. It never blocks: the file is opened with
    O_NONBLOCK and must be a regular file once open (:func:`cnnlab.data.safefs.open_regular`, as the data files
    are read), so a FIFO or a device in its place is one line naming it, as is a file larger than ``limit`` (with
    ``fix``, the file's own), and an OS error of its open or of a read after it (an input/output error: a
    :class:`~cnnlab.errors.DataUnreadable` naming the file and the fix its error takes)."""
    path = Path(path)
    stream = open_run_file(path, limit, fix)
    if stream is None:
        return None
    with stream:
        return read_bounded(stream, limit, str(path))


def open_run_file(path: Path, limit: int = RUN_FILE_LIMIT, fix: str = _DAMAGED) -> BinaryIO | None:
    """:func:`read_run_file`'s file, open (for a read as it goes, :func:`metrics_rows`); None when there is none."""
    if not lexists(path):  # a stat that fails (an input/output error) is no missing file: one line naming it
        return None
    stream, st = open_regular(path, "a file cnnlab writes")
    if st.st_size > limit:
        stream.close()
        raise RunError(f"{path}: {st.st_size:,} bytes, far more than cnnlab writes there; {fix}")
    return stream


#: What :func:`load_run_json` returns, when asked, for a file that is not there (a file holding ``null`` is JSON's None).
ABSENT = object()


def json_kind(data: object) -> str:
    """What a JSON file holds instead of a mapping, for a refusal: ``null``, ``a int``, ``a list``."""
    return "null" if data is None else f"a {type(data).__name__}"


def load_run_json(path: Path, fix: str = _DAMAGED, missing: object = None) -> object:
    """A JSON file of a run folder, read without blocking (:func:`read_run_file`); ``missing`` when there is none. One
    :class:`~cnnlab.errors.CnnlabError` line naming the file (and ``fix``) when it cannot be read or is not JSON."""
    data = read_run_file(path)
    if data is None:
        return missing
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise RunError(f"{path}: not text (byte {err.start} is not UTF-8); {fix}") from None
    except ValueError as err:
        raise RunError(f"{path}: not valid JSON ({first_line(err)[:120]}); {fix}") from None
    except RecursionError:
        raise RunError(f"{path}: not valid JSON (nested too deeply); {fix}") from None


def read_run_json(path: Path, unreadable_raises: bool = False) -> dict | None:
    """A run's JSON file as a mapping, read without blocking; None when it is missing, unreadable, damaged or
    not a mapping: ``cnnlab runs`` lists such a run with what it can still tell. ``unreadable_raises``: a file that is
    there but cannot be read now (:class:`~cnnlab.errors.DataUnreadable`, an input/output error: it may be whole)
    raises instead of counting as none (compare must not resume or rewrite a run for it)."""
    try:
        data = load_run_json(path)
    except DataUnreadable:
        if unreadable_raises:
            raise
        return None
    except CnnlabError:
        return None
    return data if isinstance(data, dict) else None


def run_config(run: Path) -> dict:
    """The settings in ``run``'s config.json, each of its field's type; one :class:`~cnnlab.errors.CnnlabError`
    line naming the file (and the field: ``"epochs": "2"`` typed into it) otherwise."""
    path = Path(run) / "config.json"
    return _checked_config(load_run_json(path, missing=ABSENT), path)


def _checked_config(data, path: Path, fix: str = _DAMAGED) -> dict:
    cfg = data.get("config") if isinstance(data, dict) else None
    if not isinstance(cfg, dict):
        what = ("no such file" if data is ABSENT else f"not the file cnnlab writes there ({json_kind(data)})"
                if not isinstance(data, dict) else "not the file cnnlab writes there (no settings in it)")
        raise RunError(f"{path}: {what}; {fix}")
    typed_values(cfg, str(path))
    missing = [key for key in REQUIRED_SETTINGS if key not in cfg]
    if missing:
        raise RunError(f"{path}: not the file cnnlab writes there (no {', '.join(missing)} in its settings: half-written "
                       f"or edited); {fix}")
    epochs = cfg["epochs"]
    if epochs is not None and not 1 <= epochs <= EPOCHS_LIMIT:
        raise RunError(f"{path}: epochs {bounded(str(epochs), 40)} is not what cnnlab writes there (a run trains 1 to "
                       f"{EPOCHS_LIMIT:,}); {fix}")
    return cfg


def _in_run(path: Path, message: str) -> str:
    """A message about ``path`` that names the file alone (a row of ``cnnlab runs`` names its run)."""
    return path.name + message[len(str(path)):] if message.startswith(f"{path}:") else message


def _mapping(path: Path, problems: list[str], fix: str | None = None) -> dict | None:
    """A run's JSON file, for its row: None when there is none; when it is damaged or not a mapping, None and
    the problem added to ``problems``."""
    fix = fix or _FIXES.get(path.name, _DAMAGED)
    try:
        data = load_run_json(path, fix, missing=ABSENT)
    except CnnlabError as err:
        problems.append(_in_run(path, str(err)))
        return None
    if data is ABSENT:
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name}: not the file cnnlab writes there ({json_kind(data)}); {fix}")
        return None
    return data


def _config_columns(run: Path, problems: list[str]) -> dict:
    """The row's columns from config.json, each only when of its type; nothing when the file has no settings.
    What is wrong with the file (a value of another type, as ``"epochs": "2"``) is added to ``problems``."""
    path = run / "config.json"
    data = _mapping(path, problems)
    if data is None and not lexists(path):
        problems.append("config.json: missing (cnnlab writes it first, and the checkpoints still hold the settings); "
                        "put back the one the run wrote")
    if data is None:
        return {}
    try:
        cfg = _checked_config(data, path, _FIXES["config.json"])
    except CnnlabError as err:  # no settings in it, or one of another type (its own fix: the field's example)
        problems.append(_in_run(path, str(err)))
        cfg = data.get("config")
        if not isinstance(cfg, dict):
            return {}
    columns = {}
    for key, kind in _CONFIG_COLUMNS.items():
        value = cfg.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or key == "epochs" and not 1 <= value <= EPOCHS_LIMIT:
            value = None  # missing, of another type, or out of range (noted above)
        columns[key] = bounded(value, NAME_LIMIT) if isinstance(value, str) else value
    return columns


def _add_metrics(row: dict, path: Path, problems: list[str], rows: list[dict] | None = None) -> bool:
    """The epochs done, the best accuracy and the training time from metrics.csv (nothing when there is none),
    read a row at a time (:func:`metrics_rows`: none kept; more rows than the run's epochs are damage), or from
    ``rows`` read already. The best accuracy is the best epoch's evaluation, on the split the run evaluated its epochs
    on (as its best.pt was chosen): the validation split where it held one out, else the test set; ``best_split``
    says which (``final_acc``, the run's result, is always the test set's). Whether the rows were read (False: the file
    is not there, or is damaged: said in ``problems``)."""
    done, best, val, seconds = 0, None, False, 0
    try:
        for number, r in enumerate(metrics_rows(path, row["epochs"]) if rows is None else rows, 1):
            bad = next((key for key in ("val_acc", "test_acc", "seconds")
                        if r.get(key) is not None and not _number(r[key])), None)
            if bad is not None:  # a NaN made max() NaN or any other value, and 400 digits overflow every float
                problems.append(f"{path.name}: damaged (row {number}: its {bad} {bounded(str(r[bad]), 20)} is not a "
                                f"finite number); {_FIXES['metrics.csv']}")
                return False
            acc = r.get("val_acc") if r.get("val_acc") is not None else r.get("test_acc")
            best = acc if best is None or acc is not None and acc > best else best
            val |= r.get("val_acc") is not None
            seconds += r.get("seconds") or 0
            done += 1
    except FileNotFoundError:
        return False
    except (OSError, CnnlabError) as err:
        problems.append(_in_run(path, str(err)) if isinstance(err, CnnlabError) else
                        f"{path.name}: cannot be read ({reason(err)}); {usual_fix(err)}")
        return False
    row.update(epochs_done=done, best_acc=best, best_split=None if best is None else "val" if val else "test",
               train_seconds=seconds)
    return True


#: The columns of a :func:`describe_run` row.
RUN_COLUMNS = ("run", "model", "dataset", "recipe", "teacher", "epochs", "epochs_done", "final_acc", "best_acc",
               "best_split", "eval_limit", "train_seconds", "status", "detail")


def check_columns(wanted: dict) -> None:
    """One line for a filter on a column that :func:`describe_run` rows do not have, naming the columns."""
    for key in wanted:
        if key not in RUN_COLUMNS:
            raise RunError(f"runs have no column {key!r}{did_you_mean(key, RUN_COLUMNS)}; filter on one of: "
                           f"{', '.join(RUN_COLUMNS)}")


def matches(row: dict, wanted: dict) -> bool:
    """Whether a :func:`describe_run` row has every ``{column: value}`` of ``wanted`` (case-insensitive). A number
    matches as a number (:func:`_same_number`: ``96`` is ``96.0``). A dataset also matches as the table shows it and
    as it was typed: ``idx`` (or ``folder``) is every run on an ``idx:`` (``folder:``) dataset, and ``idx:DIR`` the
    runs on that folder, ``DIR`` resolved from here as training does (a run records ``idx:/its/absolute/path``)."""
    return all(str(row.get(key)).lower() == str(value).lower() or _same_number(row.get(key), value)
               or (key == "dataset" and _same_dataset(row.get(key), value)) for key, value in wanted.items())


def _same_number(recorded, wanted) -> bool:
    """Whether a row's number ``recorded`` is the number ``wanted``, compared as numbers (as text, ``96.0`` was not
    ``96``, nor ``2`` ``2.0``): equal, or equal to ``wanted`` as metrics.csv records a number (six significant digits,
    :func:`_fmt`), where the row's comes from (its best accuracy: ``TrainResult.best_accuracy``'s 74.50980392156863
    is the row's 74.5098)."""
    if not (_number(recorded) and _number(wanted)):
        return False
    return recorded == wanted or isinstance(recorded, float) and recorded == _parse(str(_fmt(float(wanted))))


def _same_dataset(recorded, wanted) -> bool:
    """Whether a run's ``recorded`` ``idx:``/``folder:`` dataset is the one ``wanted`` names (its kind, or its path)."""
    if not isinstance(recorded, str) or not isinstance(wanted, str) or directory_of(recorded) is None:
        return False
    if wanted.lower() in DIRECTORY_KINDS:
        return dataset_kind(recorded) == wanted.lower()
    if directory_of(wanted) is None:
        return False
    try:  # both resolved: a run recorded through a link since changed is still found by either path
        return canonical_dataset_name(wanted) in (recorded, canonical_dataset_name(recorded))
    except (OSError, CnnlabError):  # a path too long, a loop of links (fileio.resolved's line): no run's dataset
        return False


def _number(value) -> bool:
    """A finite number a float holds (JSON's parsers take ``NaN``, ``Infinity`` and an integer of 400 digits, which
    no float holds: a summary.json holding one is damaged)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large to convert to float
        return False


def _add_summary(row: dict, summary: dict, problems: list[str]) -> None:
    """The final accuracy, the whole training time (an epoch stopped inside included) and, for a run that
    stopped at --target-accuracy inside an epoch, how far it got (e.g. 0.75 of an epoch, where metrics.csv,
    which has a row per finished epoch, says 0) and the accuracy that stopped it, when best.pt holds those weights.
    An accuracy that is no number is added to ``problems``."""
    accuracy = summary.get("accuracy")
    if _number(accuracy):
        row["final_acc"] = accuracy
    elif accuracy is not None:
        problems.append(f"summary.json: its accuracy is {short_repr(accuracy)}, not a number; "
                        + _FIXES["summary.json"].format(run=shell_quoted(str(row["run"]))))
    if _number(summary.get("train_seconds")):
        row["train_seconds"] = summary["train_seconds"]
    target = summary.get("target")
    if isinstance(target, dict) and _number(target.get("epoch")) and target["epoch"] > row["epochs_done"]:
        row["epochs_done"] = round(target["epoch"], 2)
    # the check inside an epoch that reached the target counts for best.pt (since 2026-12-07: its record names the
    # split; before, best.pt kept the best epoch's weights, and so does the row of such a run)
    if isinstance(target, dict) and target.get("split") in ("val", "test") and _number(target.get("accuracy")) \
            and (row["best_acc"] is None or target["accuracy"] > row["best_acc"]):
        row["best_acc"], row["best_split"] = target["accuracy"], target["split"]


# ----------------------------------------------------------------------------- metrics.csv


def write_metrics(path: str | Path, rows: list[dict]) -> None:
    """Rewrite ``metrics.csv`` whole from the history (atomic, so a resumed run never duplicates rows)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in METRIC_FIELDS})
    atomic_write_text(path, buf.getvalue())


def metrics_behind(path: str | Path, history: list[dict], past_too: bool = False) -> str | None:
    """Why metrics.csv lacks epochs that ``history`` holds (a run's, from its checkpoint: what the file is written
    from, and the truth where the two disagree): ``missing``, ``damaged``, or ``holds 1 row for 2 epochs`` (rows lost
    since the run wrote them: a backup restored, a copy of the folder taken while it trained, an edit); None where it
    holds a row for each, where the history holds none, or where something other than a file is in its place (whoever
    writes there says so). More rows than the history: ``holds 3 rows for 2 epochs`` with ``past_too`` (a resume from
    the run's last.pt), else None (a resume from best.pt writes them again as it trains). A file that cannot be read now raises :class:`~cnnlab.errors.DataUnreadable`: it may be whole."""
    if not history or kind_of(path) not in ("nothing", "a file"):
        return None
    try:
        rows = read_metrics(path)
    except FileNotFoundError:
        return "missing"
    except DataUnreadable:
        raise
    except (OSError, CnnlabError):
        return "damaged"
    short = len(rows) < len(history) or past_too and len(rows) > len(history)
    return f"holds {plural(len(rows), 'row')} for {plural(len(history), 'epoch')}" if short else None


def read_metrics(path: str | Path, epochs: int | None = None) -> list[dict]:
    """metrics.csv's rows, numbers parsed (a blank cell, as :func:`write_metrics` writes None, is None), read
    without blocking (:func:`read_run_file`). ``FileNotFoundError`` when there is none; a file that is not what
    :func:`write_metrics` writes (or a FIFO in its place, or one that cannot be read) is one line, as is one with more
    rows than the run's ``epochs`` when they are given (a row an epoch: :func:`metrics_rows`)."""
    return list(metrics_rows(path, epochs))


def metrics_rows(path: str | Path, epochs: int | None = None) -> Iterator[dict]:
    """:func:`read_metrics`'s rows one at a time, the file read as they are (a listing keeps neither the rows nor
    the file's text): an error comes when its row does. Given the run's ``epochs``, a row past them is damage (cnnlab
    writes one row an epoch; a resume that lengthens a run writes its config.json with its first checkpoint, and a
    kill between that epoch's row and its last.pt is put right by the resume from it: engine._metrics_from_history), found
    without reading the rest: a file of a million rows under the size cap took a listing 40 s and a gigabyte."""
    path, fix = Path(path), _FIXES["metrics.csv"]
    stream = open_run_file(path, METRICS_LIMIT, fix)
    if stream is None:
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
    with io.TextIOWrapper(stream, encoding="utf-8", newline="") as text:  # lines as io.StringIO(newline="") gave
        try:
            yield from _metrics_rows(_text_lines(text, path), epochs)
        except UnicodeDecodeError:  # told by its place in the file (the decoder's is in a chunk of it)
            raise RunError(f"{path}: damaged (byte {_not_utf8(path)} is not UTF-8); {fix}") from None
        except (ValueError, csv.Error) as err:
            raise RunError(f"{path}: damaged ({first_line(err)}); {fix}") from None


def _text_lines(text: io.TextIOWrapper, path: Path) -> Iterator[str]:
    """The lines of a run's text file as they are read, at most :data:`METRICS_LIMIT` characters in all (the file
    may grow after its size was checked); a read that fails is one line naming it."""
    total = 0
    try:
        for line in text:
            total += len(line)
            if total > METRICS_LIMIT:
                raise RunError(f"{path}: more than {METRICS_LIMIT:,} bytes, far more than cnnlab writes there; "
                               f"{_FIXES['metrics.csv']}")
            yield line
    except OSError as err:
        if err.errno is None:
            raise
        raise read_error(path, err) from None


def _not_utf8(path: Path) -> int:
    """Where the first byte that is not UTF-8 lies in the file (-1: none, as read again)."""
    try:
        (read_run_file(path, METRICS_LIMIT) or b"").decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start
    return -1


def _metrics_rows(lines: Iterable[str], epochs: int | None = None) -> Iterator[dict]:
    """The rows of a metrics.csv's lines: each as long as the header, each cell a number or blank, no more of them
    than ``epochs`` (when given)."""
    reader = csv.reader(lines)
    header = next(reader, [])
    count = 0
    for cells in reader:
        if not cells:
            continue
        if len(cells) != len(header):  # cut short (a truncated copy), or a stray column
            raise ValueError(f"line {reader.line_num} has {len(cells)} cells for {len(header)} columns")
        count += 1
        if epochs is not None and count > epochs:
            raise ValueError(f"line {reader.line_num}: a row past the run's {plural(epochs, 'epoch')}, where cnnlab "
                             "writes one row an epoch")
        try:
            values = [_parse(cell) for cell in cells]  # each cell parsed once (it was checked, then parsed again)
        except ValueError:
            bad = next(cell for cell in cells if not _is_number(cell))
            raise ValueError(f"line {reader.line_num}: {short_repr(bounded(bad, 20))} where a number goes") from None
        try:  # a measure as a float: a whole number too large for one (a 400-digit cell) is no measure cnnlab wrote
            yield {name: float(v) if isinstance(v, int) and name not in COUNT_FIELDS else v
                   for name, v in zip(header, values)}
        except OverflowError:
            raise ValueError(f"line {reader.line_num}: a number too large for a measure") from None


def _is_number(cell: str) -> bool:
    try:
        _parse(cell)
    except ValueError:
        return False
    return True


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def _parse(value: str):
    if value == "":
        return None
    if "." in value or "e" in value or "E" in value:  # no int() takes these: a float at once, no exception first
        return float(value)
    try:
        return int(value)
    except ValueError:
        return float(value)
