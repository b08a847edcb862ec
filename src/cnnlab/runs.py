"""Run folders: ``runs/<model>-<dataset>-<timestamp>/`` with config, metrics and checkpoints.

Which folder a ``train`` writes (a fresh one, ``--out``, the one it resumes, the one a torchrun launch
and its restarts share), the lock that makes a folder belong to one process, and metrics.csv.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl  # POSIX: the run-folder lock
except ImportError:  # pragma: no cover - Windows has no flock: runs there are not locked
    fcntl = None

from cnnlab.dataset_names import dataset_kind
from cnnlab.errors import CnnlabError, RunError, did_you_mean, short_repr
from cnnlab.fileio import as_path, atomic_write_text, make_dirs, read_json, remove_stale_temp_files_in, write_error

METRIC_FIELDS = [
    "epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr", "seconds",
    "images_per_s",
]
#: Files whose presence means a folder holds a run that trained (config.json alone is written before training).
RUN_MARKERS = ("last.pt", "metrics.csv")
#: Every name cnnlab writes into a run folder (training, its report, export and analyses): a folder holding only
#: these is a run's (perhaps one killed before its first checkpoint), anything else is the user's.
RUN_FILES = frozenset({"config.json", "status.json", "summary.json", "metrics.csv", "last.pt", "last.pt.sha256",
                       "best.pt", "best.pt.sha256", "curves.png", "confusion.png", "mistakes.png", "tensorboard",
                       "model.safetensors", "last.onnx", "last.torchscript.pt", "best.onnx", "best.torchscript.pt",
                       "branches.json", "branches.png", "teacher.pt"})
LOCK_FILE = ".lock"
#: What the report and analysis commands write into their ``--out`` folder (evaluate, analyze branches and
#: gradients, compare), and the files beside a run's that can sit in a report folder.
REPORT_FILES = frozenset({"summary.json", "confusion.png", "mistakes.png", "curves.png", "branches.json",
                          "branches.png", "gradients.json", "gradients.png", "depth.png", "comparison.md",
                          "comparison.png"})
#: The run files that ``cnnlab export`` and ``export-weights`` write by default: replaced by an export of the same
#: run, never by anything else.
EXPORT_FILES = frozenset({"model.safetensors", "last.onnx", "last.torchscript.pt", "best.onnx", "best.torchscript.pt"})


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)

#: The checkpoints a run folder holds, as ``<name>.pt``: ``last`` (the end of training, or of the last
#: save) and ``best`` (the highest evaluated accuracy: on the test set, or on the validation split
#: when the run used one). Commands that read a run take ``last`` unless told otherwise.
CHECKPOINTS = ("last", "best")
DEFAULT_CHECKPOINT = "last"


def new_run_dir(root: str | Path, model: str, dataset: str) -> Path:
    """A fresh directory under ``root``; a numeric suffix avoids clobbering a run of the same second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{model}-{_safe(dataset_kind(dataset))}-{stamp}"
    make_dirs(base.parent)
    path, n = base, 1
    while True:
        try:
            path.mkdir(exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        except OSError as err:
            raise write_error(path / ".", err) from None


def run_dir_of(path: str | Path) -> Path:
    """The run folder of a path: a run folder itself, or the folder of a checkpoint file inside one."""
    p = Path(path)
    return p if p.is_dir() else p.parent


def holds_run(path: str | Path) -> bool:
    """Whether ``path`` holds a run that trained (a checkpoint or metrics), which a new run must not mix with."""
    return any((Path(path) / name).exists() for name in RUN_MARKERS)


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
    #: Whether ``run_dir`` was made for this run just now (a timestamped folder).
    fresh: bool = False


def plan_run(model: str, dataset: str, *, out: str | Path | None, resume: str | Path | None,
             runs_root: str | Path, write: bool, distributed: bool, restart_count: int) -> RunPlan:
    """Resolve the run folder: ``resume``, ``out``, a torchrun launch's folder, or a fresh timestamped one.

    Refuses (one line) a new run into a folder that already holds a run, unless torchrun restarted this
    launch (then it continues from the folder's last.pt, or starts again if none was saved).
    """
    if resume is not None:
        resume = Path(resume)
        if not resume.exists():
            raise RunError(f"--resume {resume}: no such run folder or checkpoint; check the path "
                           "('cnnlab runs' lists your runs)")
        ckpt = resume / "last.pt" if resume.is_dir() else resume
        return RunPlan(run_dir_of(resume) if write else None, ckpt)
    if distributed and out is None:
        out = Path(runs_root) / f"{model}-{_safe(dataset_kind(dataset))}-torchrun-{torchrun_launch_id()}"
    if out is not None:
        out = as_path(out, "--out (the run's folder)", RunError)
        if restart_count > 0 and (out / "last.pt").is_file():
            return RunPlan(out if write else None, out / "last.pt")  # torchrun restarted the group
        if write and restart_count == 0 and holds_run(out):
            raise RunError(f"--out {out} already holds a run; continue it with 'cnnlab train --resume {out}', "
                           "or pick a fresh --out")
        if write and restart_count == 0:
            _refuse_other_files(out)
        return RunPlan(out if write else None, None, fresh=not out.exists())
    return RunPlan(new_run_dir(runs_root, model, dataset), None, fresh=True) if write else RunPlan(None, None)


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
                       f"pick a new or empty one, e.g. --out {out / 'run1'}")


class RunLock:
    """An exclusive OS lock on a run folder (``flock`` on ``.lock``), held while a process writes it.

    The kernel releases it when the process dies, however it dies, so a killed run never leaves its
    folder locked. Where ``fcntl`` does not exist (Windows) there is no lock.
    """

    def __init__(self, run_dir: Path, busy: str = "wait for it to finish, or pick another --out"):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None
        self.busy = busy  # what to do when another process holds it

    def acquire(self) -> "RunLock":
        if fcntl is None:
            return self
        make_dirs(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise write_error(self.path, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunError(f"{self.path.parent} is in use by another cnnlab process (pid {holder}); "
                           + self.busy.format(pid=holder)) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)  # who holds it, for the message above
        except OSError as err:  # a full disk: the run could not save anything either
            os.close(fd)
            raise write_error(self.path, err) from None
        self.fd = fd
        remove_stale_temp_files_in(self.path.parent)  # ours now: what killed writers left is garbage
        return self

    def release(self) -> None:
        if self.fd is not None:
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
    return (path / "config.json").is_file()


# ----------------------------------------------------------------------------- outputs never clobber a run


def _same_folder(a: Path, b: Path | None) -> bool:
    return b is not None and a.resolve() == b.resolve()


def check_output_folder(folder: str | Path, own: Path | None, flag: str = "--out", writes: tuple[str, ...] = ()) -> None:
    """Refuse (one line) to write a report or an analysis into ``folder`` when it holds a run other than
    ``own`` (its summary.json and figures are that run's results, and ``cnnlab runs`` reads them), or when it
    is no cnnlab report's folder (it holds files no cnnlab report writes) and one of the files the command
    ``writes`` is there already: that file is the user's (``--out .`` in a project with its own summary.json)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    if is_run_dir(folder):
        if not _same_folder(folder, own):
            raise RunError(f"{flag} {folder} holds another run, whose summary.json and figures are its results; "
                           "give a folder of its own (a new or empty one)")
        return
    clash = [name for name in writes if (folder / name).exists()]
    foreign = sorted(p.name for p in _entries(folder) if not _reported(p)) if clash else []
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


def _reported(path: Path) -> bool:
    """Whether ``path`` is something a cnnlab report, analysis or compare writes (or a hidden file)."""
    return path.name.startswith(".") or path.name in REPORT_FILES or (path.is_dir() and is_run_dir(path))


def check_output_file(target: str | Path, source: Path | None, flag: str = "--out") -> None:
    """Refuse (one line) an export over a file it must not replace: the checkpoint it reads (``source``), a
    cnnlab checkpoint (it has a ``.sha256`` sidecar), or a run's own file (:data:`RUN_FILES`: its checkpoints,
    config, metrics, report; its lock), which only that run's own exports (:data:`EXPORT_FILES`) may replace."""
    target = Path(target)
    name, folder = target.name, target.parent
    if source is not None and target.exists() and target.resolve() == source.resolve():
        raise RunError(f"{flag} {target} is the checkpoint being exported; give another file name")
    if target.with_name(name + ".sha256").is_file():
        raise RunError(f"{flag} {target} is a cnnlab checkpoint (it has a .sha256 beside it); writing over it "
                       "would lose its weights: give another file name")
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
    if root.is_dir() and is_run_dir(root):  # a run folder itself: that run
        return [root]
    if root.exists() and not root.is_dir():
        raise RunError(f"{root} is a file, not a folder of runs; give the folder that holds them (runs/ by default)")
    found: dict[Path, Path] = {}  # each run once, by its real folder (a link back to the root listed all twice)
    top = sorted(_subfolders(root), key=Path.is_symlink)  # a run's own path before a link's
    runs = [p for p in top if is_run_dir(p)]
    held = set(runs)
    runs += [q for p in top if p not in held for q in sorted(_subfolders(p), key=Path.is_symlink) if is_run_dir(q)]
    for run in runs:  # the shortest path to a run names it
        found.setdefault(_real(run), run)
    return sorted(found.values(), key=last_activity, reverse=True)


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13)
        return path


def _subfolders(folder: Path) -> list[Path]:
    """The folders in ``folder`` (none when it is missing or cannot be read)."""
    return [p for p in _entries(folder) if p.is_dir()]


def last_activity(run: Path) -> float:
    """When the run last wrote its config, checkpoint or metrics (mtime)."""
    times = [(run / name).stat().st_mtime for name in ("config.json", "last.pt", "metrics.csv", STATUS_FILE)
             if (run / name).exists()]
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


def is_running(run: Path) -> bool:
    """Whether a live process holds the run folder's lock (probed with a shared lock, released at once)."""
    path = run / LOCK_FILE
    if fcntl is None or not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the probe's shared lock, if it got one


def write_status(run: Path, status: str, detail: str = "") -> None:
    """How the run's last process ended: finished, stopped (resumable) or failed, and why."""
    atomic_write_text(run / STATUS_FILE, json.dumps({"status": status, "detail": detail, "at": time.time()}) + "\n")


def run_status(run: Path, complete: bool = False) -> tuple[str, str]:
    """(status, detail): running, finished, stopped or failed. A process that was killed (or a run written
    before status.json existed) said nothing: ``complete`` (all epochs and a summary) makes it "finished",
    a checkpoint to resume from "stopped", and nothing "failed"."""
    if is_running(run):
        return "running", ""
    got = read_run_json(run / STATUS_FILE)
    if got is not None and "status" in got:
        return str(got["status"]), str(got.get("detail", ""))
    if complete:
        return "finished", ""
    if (run / "last.pt").is_file():
        return "stopped", "killed, or interrupted without saying so: it resumes from last.pt"
    return "failed", "no checkpoint was saved"


def describe_run(run: Path) -> dict:
    """One row of ``cnnlab runs``: what the run is, how far it got, its accuracies and its status."""
    row = {"run": str(run), "model": "?", "dataset": "?", "recipe": "?", "teacher": None, "epochs": None, "epochs_done": 0,
           "final_acc": None, "best_acc": None, "train_seconds": None}
    cfg = (read_run_json(run / "config.json") or {}).get("config")
    if isinstance(cfg, dict):
        row.update(model=cfg.get("model"), dataset=cfg.get("dataset"), recipe=cfg.get("recipe"),
                   epochs=cfg.get("epochs"), teacher=cfg.get("teacher"))
    try:
        rows = read_metrics(run / "metrics.csv")
        accs = [r.get("val_acc") if r.get("val_acc") is not None else r.get("test_acc") for r in rows]
        row.update(epochs_done=len(rows), best_acc=max((a for a in accs if a is not None), default=None),
                   train_seconds=sum(r.get("seconds") or 0 for r in rows))
    except (OSError, CnnlabError, ValueError, KeyError, TypeError):
        pass
    summary = read_run_json(run / "summary.json")
    if summary is not None:
        _add_summary(row, summary)
    complete = row["final_acc"] is not None and row["epochs"] is not None and row["epochs_done"] >= row["epochs"]
    row["status"], row["detail"] = run_status(run, complete)
    return row


def read_run_json(path: Path) -> dict | None:
    """A run's JSON file (``fileio.read_json``) as a mapping; None when it is missing, unreadable, damaged or
    not a mapping: ``cnnlab runs`` lists such a run with what it can still tell."""
    try:
        data = read_json(path, str(path))
    except CnnlabError:
        return None
    return data if isinstance(data, dict) else None


#: The columns of a :func:`describe_run` row.
RUN_COLUMNS = ("run", "model", "dataset", "recipe", "teacher", "epochs", "epochs_done", "final_acc", "best_acc",
               "train_seconds", "status", "detail")


def check_columns(wanted: dict) -> None:
    """One line for a filter on a column that :func:`describe_run` rows do not have, naming the columns."""
    for key in wanted:
        if key not in RUN_COLUMNS:
            raise RunError(f"runs have no column {key!r}{did_you_mean(key, RUN_COLUMNS)}; filter on one of: "
                           f"{', '.join(RUN_COLUMNS)}")


def matches(row: dict, wanted: dict) -> bool:
    """Whether a :func:`describe_run` row has every ``{column: value}`` of ``wanted`` (case-insensitive)."""
    return all(str(row.get(key)).lower() == str(value).lower() for key, value in wanted.items())


def _add_summary(row: dict, summary: dict) -> None:
    """The final accuracy, the whole training time (an epoch stopped inside included) and, for a run that
    stopped at --target-accuracy inside an epoch, how far it got (e.g. 0.75 of an epoch, where metrics.csv,
    which has a row per finished epoch, says 0)."""
    row["final_acc"] = summary.get("accuracy")
    if isinstance(summary.get("train_seconds"), (int, float)):
        row["train_seconds"] = summary["train_seconds"]
    target = summary.get("target")
    if isinstance(target, dict) and isinstance(target.get("epoch"), (int, float)) and target["epoch"] > row["epochs_done"]:
        row["epochs_done"] = round(target["epoch"], 2)


# ----------------------------------------------------------------------------- metrics.csv


def write_metrics(path: str | Path, rows: list[dict]) -> None:
    """Rewrite ``metrics.csv`` whole from the history (atomic, so a resumed run never duplicates rows)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in METRIC_FIELDS})
    atomic_write_text(path, buf.getvalue())


def read_metrics(path: str | Path) -> list[dict]:
    """metrics.csv's rows, numbers parsed; a file that is not what :func:`write_metrics` writes is one
    :class:`RunError` (an ``OSError`` when it cannot be opened)."""
    with open(path, newline="", encoding="utf-8") as fh:
        try:
            return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]
        except (ValueError, TypeError, csv.Error) as err:  # not UTF-8, a word where a number goes, a stray column
            raise RunError(f"{path}: damaged ({type(err).__name__}); cnnlab writes it whole again when the run "
                           "resumes, or delete it (the run's checkpoints do not need it)") from None


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def _parse(value: str):
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return float(value)
