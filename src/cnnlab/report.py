"""What a finished run shows: per-class metrics, a confusion matrix and the worst mistakes.

This module computes; ``cnnlab.plots`` only draws what it computed.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from pathlib import Path
from typing import Callable

import torch

from cnnlab import plots
from cnnlab.errors import CnnlabError, DataUnreadable, FolderGone, RunError, WriteError, first_line
from cnnlab.fileio import (FolderGuard, atomic_write_text, guarded, is_file, json_safe, make_dirs, open_if_regular,
                           set_aside, usual_fix)
from cnnlab.fileio import reason as reason_of
from cnnlab.output import handed_on, stops_taken
from cnnlab.runs import load_run_json
from cnnlab.text import display_width, pad

#: Above this many classes a summary keeps only the non-zero cells of the confusion matrix (``"confusion"`` is
#: null, ``"confusion_cells"`` lists ``[true, predicted, count]``) and confusion.png is not drawn: the whole
#: matrix of a 10,000-class folder was 10^8 numbers, a 901 MB summary.json written by a 13.8 GB process, and its
#: picture 10,000 px wide. Up to it the matrix is whole (a row per line in the file: 1,000 classes, about 2 MB).
WHOLE_CONFUSION_MAX = 1000


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(classes, classes) counts; row = true class, column = predicted class."""
    flat = labels.to(torch.int64) * num_classes + predictions.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def confusion_cells(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> list[list[int]]:
    """The non-zero cells of the confusion matrix as ``[true, predicted, count]``, row by row: memory of the
    number of items, never of classes squared."""
    flat = labels.to(torch.int64) * num_classes + predictions.to(torch.int64)
    cells, counts = torch.unique(flat, sorted=True, return_counts=True)
    return [[c // num_classes, c % num_classes, n] for c, n in zip(cells.tolist(), counts.tolist())]


def per_class_metrics(confusion: torch.Tensor, classes: list[str]) -> list[dict]:
    """Precision, recall and F1 per class, in percent, and the support (true items of the class), from the
    confusion matrix (:func:`class_metrics`)."""
    cm = confusion.to(torch.int64)
    return class_metrics(cm.diag().tolist(), cm.sum(1).tolist(), cm.sum(0).tolist(), classes)


def class_metrics(tp: list[int], support: list[int], predicted: list[int], classes: list[str]) -> list[dict]:
    """Precision, recall and F1 per class, in percent, and the support, from each class's true positives,
    true items and predictions.

    F1 is ``2 TP / (2 TP + FP + FN)``, the harmonic mean of precision and recall. A ratio with
    nothing to divide (precision of a class never predicted, recall of a class with no items, F1 of
    both) is ``None``: undefined, not 0.
    """
    return [{"class": name, "support": int(support[i]), "precision": _percent(tp[i], predicted[i]),
             "recall": _percent(tp[i], support[i]), "f1": _percent(2 * tp[i], support[i] + predicted[i])}
            for i, name in enumerate(classes)]


def _percent(part: int, whole: int) -> float | None:
    # whole numbers: the quotient is correctly rounded, the same double as 100 * part / whole in float64
    return 100 * int(part) / int(whole) if whole > 0 else None


def worst_mistakes(labels, predictions, probabilities, limit: int = 36) -> list[dict]:
    """Misclassified items, most confident first: index, true, predicted, confidence. ``probabilities``: (N,
    classes) softmax probabilities, or (N,) those of the predicted classes (all that is needed here)."""
    wrong = (predictions != labels).nonzero().flatten()
    conf = probabilities[wrong] if probabilities.dim() == 1 else probabilities[wrong, predictions[wrong]]
    order = conf.argsort(descending=True)[:limit]
    return [
        {"index": int(wrong[i]), "true": int(labels[wrong[i]]), "pred": int(predictions[wrong[i]]),
         "confidence": float(conf[i])}
        for i in order
    ]


#: Width of the per-class table's name column: at least this, at most that (longer names widen their own row).
CLASS_COLUMN_MIN, CLASS_COLUMN_MAX = 14, 40


#: The per-class table prints at most this many classes: those with the lowest F1 (a folder of 10,000 classes printed
#: 10,000 lines); summary.json holds every class.
TABLE_ROWS_MAX = 100


def format_table(rows: list[dict], most: int = TABLE_ROWS_MAX) -> str:
    """The per-class table: precision, recall, F1 (percent; "n/a" where undefined) and support; of more than
    ``most`` classes, the ``most`` with the lowest F1 (undefined first), in their order, and a line saying so."""
    def pct(v: float | None, width: int) -> str:
        return f"{v:>{width - 1}.2f}%" if v is not None else f"{'n/a':>{width}}"

    left = len(rows) - most
    if left > 0:
        worst = sorted(range(len(rows)), key=lambda i: (rows[i]["f1"] is not None, rows[i]["f1"] or 0.0, i))[:most]
        rows = [rows[i] for i in sorted(worst)]

    # names whole (a cut name can be another class's): the column fits the longest up to CLASS_COLUMN_MAX
    # columns of a terminal (a wide 中 takes two, a combining accent none), and a longer name pushes its own row right
    width = max(CLASS_COLUMN_MIN, min(CLASS_COLUMN_MAX, max((display_width(r["class"]) for r in rows), default=0)))
    lines = [f"{'class':<{width}} {'precision':>9} {'recall':>7} {'F1':>7} {'support':>7}"]
    for r in rows:
        lines.append(f"{pad(r['class'], width)} {pct(r['precision'], 9)} {pct(r['recall'], 7)} {pct(r['f1'], 7)} "
                     f"{r['support']:>7}")
    if left > 0:
        lines.append(f"(the {most} classes of the lowest F1 shown; {left:,} more in summary.json's per_class)")
    return "\n".join(lines)


def summarize(*, labels: torch.Tensor, predictions: torch.Tensor, probabilities: torch.Tensor, classes: list[str],
              loss: float, accuracy: float, split: str = "test", extra: dict | None = None) -> dict:
    """What summary.json holds: the headline, per-class precision/recall/F1, the confusion matrix (only its
    non-zero cells, ``"confusion_cells"``, above :data:`WHOLE_CONFUSION_MAX` classes), the worst mistakes (and
    ``extra``). ``probabilities``: (N, classes), or (N,) those of the predicted classes."""
    n_classes, labels, predictions = len(classes), labels.to(torch.int64), predictions.to(torch.int64)
    hits = torch.bincount(labels[labels == predictions], minlength=n_classes).tolist()
    per_class = class_metrics(hits, torch.bincount(labels, minlength=n_classes).tolist(),
                              torch.bincount(predictions, minlength=n_classes).tolist(), classes)
    whole = n_classes <= WHOLE_CONFUSION_MAX
    return {
        "split": split,
        "n": int(len(labels)),
        "loss": loss,
        "accuracy": accuracy,
        "per_class": per_class,
        "confusion": confusion_matrix(labels, predictions, n_classes).tolist() if whole else None,
        **({} if whole else {"confusion_cells": confusion_cells(labels, predictions, n_classes)}),
        "mistakes": worst_mistakes(labels, predictions, probabilities),
        **(extra or {}),
    }


#: What :func:`summary_text` puts where the matrix's rows go, until the rest is indented.
_ROWS_MARK = "\x00rows\x00"


def summary_text(summary: dict) -> str:
    """summary.json's text: strict JSON, keys sorted and indented as every JSON file cnnlab writes, except the
    confusion matrix (and its cells), a row per line: indented, a 1,000-class matrix was a million lines."""
    rows = {key: summary[key] for key in ("confusion", "confusion_cells") if isinstance(summary.get(key), list)}
    text = json.dumps(json_safe({**summary, **dict.fromkeys(rows, _ROWS_MARK)}), indent=2, sort_keys=True,
                      allow_nan=False)
    for key, value in rows.items():
        lines = ",\n    ".join(json.dumps(json_safe(row), separators=(",", ":"), allow_nan=False) for row in value)
        # a top-level key is the only thing at this indent ("\n  " then a quote): a class name cannot fake it
        text = text.replace(f"\n  {json.dumps(key)}: {json.dumps(_ROWS_MARK)}",
                            f"\n  {json.dumps(key)}: [\n    {lines}\n  ]" if value else f"\n  {json.dumps(key)}: []", 1)
    return text + "\n"


#: What training records in a run's summary.json about the run itself (not about an evaluation): a later
#: evaluation of the run keeps them (``write_report(..., keep=RUN_FACTS)``).
RUN_FACTS = ("target", "train_seconds", "parameters", "ema")


def _previous_summary(run_dir: Path, keep: tuple[str, ...] = (), log: Callable[[str], None] | None = None
                      ) -> tuple[dict, float] | None:
    """The summary.json in ``run_dir`` and its modification time (None when missing or damaged). One that is there
    but cannot be read now (an input/output error: it may be whole) is a :class:`RunError` when its ``keep`` keys
    are to be carried over (an evaluation of the run: writing over it would lose the training's figures), else
    a warning (``log``) and taken as absent (a resume's report replaces it whole)."""
    path = run_dir / "summary.json"
    try:
        written = path.stat().st_mtime
    except OSError:
        return None
    try:
        old = load_run_json(path)  # without blocking: a FIFO in its place hung 'cnnlab evaluate'
    except DataUnreadable as err:
        if keep:
            raise RunError(f"{err} (no report written: it would replace the training's own figures in it, "
                           f"{', '.join(keep)})") from None
        if log is not None:
            log(f"warning: {err}; the run's new summary.json replaces it (its figures drawn again)")
        return None
    except CnnlabError:  # damaged: taken as absent
        return None
    return (old, written) if isinstance(old, dict) else None


#: What each figure of the summary is drawn from (besides the class names and the run's context).
FIGURE_INPUTS = {"confusion.png": ("n", "confusion"), "mistakes.png": ("n", "mistakes")}
#: The figure of the run's epochs (metrics.csv, and the summary's ``target``): drawn from the history a report is
#: given, never kept from an earlier report unless its caller says it shows the same epochs (``history=None``).
CURVES = "curves.png"


def current_figures(run_dir: Path, summary: dict, previous: tuple[dict, float] | None) -> set[str]:
    """The figures in ``run_dir`` already drawn from what ``summary`` holds: the ``previous`` summary.json there
    (and its time) has the same inputs and class names, and the figure is no older than it (a figure is written
    after its summary). Evaluating a run again, or right after training, reproduces the evaluation: nothing
    needs drawing."""
    if previous is None:
        return set()
    old, written = previous
    try:
        names = [row["class"] for row in old["per_class"]]
    except (KeyError, TypeError):
        return set()
    if names != [row["class"] for row in summary["per_class"]]:
        return set()
    current = set()
    for name, keys in FIGURE_INPUTS.items():
        drawn = whole_png(run_dir / name)
        if drawn is not None and drawn.st_mtime >= written and all(old.get(k) == summary[k] for k in keys):
            current.add(name)
    return current


#: How every PNG file begins, and how a whole one ends (its IEND chunk: length 0, type, CRC).
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"\x00\x00\x00\x00IEND\xaeB`\x82"


def whole_png(path: Path) -> os.stat_result | None:
    """The ``lstat`` of ``path`` where it is a whole PNG file: a regular file (not a link, a folder, a FIFO), that
    begins as a PNG and ends with its IEND chunk; None otherwise (an emptied figure, a copy cut short, a folder in
    its place, which a report kept as "unchanged" and never drew again)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size < len(_PNG_START) + len(_PNG_END):
            return None
        fh, _ = open_if_regular(path)
    except OSError:
        return None
    if fh is None:
        return None
    try:
        with fh:
            start = fh.read(len(_PNG_START))
            fh.seek(-len(_PNG_END), os.SEEK_END)
            end = fh.read(len(_PNG_END))
    except OSError:
        return None
    return st if (start, end) == (_PNG_START, _PNG_END) else None


class IncompleteReport(WriteError):
    """Some of a report's files could not be written after others were (a disk that filled up while the figures
    were drawn): the one line names what was written, what was not, and why."""


#: How an allocation that failed reads in torch's errors (its CPU allocator's RuntimeError, a C++ bad_alloc).
_ALLOCATION_FAILED = ("can't allocate memory", "std::bad_alloc")


def not_drawn(name: str, err: Exception) -> CnnlabError:
    """The error of the figure ``name`` that was not drawn: a write's own line (a full disk, its folder moved), or
    a failure while drawing it, said as a :class:`~cnnlab.errors.WriteError` as a full disk's is (out of memory: a
    ``MemoryError`` of Pillow or numpy, an ``ENOMEM``, torch's allocator), so that the other figures are still
    drawn and a finished training whose figure could not be drawn is no failed run: its checkpoint and summary.json
    are written (it was "failed (MemoryError)", with the advice of a smaller --batch-size)."""
    if isinstance(err, CnnlabError):
        return err
    if isinstance(err, MemoryError) or getattr(err, "errno", None) == errno.ENOMEM \
            or any(words in str(err) for words in _ALLOCATION_FAILED):
        reason = f"out of memory while drawing {name}"
        return WriteError(f"{reason}; free some memory (close other programs) or raise the memory limit (ulimit -v)",
                          errno.ENOMEM, reason)
    if isinstance(err, OSError):  # a font that could not be read (too many open files, an input/output error)
        reason = f"{name} could not be drawn ({reason_of(err)})"
        return WriteError(f"{reason}; {usual_fix(err)}", err.errno, reason)
    reason = f"{name} could not be drawn ({type(err).__name__}: {first_line(err)[:200]})"
    return WriteError(f"{reason}; draw it again, and if it fails again, report it as a bug of cnnlab's", None, reason)


class Figures:
    """curves.png, confusion.png and mistakes.png, drawn in a background thread so that the line a user waits
    for is printed while they are drawn; :meth:`wait` returns once they are written (and re-raises the first
    error). Those in ``current`` are already drawn from the same inputs: they are kept (``names`` lists the
    others). A figure that cannot be written does not stop the others (``written`` lists those that were);
    ``left_out`` says which figure is not drawn at all, and why (a confusion matrix of too many classes)."""

    def __init__(self, run_dir: Path, summary: dict, *, history: list[dict], images: torch.Tensor,
                 classes: list[str], context: dict | None = None, current: set[str] = frozenset(),
                 guard: FolderGuard | None = None, own_guard: bool = False):
        context = {**(context or {})}
        #: The folder as the report began writing it (:func:`write_report`): each figure's write checks it, and one
        #: moved or deleted meanwhile stops the drawing (no figure goes into a folder made anew); ``own_guard``: the
        #: guard is released once the figures are drawn.
        self.guard, self._own_guard = guard, own_guard
        context.setdefault("run", Path(run_dir).resolve().name)
        self._error: BaseException | None = None
        self.left_out = {} if summary.get("confusion") is not None else {"confusion.png": (
            f"confusion.png not drawn: {len(classes):,} classes, more than {WHOLE_CONFUSION_MAX:,}; summary.json "
            "holds the matrix's non-zero cells (confusion_cells: true, predicted, count)")}
        # a run that met --target-accuracy before its first epoch ended has no epoch to draw, but that check's point;
        # history None: the curves.png there is left as it is (write_report)
        curves = history is not None and (bool(history) or plots.target_point(summary.get("target"), []) is not None)
        wanted = ([CURVES] if curves else []) + ["confusion.png", "mistakes.png"]
        self.names = [n for n in wanted if n not in current and n not in self.left_out]
        self.kept = sorted(set(current) - set(self.left_out))
        self.written: list[str] = []
        self.run_dir = Path(run_dir)
        # waited for with an event, not Thread.join: a join that a signal interrupts (Ctrl-C, SIGTERM) marks the
        # thread as ended while it still draws (Python 3.11's threading), and the next join returns at once
        self._done, self._stop = threading.Event(), threading.Event()  # _stop: set by stopped()
        self._began, self._beginning = False, threading.Lock()
        self._taken: KeyboardInterrupt | None = None
        self._said = False  # stopped()'s line, said once
        args = (Path(run_dir), summary, history, images, classes, context)
        self._thread = threading.Thread(target=self._draw, args=args, name="cnnlab-figures", daemon=True)
        try:
            self._thread.start()
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM (cli.common.take_sigint) while it started: raised
            self._taken = stop             # by wait(), whose caller says what was written (stopped())

    def _draw(self, run_dir, summary, history, images, classes, context) -> None:
        mistakes = summary["mistakes"]
        drawers = {
            "curves.png": lambda path: plots.plot_curves(history, path, context=context, target=summary.get("target")),
            "confusion.png": lambda path: plots.plot_confusion(summary["confusion"], classes, path, context=context),
            "mistakes.png": lambda path: plots.plot_mistakes([images[m["index"], 0] for m in mistakes], mistakes,
                                                             classes, path, context=context),
        }
        try:
            with self._beginning:  # stopped before it began: nothing is drawn
                self._began = not self._stop.is_set()
            with guarded(self.guard):
                self._draw_each(drawers, run_dir)
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread, which raises it
            self._error = err
        finally:
            if self._own_guard:
                self.guard.release()
            self._done.set()

    def _draw_each(self, drawers: dict, run_dir: Path) -> None:
        """Each figure of :attr:`names`, until a stop. One that cannot be drawn or written (a full disk, out of
        memory: :func:`not_drawn`) does not stop the others; a folder moved or deleted meanwhile stops them all."""
        for name in self.names if self._began else ():
            if self._stop.is_set():
                break
            try:
                drawers[name](run_dir / name)
                self.written.append(name)
            except Exception as err:  # noqa: BLE001 - said as the figure not drawn (its first line), not raised here
                gone = isinstance(err, FolderGone) or (self.guard is not None and self.guard.gone)
                self._error = not_drawn(name, err) if gone or self._error is None else self._error
                if gone:  # (said before a full disk's error of a figure before it: the line says where they went)
                    break

    def wait(self, say: Callable[[str], None] | None = None, why: str = "stopped; run it again") -> None:
        """Until the figures are written; the first error a figure met is raised. With ``say``, Ctrl-C, SIGTERM and
        SIGHUP meanwhile (where a handler of the process's takes them: a command's KeyboardInterrupt) stop the
        drawing instead, at once, as in :meth:`stopped`: the figure being drawn is finished, ``say`` is given the line
        of what was written and what not, then the first of them goes to its own handler (the command's exit: 130,
        143, 129). Further stops change nothing: a second Ctrl-C raised inside the first one's clean-up, and the line
        was lost (the stop a signal raised reached the main thread only when the drawing thread let it run, 5 ms at a
        time)."""
        if self._taken is not None:
            raise self._taken
        taken: list[int] = []

        def take(signum, frame) -> None:
            taken.append(signum)
            self._stop.set()

        with stops_taken(take if say is not None else None) as handlers:
            self._done.wait()
            if taken:
                self._say_stopped(say, why)
        if taken:
            handlers[taken[0]](taken[0], None)  # raises, as the signal would have
            raise KeyboardInterrupt
        if self._error is not None:
            raise self._error

    def incomplete(self, err: WriteError | str) -> IncompleteReport:
        """The one line for ``err``, a figure not written after summary.json was (or why they stopped, a text):
        what was written, what not."""
        missing = [n for n in self.names if n not in self.written]
        where = getattr(err, "moved_to", None) or self.run_dir  # a folder moved meanwhile: what it wrote went with it
        older = [n for n in missing if is_file(where / n, if_unknown=False)]
        stays = (f" (an earlier report's {', '.join(older)} {'stays' if len(older) == 1 else 'stay'} there)"
                 if older else "")
        kept = f" ({', '.join(self.kept)} unchanged)" if self.kept else ""
        return IncompleteReport(f"report incomplete: wrote {', '.join(['summary.json', *self.written])} in "
                                f"{where}{kept}, not {', '.join(missing)}{stays}: {err}",
                                None if isinstance(err, str) else err.errno)

    def stopped(self, say: Callable[[str], None], why: str = "stopped; run it again") -> None:
        """A stop (Ctrl-C, SIGTERM, SIGHUP) while the figures were drawn: the one being drawn is finished (whole, and
        named among those written), the others are not begun, and ``say`` is given the line of what was written and
        what not, ending in ``why`` (nothing when that figure was the last; said once). A second stop meanwhile
        (Ctrl-C twice) changes nothing until the line is said (:func:`stops_taken`): it raised inside the wait, and
        the line was lost."""
        with stops_taken(_held):
            with self._beginning:
                self._stop.set()
                began = self._began
            if began:
                self._done.wait()
            self._say_stopped(say, why)

    def _say_stopped(self, say: Callable[[str], None], why: str) -> None:
        if set(self.names) - set(self.written) and not self._said:
            self._said = True
            say(str(self.incomplete(why)))


def _held(signum, frame) -> None:
    """A stop taken while a command is stopping already (:meth:`Figures.stopped`): nothing more to do."""


def write_report(run_dir: str | Path, summary: dict, *, history: list[dict] | None, images: torch.Tensor,
                 classes: list[str], context: dict | None = None, keep: tuple[str, ...] = (),
                 log: Callable[[str], None] | None = None, guard: FolderGuard | None = None) -> Figures:
    """Write summary.json into ``run_dir`` now (strict JSON: a diverged loss is ``null``; :func:`summary_text`)
    and start drawing the figures; ``.wait()`` on the result before relying on them.

    ``context``: what places the figures, e.g. ``{"model": "inception", "dataset": "mnist"}``; every
    figure shows it under its title, with ``"run"`` (the run directory's name) added when missing (``"run": None``:
    the weights are no run's, the shipped ones or a file, and the figures name them instead: ``Subject.context``).
    A figure already drawn from the same inputs (:func:`current_figures`) is kept, not drawn again; so are
    the ``keep`` keys of the summary.json there (e.g. :data:`RUN_FACTS`), where ``summary`` lacks them (one that
    cannot be read now is a refusal with ``keep``, else a warning to ``log``: :func:`_previous_summary`).
    The other figures of the summary.json there (:data:`FIGURE_INPUTS`: those it does not keep, and a confusion.png
    this summary does not draw, of too many classes) are set aside the moment before the new one is renamed into
    place, and removed once it is there (:func:`cnnlab.fileio.set_aside`): stopped anywhere (SIGKILL too), the folder
    never shows one summary beside another's figures, and a summary.json that cannot be written (a full disk) or
    renamed in leaves the old report whole. So does a curves.png there
    (:data:`CURVES`): ``history`` is drawn in its place (none: an evaluation's report has no epochs), unless
    ``history`` is None, which says that the one there shows the run's epochs as they are (an evaluation into the
    run's own folder, whose metrics.csv is older than it): it is left as it is (drawn from none when missing).

    Every file of the report is written into the folder as it was when the report began (``guard``, a training's,
    or one taken here: :class:`cnnlab.fileio.FolderGuard`): moved or deleted meanwhile, the next file is not
    written (:class:`~cnnlab.errors.FolderGone`; the figures went into a folder made anew, the summary.json with the
    one moved, and the line said all of them were written in it).
    """
    run_dir = Path(run_dir)
    own_guard = guard is None
    if guard is None:
        guard = FolderGuard(make_dirs(run_dir)).take()
    try:
        return _write_report(run_dir, summary, history=history, images=images, classes=classes, context=context,
                             keep=keep, log=log, guard=guard, own_guard=own_guard)
    except BaseException as err:
        if own_guard and getattr(err, "figures", None) is None:  # no drawing thread, which releases it once done
            guard.release()
        raise


def _write_report(run_dir: Path, summary: dict, *, history, images, classes, context, keep, log, guard: FolderGuard,
                  own_guard: bool) -> Figures:
    """:func:`write_report` into ``run_dir``, its folder guarded by ``guard``."""
    if history is None and not is_file(run_dir / CURVES, if_unknown=True):
        history = []
    previous = _previous_summary(run_dir, keep, log)
    current = current_figures(run_dir, summary, previous)
    if summary.get("confusion") is None:
        current.discard("confusion.png")
    if previous is not None and keep:
        summary = {**{k: previous[0][k] for k in keep if k in previous[0]}, **summary}
    stale = [run_dir / name for name in FIGURE_INPUTS if name not in current]
    stale += [run_dir / CURVES] if history is not None else []
    # a stop (Ctrl-C, SIGTERM, SIGHUP) from here until the figures are being drawn is held, then taken by them
    # (Figures.wait raises it, and its caller says what was written): one just after the new summary.json was
    # renamed in ended the command without a word
    held: list[int] = []
    handlers: dict = {}
    figures = None
    try:
        try:
            with stops_taken(lambda signum, frame: held.append(signum)) as handlers:
                with guarded(guard):
                    atomic_write_text(run_dir / "summary.json", summary_text(summary),
                                      just_before=lambda: set_aside(stale))
                    for name in sorted(current):
                        try:  # still no older than the summary it shows, so that the next evaluation keeps it too
                            os.utime(run_dir / name)
                        except OSError:
                            current.discard(name)
                figures = Figures(run_dir, summary, history=history, images=images, classes=classes,
                                  context=context, current=current, guard=guard, own_guard=own_guard)
        except BaseException:
            if (stop := handed_on(handlers, held)) is not None:  # a stop held meanwhile, in place of the error
                raise stop from None
            raise
        figures._taken = figures._taken or handed_on(handlers, held)
        return figures
    except KeyboardInterrupt as stop:  # a stop as the held ones are let go (the drawing thread's first moment): the
        if figures is not None:        # caller still finishes the figure being drawn and says so (report_run)
            stop.figures = figures
        raise
