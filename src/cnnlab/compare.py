"""Train every (model, seed) pair under identical settings and compare them across seeds.

Runs live in ``<out>/<model>-seed<k>-<config hash>/``: a finished run with the same config is
reused, an interrupted one is resumed, so re-running ``compare`` only trains what is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.checkpoint import TrainState, load_checkpoint
from cnnlab.config import ADDED_FIELDS, ADJUSTABLE_FIELDS, PROCESS_FIELDS, TrainConfig, valid_threads
from cnnlab.data import load_dataset
from cnnlab.data.folder import check_not_read
from cnnlab.dataset_names import canonical_dataset_name, dataset_kind, directory_of
from cnnlab.engine import train
from cnnlab.errors import (CnnlabError, DataUnreadable, FolderGone, Interrupted, RunError, did_you_mean, printable,
                           shell_quoted, short_repr)
from cnnlab.evaluation import evaluate_run
from cnnlab.fileio import FolderGuard, atomic_write_text, guarded, is_dir, is_file, kind_of, resolved
from cnnlab.models import build_model, count_parameters, list_models
from cnnlab.output import complain
from cnnlab.plots import plot_comparison
from cnnlab.runs import (STATUS_FILE, RunLock, check_output_folder, diverged, load_run_json, read_metrics,
                         read_run_json, removed_if_unused, run_config, run_problem, write_metrics)
from cnnlab.text import plural
from cnnlab.tta import parse_tta


def forward_flops(model: torch.nn.Module, in_channels: int, image_size: int) -> int:
    """FLOPs of one image's forward pass, counted by ``torch.utils.flop_counter`` (a multiply-add = 2)."""
    model = model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, in_channels, image_size, image_size, device=next(model.parameters()).device))
    return int(counter.get_total_flops())


#: The fields of config.ADDED_FIELDS added before compare left added fields out of its folders' names: the folders
#: made since carry their values in the name, so they stay in the hash. Frozen: no field joins it.
HASHED_ADDED_FIELDS = ("bias_decay", "warmup_epochs", "ema")
#: Fields added after compare's folders got their names: at the value that reproduces the runs made before
#: (config.ADDED_FIELDS) they are left out of the hash, so that a compare finds (and reuses) the folders it made then.
#: Made from ADDED_FIELDS: a field added there (docs/architecture.md, "A new training option") is left out too.
KEY_NEUTRAL = {k: v for k, v in ADDED_FIELDS.items() if k not in HASHED_ADDED_FIELDS}


#: ``compare(..., teachers=AUTO_TEACHERS)``: train (or reuse) the teachers first, in the compare's default folder.
AUTO_TEACHERS = "auto"


def key_fields(cfg: TrainConfig) -> dict:
    """The settings that define a run (what :func:`config_key` hashes): not the device, the threads or the
    allocator, nor an added field at the value that reproduces the runs made before it."""
    d = cfg.to_dict()
    for k in (*PROCESS_FIELDS, *ADJUSTABLE_FIELDS):
        d.pop(k, None)
    for k, neutral in KEY_NEUTRAL.items():
        if d.get(k) == neutral:
            del d[k]
    return d


def config_key(cfg: TrainConfig) -> str:
    """A short hash of what makes runs comparable (not the device, the threads or the allocator)."""
    return hashlib.sha256(json.dumps(key_fields(cfg), sort_keys=True).encode()).hexdigest()[:8]


def default_out(dataset: str, recipe: str) -> Path:
    """Where ``cnnlab compare`` puts its runs and comparison unless ``--out`` says otherwise:
    ``runs/compare-<dataset>-<recipe>``, where an ``idx:``/``folder:`` dataset is named by its folder and a short
    hash of its absolute path (``compare-idx-small-1a2b3c4d-lecture``): two such datasets shared
    ``compare-idx-lecture``, each compare replacing the other's comparison."""
    return Path("runs") / f"compare-{dataset_label(dataset)}-{recipe}"


def dataset_label(dataset: str) -> str:
    """A catalog name as it is; ``KIND:DIR`` as ``KIND-<the folder's name>-<8 hex digits of its absolute path>``,
    the name cut to 32 characters of letters, digits, ``.``, ``_`` and ``-`` (what a folder name can hold)."""
    if directory_of(dataset) is None:
        return dataset_kind(dataset)
    canonical = canonical_dataset_name(dataset)
    kind, folder = directory_of(canonical)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", folder.name).strip("._-")[:32] or "data"
    return f"{kind}-{name}-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


def run_folder(out: Path, cfg: TrainConfig) -> Path:
    """The folder of one (model, seed) run of a compare: reused by any later compare of the same config."""
    return Path(out) / f"{cfg.model}-seed{cfg.seed}-{config_key(cfg)}"


def finished_run(run_dir: Path, cfg: TrainConfig) -> bool:
    """Whether ``run_dir`` holds a finished run of ``cfg`` (the same config hash, every epoch, a summary). Its
    files are read without blocking (a FIFO in the place of one is no finished run). A file that is there but
    cannot be read now (an input/output error: it may be whole) tells neither: its one line, a
    :class:`~cnnlab.errors.DataUnreadable` (a finished run was "resumed", its status.json written again)."""
    try:
        same = config_key(TrainConfig.from_dict(run_config(run_dir))) == config_key(cfg)
        rows = read_metrics(run_dir / "metrics.csv")
        summary = load_run_json(run_dir / "summary.json")
    except DataUnreadable:
        raise
    except (CnnlabError, OSError, ValueError, KeyError, TypeError):
        return False  # damaged or missing: the run is resumed, which writes its summary again
    return same and len(rows) >= cfg.epochs and isinstance(summary, dict) and _number(summary.get("accuracy"))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@contextlib.contextmanager
def _left_as_it_is():
    """Around compare's reads of a run's files: one that is there but cannot be read now (an input/output error,
    memory short: :class:`~cnnlab.errors.DataUnreadable`) is one line naming it and the fix its error takes, and the
    compare stops there; never taken for damage (metrics.csv written again over a good file) nor for an unfinished
    run (a finished one "resumed", its status.json written again)."""
    try:
        yield
    except DataUnreadable as err:
        raise DataUnreadable(f"{err} (compare stopped: nothing of that run was rewritten)", err.path,
                             err.cause) from None


def _mean_std(values: list[float | None]) -> tuple[float, float] | None:
    """Mean and sample std over seeds; None when a seed lacks the figure."""
    if not values or not all(map(_number, values)):
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


#: The most seeds a compare takes: each is a run per model (and a folder checked before any trains); --seeds
#: 100000000 spent minutes silent before its first run.
MAX_SEEDS = 1000


def compare(models: list[str], seeds: int, base: TrainConfig, out: str | Path = "runs/compare", *,
            quiet: bool = False, log=print, tta: str | None = None, teachers: str | Path | None = None,
            teacher_model: str | None = None) -> dict:
    """Train/reuse every (model, seed) run, then write and return the comparison.

    ``base`` may leave recipe fields at None: each model then gets its own recipe values (a recipe can
    differ per model and dataset, see cnnlab.config.RECIPE_VARIANTS). ``tta``: views (:mod:`cnnlab.tta`) whose
    test accuracy is added as a column of its own beside the final accuracy, never in its place. ``teachers``:
    the folder of a compare of the same settings without it; each run distils from that compare's run of its
    model and seed (:mod:`cnnlab.distill`). ``"auto"``: that compare in its default folder, made (or reused) first.
    ``teacher_model``: the teachers are that model's runs there (of its own recipe values), not each run's model."""
    views = parse_tta(tta)
    unknown = [m for m in [*models, *([teacher_model] if teacher_model else [])] if m not in list_models()]
    if unknown:
        hint = did_you_mean(unknown[0], list_models()) if len(unknown) == 1 else ""
        raise CnnlabError(f"unknown model(s) {', '.join(map(short_repr, unknown))}{hint}; choose from: "
                          f"{', '.join(list_models())}")
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        raise CnnlabError(f"--models names {', '.join(twice)} twice; name each model once (--seeds sets the runs per model)")
    if not 1 <= seeds <= MAX_SEEDS:
        raise CnnlabError(f"--seeds must be 1 to {MAX_SEEDS:,} (seeds 0..N-1 per model), got {seeds:,}")
    out, auto = Path(out), teachers == AUTO_TEACHERS
    # a compare's runs and table in a run's folder would hide them from 'cnnlab runs'
    check_output_folder(out, None, writes=("comparison.md", "comparison.png"))
    check_not_read(base.dataset, out, f"--out {out}")  # nor inside its folder: dataset, read as a class
    teachers = default_out(base.dataset, base.recipe) if auto else teachers
    if teachers is not None and resolved(out) == resolved(teachers):
        raise CnnlabError(f"--out {out} is the teachers' folder: its comparison.md would be replaced by the distilled "
                          "one; give the distilled runs another --out")
    # a folder this compare makes is removed again when it fails before any run is in it (a full disk), as train's
    with removed_if_unused(out):
        data = load_dataset(base.dataset, data_dir=base.data_dir, log=log)
        warned: set[str] = set()  # the runs' warnings said so far: each once per compare
        if auto:
            _train_teachers([teacher_model] if teacher_model else models, seeds, base, teachers, data, quiet, log, warned)
        configs = {name: replace(base, model=name).validate() for name in models}
        teacher_of = lambda name, seed: replace(base, model=teacher_model or name, seed=seed).validate()  # noqa: E731
        planned = {name: [_taught(replace(configs[name], seed=seed), teachers, teacher_of(name, seed))
                          for seed in range(seeds)] for name in models}
        _check_run_folders(out, [cfg for cfgs in planned.values() for cfg in cfgs], data)  # before any run trains
        results = {}
        for name, cfgs in planned.items():
            runs = [_run_one(cfg, out, data, quiet, log, warned) for cfg in cfgs]
            if teachers is not None:  # for the table's settings line
                configs[name] = replace(configs[name], teacher=f"{teachers}" + (f" ({teacher_model}'s)" if teacher_model else ""))
            if views is not None:
                for r in runs:
                    r["tta"] = evaluate_run(r["dir"], dataset=data, device=base.device, tta=views.spec)[0].accuracy
                    log(f"  {printable(Path(r['dir']).name)}: test accuracy with --tta {views.spec} {r['tta']:.2f}%")
            results[name] = _model_results(name, runs, data, "val_acc" if base.val_split else "test_acc")
        table = format_comparison(results, configs, seeds, data.name, tta=views.spec if views else None)
        _write_comparison(out, table, lambda: _plot(results, seeds, base, data, out, teachers))
        return {"table": table, "results": results, "out": out}


def _write_comparison(out: Path, table: str, plot: Callable[[], None]) -> None:
    """comparison.md, then comparison.png (``plot``), into ``out`` as it was when its runs were done
    (:class:`cnnlab.fileio.FolderGuard`): moved or deleted meanwhile, nothing more is written (comparison.png went
    into a folder made anew at its old path, comparison.md with the one moved), and the line says so."""
    guard = FolderGuard(out).take()
    if guard.identity is None:  # its runs were trained in it: gone since (comparison.md alone went into a new one)
        raise guard.refusal(None)
    try:
        with guarded(guard):
            atomic_write_text(out / "comparison.md", table)
            try:
                plot()
            except FolderGone as err:
                where = err.moved_to or out
                raise FolderGone(f"results incomplete: wrote {where / 'comparison.md'}, not comparison.png: {err}",
                                 err.moved_to) from None
            except KeyboardInterrupt:  # a table beside no figure, or the last compare's: said, not left silent
                complain(printable(f"cnnlab: warning: results incomplete: wrote {out / 'comparison.md'}, not "
                                   "comparison.png: stopped; the same compare again writes both (its runs are reused)"))
                raise
    finally:
        guard.release()


def _plot(results: dict, seeds: int, base: TrainConfig, data, out: Path, teachers) -> None:
    """comparison.png: each model's curve, mean and std over seeds per epoch; the names in its title escaped (a
    folder's name that is no UTF-8 shows ``\\udcff`` there, as in comparison.md)."""
    series = {}
    for name, r in results.items():
        spread = [_spread(list(c)) for c in zip(*r["curve"]["per_seed"])]
        series[name] = {"epochs": r["curve"]["epochs"], "n": seeds, "mean": [m for m, _ in spread],
                        "std": [s for _, s in spread]}
    taught = f", taught by {Path(teachers).name}" if teachers else ""
    plot_comparison(series, out / "comparison.png",
                    metric=("validation" if base.val_split else "test") + " accuracy (%)",
                    title=printable(f"{data.name}, recipe {base.recipe}{taught}"),
                    context={"dataset": printable(data.name), "folder": printable(out.name)})  # many runs: not "run"


def _spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample std of one epoch over seeds; NaN (a gap in the curve) where a seed lacks it."""
    if not all(_number(v) and math.isfinite(v) for v in values):
        return math.nan, math.nan
    return _mean_std(values) or (math.nan, math.nan)


def _train_teachers(models: list[str], seeds: int, base: TrainConfig, teachers: Path, data, quiet: bool, log,
                    warned: set[str]) -> None:
    """``--teachers auto``: every (model, seed) run of ``base`` in ``teachers``, trained or reused; their runs, not
    their table (that folder's comparison.md stays as it was)."""
    log(f"the teachers: runs of the same settings in {shell_quoted(str(teachers))}")
    cfgs = [replace(base, model=name, seed=seed).validate() for name in models for seed in range(seeds)]
    _check_run_folders(Path(teachers), cfgs, data)
    for cfg in cfgs:
        _run_one(cfg, Path(teachers), data, quiet, log, warned)
    log("the taught runs:")


def _taught(cfg: TrainConfig, teachers: str | Path | None, teacher: TrainConfig) -> TrainConfig:
    """``cfg`` with its teacher: the run of ``teacher``'s settings (same seed; its model) in the compare folder
    ``teachers``."""
    if teachers is None:
        return cfg
    taught_by = run_folder(Path(teachers), teacher)
    if not finished_run(taught_by, teacher):
        if is_dir(taught_by, if_unknown=False) and (why := diverged(taught_by)) is not None:  # made again, it diverges again
            raise RunError(f"--teachers {shell_quoted(str(teachers))}: its {teacher.model} seed {teacher.seed} run of these "
                           f"settings ({taught_by.name}) failed, {why} (its status.json), so it cannot teach, and "
                           "making it again diverges again; compare with settings that train (e.g. a lower --lr)")
        raise CnnlabError(f"--teachers {teachers}: no finished {teacher.model} seed {teacher.seed} run of these settings "
                          f"there ({taught_by.name}); make the teachers first: the same compare without --teachers, "
                          f"with --out {shell_quoted(str(teachers))} (or --teachers auto)")
    return replace(cfg, teacher=str(resolved(taught_by / "last.pt")))


def _refuse_other_data(run_dir: Path, data) -> None:
    """A run folder of this compare trained on another version of the dataset (an image folder that changed
    since): reused, its old figures would stand in the new table as if measured on today's data."""
    # none yet, or damaged: its own checks; one that cannot be read now raises (never taken for none)
    saved = (read_run_json(run_dir / "config.json", unreadable_raises=True) or {}).get("data")
    changed = data.changed_since(saved) if isinstance(saved, dict) else []
    if changed:
        sizes = f" ({saved.get('train_size')} train / {saved.get('test_size')} test images then, " \
                f"{len(data.train_labels)} / {len(data.test_labels)} now)" \
            if {"train_size", "test_size"} & set(changed) else ""
        raise CnnlabError(f"{run_dir}: trained on another version of {data.name} than it holds now "
                          f"({data.describe_changes(saved)}{sizes}); compare again with another --out, or move that run "
                          "away to train it anew")


#: The files of a run that compare reads, and the training it runs writes.
_RUN_FILES = ("config.json", "metrics.csv", "summary.json", STATUS_FILE)


def _refuse_special_files(run_dir: Path) -> None:
    """A FIFO, device or folder where a run's file goes: reading it would block, and a resume cannot write it."""
    for name in _RUN_FILES:
        kind = kind_of(run_dir / name)
        if kind not in ("nothing", "a file"):
            raise RunError(f"{run_dir / name}: is {kind}, not the file cnnlab writes there; remove it, and run the "
                           "same compare again (it resumes that run, which writes its files again)")


def _refuse_other_settings(run_dir: Path, cfg: TrainConfig) -> None:
    """A run folder of this compare whose config.json defines another run than the compare asks for (``cnnlab train
    --resume RUN --epochs 3`` extended it; the file was edited): reused, or resumed with its own settings, it stood
    in the table as a run of the compare's (a 3-epoch run averaged with 2-epoch ones under "2 epochs", its longer
    curve beside theirs)."""
    try:
        saved = TrainConfig.from_dict(run_config(run_dir))
    except DataUnreadable:  # there, and may be whole: said (_left_as_it_is), never taken for none
        raise
    except (CnnlabError, OSError, ValueError, KeyError, TypeError):
        return  # none yet, or damaged: the resume reads the run's checkpoint (or the run is trained anew)
    theirs, ours = key_fields(saved), key_fields(cfg)
    differ = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
    if not differ:
        return
    shown = "; ".join(f"{k} {short_repr(theirs.get(k))} where this compare has {short_repr(ours.get(k))}"
                      for k in differ[:3]) \
        + (f"; and {len(differ) - 3} more" if len(differ) > 3 else "")
    raise RunError(f"{run_dir}: holds a run of other settings than this compare's ({shown}: changed since the compare "
                   "made it, e.g. by 'cnnlab train --resume RUN --epochs N'); move that run out of the folder (or "
                   "delete it) to train it anew, or compare again with another --out")


def _check_run_folders(out: Path, cfgs: list[TrainConfig], data) -> None:
    """Every run folder of the compare, before any run trains: a folder that cannot be reused or resumed as one of
    this compare's runs is refused now, not after the runs before it have trained."""
    for cfg in cfgs:
        run_dir = run_folder(out, cfg)
        _refuse_special_files(run_dir)
        with _left_as_it_is():
            _refuse_other_data(run_dir, data)
            _refuse_other_settings(run_dir, cfg)


def _said_once(cfg: TrainConfig, warned: set[str], log):
    """The log a compare's run trains with: its warnings (``warning: ...``) reach the user, each once per compare
    and named by the run that gave it first (the same warning from a later run, as a setting all the runs share
    gives, is not said again); its other lines stay in its folder."""
    def run_log(msg) -> None:
        text = str(msg).strip()
        if text.startswith("warning:") and text not in warned:
            warned.add(text)
            log(f"{cfg.model} seed {cfg.seed}: {text}")
    return run_log


def _process_given(cfg: TrainConfig) -> dict:
    """The compare's ``--device`` and ``--threads`` for a run it resumes, where they are not the defaults (taken
    for given: a resume goes on at its run's own otherwise, as ``cnnlab train --resume`` does)."""
    return {k: getattr(cfg, k) for k in ("device", "threads") if getattr(cfg, k) != getattr(TrainConfig(), k)}


def _run_one(cfg: TrainConfig, out: Path, data, quiet: bool, log, warned: set[str]) -> dict:
    """One (model, seed) run: reused when finished with the same config, resumed when interrupted; one line
    says which and how it went (the run's own lines are in its folder; its warnings on the console, once)."""
    run_dir = run_folder(out, cfg)
    _check_run_folders(out, [cfg], data)
    with _left_as_it_is():  # a file that cannot be read now: one line, the run neither resumed nor rewritten
        finished = finished_run(run_dir, cfg)
        if finished and (why := run_problem(run_dir)):  # its figures, but not its weights
            raise RunError(f"{run_dir} cannot be reused: {why}; or move that run out of the folder to train it anew")
        resume = not finished and is_file(run_dir / "last.pt")
    how, stopped = "reused", None
    if not finished:
        how = "resumed" if resume else "trained"
        try:
            train(cfg, out=None if resume else run_dir, resume=run_dir if resume else None, quiet=quiet,
                  log=_said_once(cfg, warned, log), dataset=data, changes=_process_given(cfg) if resume else None)
        except Interrupted as err:  # the run's own hint resumes one run; the compare resumes all of them
            if not _finished_after_stop(run_dir, cfg):
                raise Interrupted(f"{err}; or run the same compare again: it keeps the finished runs and resumes "
                                  "this one", err.exit_code) from None
            stopped = err  # a signal after its last step: the run wrote its result, the compare stops after it
    with _left_as_it_is():
        result = _run_result(run_dir, cfg, how, log)
    if stopped is not None:
        raise Interrupted(f"{stopped}; the compare stopped before its next run: run the same compare again to go on "
                          "(it reuses the finished runs)", stopped.exit_code) from None
    return result


def _finished_after_stop(run_dir: Path, cfg: TrainConfig) -> bool:
    """Whether a run whose training was interrupted had finished (a signal after its last step); one whose files
    cannot be read now is taken for unfinished: the compare's stop is said, and its next run resumes it."""
    try:
        return finished_run(run_dir, cfg)
    except DataUnreadable:
        return False


def _run_result(run_dir: Path, cfg: TrainConfig, how: str, log) -> dict:
    """A finished run's line (``trained``, ``resumed`` or ``reused``, its final accuracy and time) and its figures
    for the comparison (final accuracy, epochs' rows, threads)."""
    summary = load_run_json(run_dir / "summary.json")  # the training just wrote it, or the run was reused for it
    if not isinstance(summary, dict) or not _number(summary.get("accuracy")):
        raise RunError(f"{run_dir / 'summary.json'}: holds no final accuracy; move that run away to train it anew, "
                       "or compare again with another --out")
    rows = _epochs(run_dir, "val_acc" if cfg.val_split else "test_acc", log)
    seconds = _total([row.get("seconds") for row in rows])
    took = f"{seconds:.0f} s of training" if seconds is not None else "training time unknown"
    log(f"{cfg.model} seed {cfg.seed}: {how}, final {summary['accuracy']:.2f}%, {took} "
        f"({shell_quoted(str(run_dir))})")  # the folder as a shell takes it back (a newline in --out: one line)
    return {"dir": str(run_dir), "rows": rows, "final": summary["accuracy"], "threads": _trained_threads(run_dir)}


def _trained_threads(run_dir: Path) -> int | None:
    """The CPU threads the run trained with: what it recorded it ran at (config.json's ``cpu_threads``, the last
    part's), else its ``threads`` setting (0: torch's default, of the process that trained it); None if unknown."""
    ran = (read_run_json(run_dir / "config.json", unreadable_raises=True) or {}).get("cpu_threads")
    if isinstance(ran, list) and ran and valid_threads(ran[-1]):
        return ran[-1]
    try:
        threads = run_config(run_dir).get("threads")
    except DataUnreadable:
        raise
    except (CnnlabError, OSError):
        return None
    return threads if _number(threads) else None


#: The columns of metrics.csv that the comparison is made of (besides the accuracy chosen on).
_TABLE_COLUMNS = ("epoch", "seconds", "images_per_s")


def _lacking(rows: list[dict], key: str) -> str | None:
    """What the comparison needs that ``rows`` lack (a blank cell: a figure cnnlab writes for every epoch)."""
    blank = sorted({col for row in rows for col in (*_TABLE_COLUMNS, key) if not _number(row.get(col))})
    return f"blank where the comparison needs {', '.join(blank)}" if blank else ("without epochs" if not rows else None)


def _epochs(run_dir: Path, key: str, log) -> list[dict]:
    """The run's epochs for the comparison: metrics.csv, or, where it is missing, damaged or blank where the
    comparison needs a figure, the history in last.pt, which it is written from. metrics.csv is then written
    again from that history (what the run's own training writes), so that the run's folder is whole again."""
    path = run_dir / "metrics.csv"
    try:
        rows = read_metrics(path)
        why = _lacking(rows, key)
    except FileNotFoundError:
        rows, why = None, "missing"
    except DataUnreadable:  # there, and may be whole: never "damaged", never written again (_left_as_it_is)
        raise
    except (OSError, CnnlabError):
        rows, why = None, "damaged"
    if why is None:
        return rows
    try:
        history = TrainState.from_checkpoint(load_checkpoint(run_dir / "last.pt")).history
    except (CnnlabError, KeyError, TypeError, ValueError) as err:
        if rows is not None:  # blanks, and nothing to fill them from: the comparison shows '-' for what it lacks
            return rows
        raise RunError(f"{path}: {why}, and the run's last.pt cannot give its epochs instead ({err}); move that "
                       "run away to train it anew, or compare again with another --out") from None
    if rows is not None and _lacking(history, key) is not None:
        return rows  # the history lacks it too (a run of an older cnnlab): '-' in the comparison
    with RunLock(run_dir, busy="wait for it to finish, then run the same compare again", task="compare"):
        write_metrics(path, history)
    log(f"  {printable(run_dir.name)}: metrics.csv {why}: written again from last.pt's history")
    return history


def _total(values: list) -> float | None:
    """The sum of ``values``; None when one of them is not a number (a blank cell)."""
    return sum(values) if values and all(map(_number, values)) else None


def _best(values: list) -> float | None:
    numbers = [v for v in values if _number(v)]
    return max(numbers) if numbers else None


def _rate(rows: list[dict]) -> float | None:
    """A run's training images per second: all its epochs' images over all their seconds (each epoch's images are
    its rate times its seconds). The mean of the epochs' rates weighed a 0.6-s epoch as much as a 10-s one: 877
    img/s for a run that trained 2,048 images in 11.2 s (184). None when an epoch lacks a figure."""
    seconds, rates = [row.get("seconds") for row in rows], [row.get("images_per_s") for row in rows]
    total = _total(seconds)
    if not total or not all(map(_number, rates)):
        return None
    return sum(rate * s for rate, s in zip(rates, seconds)) / total


def _model_results(name: str, runs: list[dict], data, key: str) -> dict:
    """A model's row of the comparison. A figure some run lacks (a blank cell of an old run, which its last.pt
    cannot fill) is None, shown as '-', and NaN in the curve (as are the epochs past a shorter run's end)."""
    with torch.device("meta"):  # counted, not run: no weights drawn (nor memory taken)
        model, _ = build_model(name, data.info())
    longest = max((r["rows"] for r in runs), key=len)
    return {
        "parameters": count_parameters(model),
        "flops": forward_flops(model, data.in_channels, data.image_size),
        "final": _mean_std([r["final"] for r in runs]),
        "best": _mean_std([_best([row.get(key) for row in r["rows"]]) for r in runs]),
        "best_split": "val" if key == "val_acc" else "test",  # the split "best" was measured on (final: test)
        "train_seconds": _mean_std([_total([row.get("seconds") for row in r["rows"]]) for r in runs]),
        "images_per_s": _mean_std([_rate(r["rows"]) for r in runs]),
        "curve": {
            "epochs": [row.get("epoch") if _number(row.get("epoch")) else i + 1 for i, row in enumerate(longest)],
            "per_seed": [[row.get(key) if _number(row.get(key)) else math.nan for row in r["rows"]]
                         + [math.nan] * (len(longest) - len(r["rows"])) for r in runs],
        },
        "runs": [r["dir"] for r in runs],
        "threads": [r.get("threads") for r in runs],
        **({"tta": _mean_std([r["tta"] for r in runs])} if "tta" in runs[0] else {}),
    }


def describe_settings(cfg: TrainConfig) -> str:
    """The settings of a resolved config that decide its accuracy, in one line."""
    text = (f"{plural(cfg.epochs, 'epoch')}, batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr:g}"
            + (f" momentum {cfg.momentum:g}" if cfg.optimizer in ("sgd", "nesterov") else "")
            + (f", weight decay {cfg.weight_decay:g}" + ("" if cfg.bias_decay else " (not on biases)")
               if cfg.weight_decay else "")
            + f", schedule {cfg.schedule}" + (f" (warm-up {cfg.warmup_epochs:g} epochs)" if cfg.warmup_epochs else "")
            + f", augment {cfg.augment}"
            + (f" (not in the last {plural(cfg.clean_epochs, 'epoch')})" if cfg.clean_epochs and cfg.augment != "none"
               else "")
            + (f", label smoothing {cfg.label_smoothing:g}" if cfg.label_smoothing else "")
            + (f", EMA {cfg.ema:g}" if cfg.ema else "") + f", precision {cfg.precision}"
            + (f", distilled from the runs in {cfg.teacher} (weight {cfg.distill:g}, temperature "
               f"{cfg.distill_temperature:g})" if cfg.teacher else ""))
    return text


def format_comparison(results: dict, configs: dict[str, TrainConfig], seeds: int, dataset: str,
                      tta: str | None = None) -> str:
    def pm(ms, fmt="{:.2f}"):  # one seed has no spread to show (its std of 0 would claim one); None: lacking
        if ms is None:
            return "-"
        return f"{fmt.format(ms[0])} ± {fmt.format(ms[1])}" if seeds > 1 else fmt.format(ms[0])

    first = next(iter(configs.values()))
    # names escaped as cnnlab's messages escape them: a byte of a folder's name that is no UTF-8 (\udcff), a
    # newline; comparison.md is UTF-8, which such a name is not
    settings = {name: printable(describe_settings(cfg)) for name, cfg in configs.items()}
    if len(set(settings.values())) == 1:
        recipe = [f"Recipe `{first.recipe}`: {settings[next(iter(settings))]}."]
    else:
        recipe = [f"Recipe `{first.recipe}`, per model:", ""] + [f"- {name}: {text}" for name, text in settings.items()]
    best = "best val acc" if first.val_split else "best acc"
    lines = [
        f"# {printable(dataset)}: {', '.join(results)} over {plural(seeds, 'seed')}",
        "",
        *recipe,
        "",
        f"torch {torch.__version__}, {threads_text(results)}. {_accuracies_text(first, seeds)}"
        + (f" TTA: the test accuracy of the final weights with test-time augmentation (`--tta {tta}`: softmax "
           "averaged over fixed views of each image), beside the final accuracy, not in its place." if tta else "")
        + " train img/s: each run's training images over its training seconds.",
        "",
        f"| model | params | forward FLOPs/image | final acc | {best} | " + ("TTA | " if tta else "")
        + "train s | train img/s |",
        "|---|---:|---:|---:|---:|" + ("---:|" if tta else "") + "---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['parameters']:,} | {r['flops'] / 1e6:.2f} M | {pm(r['final'])} | {pm(r['best'])} | "
            + (f"{pm(r['tta'])} | " if tta else "")
            + f"{pm(r['train_seconds'], '{:.0f}')} | {pm(r['images_per_s'], '{:,.0f}')} |"
        )
    return "\n".join(lines) + "\n"


def _accuracies_text(cfg: TrainConfig, seeds: int) -> str:
    """What the table's accuracies are, each named by the split it was measured on: the final one on the test set,
    the best epoch's on the validation split where the runs held one out (which chose it), else on the test set."""
    spread = "(mean ± sample std over seeds)" if seeds > 1 else "(one seed: no spread to show)"
    final = "of the final epoch (of the EMA weights where EMA is on)"
    if not cfg.val_split:
        return f"Accuracies are test accuracy in % {spread} {final}; best = best epoch."
    return (f"Accuracies in % {spread}: final acc is the test accuracy {final}; best val acc is the best epoch's "
            f"accuracy on the validation split ({cfg.val_split * 100:g}% of the training images, held out), not on the "
            "test set.")


def threads_text(results: dict) -> str:
    """The CPU threads the runs trained with, from their config.json (a reused run's, not this process's: the
    timings are the runs'), for the table's header: ``1 CPU thread``, or per model where the runs differ."""
    def shown(value) -> str:  # 0: torch's default, which a run keeps from the process that trains it
        return "?" if value is None else str(value) if value else f"{torch.get_num_threads()} (torch's default)"

    per_model = {name: list(dict.fromkeys(r.get("threads") or [None])) for name, r in results.items()}
    values = {v for vs in per_model.values() for v in vs}
    if len(values) == 1:
        value = next(iter(values))
        if value is None:
            return "CPU threads unknown (not in the runs' config.json)"
        count = value or torch.get_num_threads()
        return f"{plural(count, 'CPU thread')}" + ("" if value else " (torch's default)") + " in training"
    return "CPU threads in training: " + ", ".join(f"{name} {'/'.join(map(shown, vs))}"
                                                   for name, vs in per_model.items())
