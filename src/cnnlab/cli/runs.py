"""``cnnlab runs``: the run folders under runs/, newest first, with what they are and how they ended."""

from __future__ import annotations

import math
import sys

from cnnlab.cli.common import add_json, path_arg
from cnnlab.errors import CnnlabError, printable, shell_quoted
from cnnlab.fileio import exists
from cnnlab.output import complain, json_text
from cnnlab.runs import NOW, describe_listed, find_runs, matches
from cnnlab.text import display_width, pad


#: The columns ``cnnlab runs`` can be narrowed by, each with an example value.
FILTERS = {"model": "resnet", "dataset": "fashion-mnist, idx (every idx: dataset, as the table shows them) or idx:DIR",
           "recipe": "best", "status": "stopped"}
STATUSES = ("running", "finished", "stopped", "failed", "damaged")
#: The most of a detail a row of the table shows, escaped (describe_run keeps at most runs.TEXT_LIMIT of it).
DETAIL_WIDTH = 500


def register(sub) -> None:
    p = sub.add_parser("runs", help="list your runs: model, dataset, recipe, accuracies, time, status",
                       description="List the run folders under --root (and the runs of 'cnnlab compare' one level "
                                   "below), newest first. final: the test accuracy of the run's final weights; best: "
                                   "the accuracy its best.pt holds (its best epoch's, or the check that met "
                                   "--target-accuracy inside an epoch), on the split named beside it (val: the validation "
                                   "split of a run trained with --val-split; test). Status: running (a process holds "
                                   "it), finished, stopped "
                                   "(resumable with 'cnnlab train --resume RUN'), failed, damaged (a file of the run is "
                                   "not what cnnlab writes there: the row says which, and what to do). Wherever a "
                                   "command takes a run folder, 'latest' names the newest of them.")
    p.add_argument("--root", default="runs", type=path_arg, help="folder that holds the runs (default: %(default)s)")
    p.add_argument("--limit", type=int, default=20,
                   help="show at most this many runs; 0: all (default: %(default)s; with --json: 0, every run, and "
                        "a --limit typed there that leaves runs out says how many on stderr)")
    for key, example in FILTERS.items():
        p.add_argument(f"--{key}", default=None, choices=STATUSES if key == "status" else None,
                       help=f"only the runs of this {key}, e.g. {example} (default: all)")
    add_json(p, "the list")
    p.set_defaults(func=cmd_runs)


def _detail_shown(row: dict) -> bool:
    """Whether a row's status is followed by its detail: a finished run's only while a process holds it (an evaluate
    writing its report: ``... now``), not its record ("reached --target-accuracy 99")."""
    return bool(row["detail"]) and (row["status"] != "finished" or row["detail"].endswith(NOW))


def _pct(value) -> str:
    try:
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:  # an int no float holds (describe_run's rows never hold one: a row built elsewhere)
        finite = False
    return f"{value:.2f}%" if finite else "-"


def _best(row: dict) -> str:
    """The best epoch's accuracy with the split it was measured on (``72.20% val``: a run with --val-split chose its
    best epoch on its validation split; ``98.10% test``); the final accuracy beside it is the test set's."""
    split = row.get("best_split")
    cut = "+" if row.get("eval_limit") else ""  # of the first eval_limit images of the split only
    return _pct(row.get("best_acc")) + (f" {_shown(split)}{cut}" if split and row.get("best_acc") is not None else "")


def _shown(value, width: int | None = None, encoding: str | None = None) -> str:
    """A cell as text, its control characters escaped (a run folder named with a newline, or a status.json
    whose status holds one, stays on its row), and what ``encoding`` cannot write escaped as stdout escapes it
    (:func:`_written`); cut to ``width`` characters with a mark, when given."""
    text = _written(printable(str(value)), encoding)
    return text if width is None or len(text) <= width else text[:width - 3] + "..."


def _written(text: str, encoding: str | None) -> str:
    """``text`` as a stdout of ``encoding`` writes it: what it cannot encode escaped (``r\\xe9seau`` on an ASCII
    stdout, :func:`cnnlab.output.escape_unencodable`), so that the table is padded by what is written."""
    if not encoding:
        return text
    try:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except (LookupError, UnicodeError):  # an encoding Python does not know, or one that cannot decode its own
        return text


def _stdout_encoding() -> str | None:
    return getattr(sys.stdout, "encoding", None)


def format_runs(rows: list[dict], encoding: str | None = None) -> str:
    """The table, for a stdout of ``encoding`` (what it cannot encode is escaped, and padded as escaped). Every
    name is whole and as a shell takes it back (it is what you copy into --resume: ``$'x\\ny'`` for a name with
    a newline, :func:`cnnlab.errors.shell_quoted`): the run column is as wide as the longest name up to 64
    characters, and a longer name pushes the rest of its own row to the right."""
    names = [_written(shell_quoted(str(r["run"])), encoding) for r in rows]
    width = min(64, max([44, *map(display_width, names)]))
    header = f"{'run':<{width}} {'model':<10} {'dataset':<14} {'recipe':<8} {'epochs':>7} {'final':>7} {'best':>12} " \
             f"{'train':>7}  status"
    lines = [header]
    for name, r in zip(names, rows):
        epochs = f"{r['epochs_done']:g}/{r['epochs'] if r['epochs'] is not None else '?'}"
        seconds = f"{r['train_seconds']:.0f}s" if r["train_seconds"] else "-"
        dataset = _shown(r["dataset"], encoding=encoding)
        dataset = dataset.split(":", 1)[0] if dataset.startswith(("idx:", "folder:")) else dataset
        recipe = _shown(r["recipe"], encoding=encoding)[:7] + ("*" if r.get("teacher") else "")
        lines.append(f"{pad(name, width)} {pad(_shown(r['model'], encoding=encoding)[:10], 10)} "
                     f"{pad(dataset[:14], 14)} {pad(recipe, 8)} "
                     f"{epochs:>7} {_pct(r['final_acc']):>7} {_best(r):>12} {seconds:>7}  "
                     f"{_shown(r['status'], 10, encoding)}"
                     + (f" ({_shown(r['detail'], DETAIL_WIDTH, encoding)})" if _detail_shown(r) else ""))
    if any(r.get("teacher") for r in rows):
        lines.append("* taught by another run's net (--teacher; its checkpoint is in the run's config.json)")
    if any(r.get("eval_limit") and r.get("best_acc") is not None for r in rows):
        lines.append("+ best of evaluations cut to the first images of the split (the run's eval_limit, set in the "
                     "Python API or a --config file; in its config.json); final is the whole test set")
    return "\n".join(lines)


def cmd_runs(args) -> int:
    if args.limit < 0:
        raise CnnlabError(f"--limit must be >= 0 (0 shows every run), got {args.limit}")
    runs = find_runs(args.root)
    if not runs and "root" in getattr(args, "typed", {}) and not exists(args.root):  # said "no runs ... yet"
        raise CnnlabError(f"--root {args.root}: no such folder; check the path (runs are written under runs/ "
                          "unless a run was given --out)")
    wanted = {key: getattr(args, key) for key in FILTERS if getattr(args, key) is not None}
    # a script reading --json gets every run unless it typed a --limit (the 20 of the table cut it without a word)
    limit = args.limit if not args.json or "limit" in getattr(args, "typed", {}) else 0
    rows, total, described = _rows(runs, wanted, limit, rescan=lambda: find_runs(args.root))
    if args.json:
        print(json_text(rows, indent=2))
        if len(rows) < total:  # stdout is the JSON: the note goes to stderr
            complain(f"... and {total - len(rows)} older left out of the JSON (--limit 0 shows all)")
    elif not rows:
        which = " ".join(f"--{k} {v}" for k, v in wanted.items())
        print(f"no runs under {args.root}/ match {which}{_values_there(described, wanted)}" if wanted else
              f"no runs under {args.root}/ yet; train one with 'cnnlab train'")
    else:
        print(format_runs(rows, _stdout_encoding()))
        if len(rows) < total:
            print(f"... and {total - len(rows)} older (--limit 0 shows all)")
    return 0


def _values_there(rows: list[dict], wanted: dict) -> str:
    """What the runs there (their rows, all of them) have in the filtered columns (a misspelt model matches
    nothing, and says so): empty when there are no runs."""
    if not rows:
        return ""

    def values(key: str) -> str:
        seen = sorted({_shown(row.get(key) if row.get(key) is not None else "?") for row in rows})
        return ", ".join(seen[:10]) + (f" and {len(seen) - 10} more" if len(seen) > 10 else "")

    return "; the runs there have " + "; ".join(f"{key} {values(key)}" for key in wanted)


def _rows(runs: list, wanted: dict, limit: int, rescan=None) -> tuple[list[dict], int, list[dict]]:
    """The rows to show (newest first, at most ``limit``; 0: all), how many runs match in all, and every run's
    row read for the filter (empty without one: then only the runs shown are read). ``rescan``: the search for runs
    again, for a folder renamed while it was read (``runs.describe_listed``)."""
    if not wanted:
        read = runs[:limit] if limit else runs
        rows = describe_listed(read, rescan if not limit or len(read) == len(runs) else None)
        return rows, len(runs) - (len(read) - len(rows)), []  # less those gone while they were read
    described = describe_listed(runs, rescan)
    rows = [row for row in described if matches(row, wanted)]
    return (rows[:limit] if limit else rows), len(rows), described
