"""``cnnlab train`` and ``cnnlab compare``: one run, or every (model, seed) pair under the same recipe."""

# The training library (cnnlab.engine, cnnlab.compare, cnnlab.models) imports torch (~1.3 s): it is
# imported inside the command functions, so that parsing, --help and argument errors answer without it.

from __future__ import annotations

import argparse
import shutil
import textwrap
from dataclasses import fields
from pathlib import Path

from cnnlab.cli.common import (
    DEFAULTS,
    RawDescriptionHelpFormatter,
    add_data_args,
    add_device,
    add_eval_batch_size,
    add_threads,
    given_flags,
    model_arg,
    path_arg,
    plural,
    refuse_typed,
    says_notes,
    take_sigint,
)
from cnnlab.config import (
    ADJUSTABLE_FIELDS,
    AUGMENT_OPS,
    LABEL_MIXING_OPS,
    OPTIMIZERS,
    PRECISIONS,
    PROCESS_FIELDS,
    RECIPE_FIELDS,
    RECIPE_MODEL_AS,
    RECIPE_VARIANTS,
    RECIPES,
    SCHEDULES,
    TrainConfig,
    check_given_settings_act,
    recipe_values,
    recorded_threads,
    said_of_file,
)
from cnnlab.errors import CnnlabError, printable, shell_quoted
from cnnlab.dataset_names import DIRECTORY_KINDS, canonical_dataset_name, dataset_kind
from cnnlab.fileio import expand_user, is_dir, is_file, resolved
from cnnlab.output import say
from cnnlab.runs import read_run_json, resolve_run
from cnnlab.schedules import SCHEDULES as SCHEDULE_TABLE, WARMUP_SCHEDULES
from cnnlab.text import either

#: Flags whose default comes from the recipe (None on the command line = not given): every recipe sets the same keys.
RECIPE_FLAGS = RECIPE_FIELDS
#: What each recipe flag means, and its type (a tuple: its choices; bool: --flag/--no-flag).
#: A recipe key missing here fails every parser build (and tests/test_cli.py) until it gets its help.
RECIPE_FLAG_HELP: dict[str, tuple[type | tuple, str]] = {
    "epochs": (int, "passes over the train split"),
    "batch_size": (int, "global images per optimiser step, split across processes under torchrun; at most the "
                        "train split's images (a recipe's batch above a small split takes it whole each step)"),
    "optimizer": (OPTIMIZERS, "optimiser (nesterov: SGD with Nesterov momentum)"),
    "lr": (float, "learning rate; the peak rate with --schedule onecycle"),
    "momentum": (float, "SGD momentum (sgd, nesterov); --schedule onecycle cycles it between 0.95 and 0.85 itself"),
    "weight_decay": (float, "weight decay"),
    "bias_decay": (bool, "apply the weight decay to biases too"),
    "schedule": (SCHEDULES, "learning-rate schedule (" + "; ".join(f"{name}: {schedule.what}" for name, schedule
                                                                in SCHEDULE_TABLE.items()) + ")"),
    "warmup_epochs": (float, f"linear warm-up of the {either(WARMUP_SCHEDULES, 'and')} schedules, in epochs"),
    "augment": (str, "batched augmentation on the device: none, shift, or a pipeline of "
                     f"{', '.join(op for op in AUGMENT_OPS if op not in LABEL_MIXING_OPS)} and one of "
                     f"{either(LABEL_MIXING_OPS)} (which mix the labels too), such as "
                     "'affine:rotate=10,scale=0.1,translate=0.1' or 'shift+flip+cutmix:p=0.5' (see cnnlab.augment)"),
    "clean_epochs": (int, "train the last N epochs on the images as they are, without --augment"),
    "label_smoothing": (float, "cross-entropy label smoothing"),
    "ema": (float, "decay of an exponential moving average of the weights, which is then what is evaluated, "
                   "saved and exported (0: off)"),
    "evals_per_epoch": (int, "evaluations per epoch while --target-accuracy is set"),
    "channels_last": (bool, "channels-last memory format for data and weights"),
    "precision": (PRECISIONS, "bf16: autocast on CPU/CUDA for the training steps; weights, optimiser and "
                              "evaluation stay fp32"),
}
#: ``--dry-run``: this many optimiser steps, evaluated on this many test images.
DRY_RUN_STEPS, DRY_RUN_EVAL_IMAGES = 2, 1000
COMPARE_MODELS = ("inception", "resnet", "basic_cnn")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _shown(key: str, value) -> str:
    """A recipe's value as the flag that sets it: ``--lr 0.01``, ``--no-channels-last``."""
    if isinstance(value, bool):
        return _flag(key) if value else "--no-" + _flag(key)[2:]
    return f"{_flag(key)} {_value(value)}"


def recipes_text(width: int | None = None) -> str:
    """Each recipe and the flags it sets, from ``cnnlab.config.RECIPES``; as wide as argparse's help."""
    width = width or min(100, max(40, shutil.get_terminal_size().columns - 2))  # a 1-column terminal: still text
    lines = ["recipes (a flag you give overrides the recipe's value):"]
    for name, values in RECIPES.items():
        body = " ".join(_shown(k, v) for k, v in values.items())
        lines += textwrap.wrap(f"{name}: {body}", width, initial_indent="  ", subsequent_indent="      ")
        for (model, kind), changes in RECIPE_VARIANTS.get(name, {}).items():
            where = " on ".join(x for x in (model if model != "*" else "", kind if kind != "*" else "") if x)
            body = " ".join(_shown(k, v) for k, v in changes.items())
            lines += textwrap.wrap(f"for {where}: {body}", width, initial_indent="    ", subsequent_indent="        ")
        lines += [f"    for {alias}: as for {model}" for alias, model in RECIPE_MODEL_AS.items()
                  if any(m == model for m, _ in RECIPE_VARIANTS.get(name, {}))]
    return "\n".join(lines)


def _varies(recipe: str, key: str) -> bool:
    """Whether a variant of ``recipe`` changes ``key`` for some model or dataset."""
    return any(key in changes for changes in RECIPE_VARIANTS.get(recipe, {}).values())


def _add_recipe_flags(p: argparse.ArgumentParser, keys=RECIPE_FLAGS) -> None:
    p.add_argument("--recipe", choices=tuple(RECIPES), default=DEFAULTS.recipe,
                   help="named settings: the defaults of the flags that say 'from --recipe'; each recipe's "
                        "values are listed above (default: %(default)s)")
    for key in keys:
        kind, text = RECIPE_FLAG_HELP[key]
        values = ", ".join(f"{name} {_value(r[key])}" + (" (per model and dataset: see above)"
                                                          if _varies(name, key) else "") for name, r in RECIPES.items())
        help = f"{text} (default: from --recipe: {values})".replace("%", "%%")
        if kind is bool:
            p.add_argument(_flag(key), action=argparse.BooleanOptionalAction, default=None, help=help)
        elif isinstance(kind, tuple):
            p.add_argument(_flag(key), choices=kind, default=None, help=help)
        else:
            p.add_argument(_flag(key), type=kind, default=None, help=help)


def _add_val_split(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val-split", type=float, default=DEFAULTS.val_split,
                   help="hold out this fraction of the train split (seeded) to choose best.pt; the test set is "
                        "then used once, at the end (default: %(default)s, best.pt is chosen on the test set)")


def register(sub) -> None:
    _add_train_parser(sub)
    _add_compare_parser(sub)


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (defaults: the lecture's recipe)",
                       formatter_class=RawDescriptionHelpFormatter,
                       description="Train a registered model (see 'cnnlab models') and write its run folder.\n\n"
                                   + recipes_text())
    p.add_argument("--config", metavar="FILE", default=None, type=path_arg,
                   help="settings from a file: a run's config.json (or its run folder, or 'latest': re-runs that run "
                        "exactly) or a JSON/YAML mapping such as 'model: resnet' / 'recipe: best'; flags you type "
                        "override it (default: none)")
    p.add_argument("--model", default=DEFAULTS.model, type=model_arg,
                   help="model name; see 'cnnlab models' (default: %(default)s)")
    add_data_args(p)
    _add_recipe_flags(p)
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed for weights and batch order (default: %(default)s)")
    _add_val_split(p)
    add_device(p)
    add_threads(p)
    p.add_argument("--malloc-tuning", action=argparse.BooleanOptionalAction, default=DEFAULTS.malloc_tuning,
                   help="keep freed host memory for reuse instead of returning it to the OS every step "
                        "(glibc; process-wide; default: on)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model; needs a C++ compiler on CPU (default: off)")
    p.add_argument("--target-accuracy", type=float, default=DEFAULTS.target_accuracy,
                   help="stop as soon as the evaluated accuracy reaches this percentage, checked --evals-per-epoch "
                        "times an epoch on the whole eval split (inside an epoch a check of a split of 8,000 images or "
                        "more first reads a sample of about 2,000, and stops there when that is far below the "
                        "target) (default: %(default)s, off)")
    add_eval_batch_size(p, "--eval-batch-size")
    p.add_argument("--max-steps", type=int, default=DEFAULTS.max_steps,
                   help="stop after this many optimiser steps in total; resumable (default: %(default)s, no limit)")
    p.add_argument("--save-every", type=int, default=DEFAULTS.save_every,
                   help="also save last.pt every N steps, so a killed run loses at most N steps "
                        "(default: %(default)s, only at epoch ends)")
    p.add_argument("--teacher", metavar="RUN", default=None, type=path_arg,
                   help="distil from this finished run's net (a run folder, its .pt, or 'latest'), trained on the "
                        "same dataset: the loss becomes (1-w) x cross-entropy + w x T^2 x KL(teacher || student) at "
                        "temperature T, and train_loss reports it (docs/accuracy.md) (default: none)")
    p.add_argument("--distill", metavar="W", type=float, default=DEFAULTS.distill,
                   help="w: the weight of the teacher's term, in (0, 1] (default: %(default)s; only with --teacher)")
    p.add_argument("--distill-temperature", metavar="T", type=float, default=DEFAULTS.distill_temperature,
                   help="T: the softmax temperature of the teacher's term (default: %(default)s; only with --teacher)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard scalars to RUN/tensorboard (default: off)")
    p.add_argument("--out", default=None, type=path_arg, help="run directory (default: runs/<model>-<dataset>-<timestamp>)")
    free = ", ".join(_flag(k) for k in PROCESS_FIELDS + ADJUSTABLE_FIELDS)
    p.add_argument("--resume", metavar="RUN_DIR", default=None, type=path_arg,
                   help="continue the run in RUN_DIR from its last.pt with its own settings, its CPU threads, device "
                        f"and allocator setting included, so that it ends as if never stopped; {free} may be given "
                        "(another --threads or --device: it no longer ends bitwise as if never stopped; another "
                        "--eval-batch-size moves only the evaluations' last digits), and --epochs of a constant-rate "
                        "run; config.json records them. A .pt file continues the run of the folder it lies in: a "
                        "run folder, or one of its own, never a folder of yours (default: a new run)")
    p.add_argument("--verbose", action="store_true",
                   help="also print the per-class table of the test set at the end (default: off)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (default: off; the bar is also off when the output is not a terminal)")
    p.add_argument("--dry-run", action="store_true",
                   help=f"train {DRY_RUN_STEPS} batches, evaluate {DRY_RUN_EVAL_IMAGES:,} test images, "
                        "write nothing (default: off)")
    p.set_defaults(func=cmd_train, parser=p)


def config_from_args(args) -> TrainConfig:
    """A TrainConfig from parsed ``train`` flags: the flags given, the rest from the recipe (TrainConfig.resolve);
    with ``--config FILE``, the file's settings with the typed flags on top."""
    cfg, where, from_file = settings_from_args(args), None, set()
    if getattr(args, "config", None):
        path = resolve_run(args.config)  # 'latest': the newest run's settings
        if path.suffix == ".pt" and is_file(path) and is_file(path.parent / "config.json"):  # stat errors: one line
            path = path.parent  # RUN/last.pt: its run's settings, as load_run takes it
        path = path / "config.json" if is_dir(path, if_unknown=False) else path  # a loop: the read says it, as --config's
        typed = given_flags(args.parser, getattr(args, "argv", []))
        base = TrainConfig.from_file(path, flag="--config")
        saved = (read_run_json(path) or {}) if path.suffix == ".json" else {}  # a run's config.json, read once
        record = isinstance(saved.get("config"), dict)
        defaults = TrainConfig()  # a setting the file changed, not typed, is refused as the file's (no flag typed)
        where, from_file = str(path), {k for k in base.to_dict() if getattr(base, k) != getattr(defaults, k)} - typed
        recorded_dataset = base.dataset
        cfg = _overlay(base, cfg, typed, record)
        if record:  # a run's own record (a settings file's data_dir is the user's: checked as a flag's is)
            _settle_recorded_data_dir(cfg, typed, where, recorded_dataset)
        if "teacher" not in typed:  # the run's teacher: the same file it learned from, or refused
            from cnnlab.distill import check_rerun_teacher  # imports torch (see the top of this module)

            check_rerun_teacher(cfg, path)
        args.rerun_of = _rerun_of(cfg, path, typed, saved)
    _absolute_paths(cfg)  # as the flags give them: a config file's relative idx:tiny re-ran on another folder's tiny
    cfg.validate(where, from_file)  # the settings as given, before a dry run cuts them short (--max-steps -5)
    if where is not None:  # the file's device, augment, teacher, data_dir: its keys, not flags nobody typed
        from cnnlab.engine import check_settings  # imports torch (see the top of this module)

        with said_of_file(where, from_file):
            check_settings(cfg)
    if args.dry_run:  # the run's own settings (its epochs, clean epochs, warm-up, all checked), cut short
        cfg.max_steps, cfg.eval_limit = DRY_RUN_STEPS, DRY_RUN_EVAL_IMAGES
    return cfg.validate()


def _rerun_of(cfg: TrainConfig, path: Path, typed: set[str],
              record: dict) -> tuple[str, dict | None, int, list[int] | None]:
    """``--config RUN`` (a re-run of that run): where the settings came from, what that run recorded of its data
    (config.json's "data": only for its own ``idx:``/``folder:`` dataset, None otherwise) and how many processes
    trained it, and at how many CPU threads, for the engine to compare with the data it loads and the group and
    threads it runs in (one warning each: the user may mean to re-run on the new data, or in one process).
    ``record``: the run's config.json as read (empty for a settings file)."""
    recorded, world = record.get("data"), record.get("world_size")
    own = isinstance(recorded, dict) and "dataset" not in typed and dataset_kind(cfg.dataset) in DIRECTORY_KINDS
    return (f"--config {shell_quoted(str(path))}", recorded if own else None,
            world if type(world) is int and world >= 1 else 1, recorded_threads(record))


def _absolute_paths(cfg: TrainConfig) -> None:
    """An ``idx:``/``folder:`` dataset and a ``--data-dir`` as absolute paths (from the working folder), whether a
    flag or a config file gave them: config.json records them so, and a re-run from another folder finds them."""
    if isinstance(cfg.dataset, str) and cfg.dataset.strip():
        cfg.dataset = canonical_dataset_name(cfg.dataset)
    if isinstance(cfg.data_dir, str) and cfg.data_dir.strip():
        cfg.data_dir = str(resolved(expand_user(Path(cfg.data_dir))))


def _settle_recorded_data_dir(cfg: TrainConfig, typed: set[str], where: str, recorded_dataset) -> None:
    """A ``--data-dir`` a run's config.json recorded, not typed: dropped where it cannot apply (another ``--dataset``
    typed: its files are the recorded dataset's) or is not there any more (another machine, a folder moved: the data
    then comes from the cache or a download, verified by their checksums as ever); it was refused, naming a flag
    nobody typed."""
    if "data_dir" in typed or not isinstance(cfg.data_dir, str) or not cfg.data_dir:
        return
    if "dataset" in typed and (cfg.dataset != recorded_dataset or dataset_kind(str(cfg.dataset)) in DIRECTORY_KINDS):
        cfg.data_dir = None
    elif not is_dir(expand_user(Path(cfg.data_dir))):  # a loop of links, an unreadable stat: one line
        if says_notes():  # dropped on every rank of a torchrun group, said by rank 0
            print(printable(f"note: {where}: its data folder ({cfg.data_dir}) is not there; the data comes from the "
                            "cache or a download instead, checked as ever (--data-dir DIR to give another)"))
        cfg.data_dir = None


def _overlay(base: TrainConfig, flags: TrainConfig, typed: set[str], record: bool = False) -> TrainConfig:
    """``base`` (a config file) with the values of the flags typed on the command line. A typed --recipe
    replaces the file's recipe values too, except those typed, so that a config never names a recipe it
    did not run. ``record``: the file is a run's config.json, whose values were resolved (a recipe's and the
    ones typed then are alike in it; a settings file says only what its author wrote)."""
    if "recipe" in typed:
        for key in RECIPE_FIELDS:
            setattr(base, key, None)
    elif record and {"model", "dataset"} & typed and isinstance(base.recipe, str):
        # another net or data under the same recipe: the values that were the recipe's for the file's net and data
        # are taken again for the new ones (the best recipe's lr and epochs differ per net); the others were set
        # on purpose and stay
        try:
            was = recipe_values(base.recipe, base.model, base.dataset)
        except CnnlabError:  # a recipe or net this cnnlab does not know: validate says so
            was = {}
        for key in RECIPE_FIELDS:
            if key in was and getattr(base, key) == was[key]:
                setattr(base, key, None)
    for key in typed & set(base.to_dict()):
        setattr(base, key, getattr(flags, key))
    return base


def settings_from_args(args) -> TrainConfig:
    """The TrainConfig of a command's parsed flags: each field whose flag the command has (the flag's dest is the
    field's name), the others at their defaults (a recipe field's None: from the recipe). Made from the fields, not a
    list of them: a new field's flag reaches the run (a hand list dropped ``--grad-clip`` without a word)."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})


def resume_changes(args, cfg: TrainConfig) -> dict:
    """The config values the user typed on a ``--resume`` command line (a resume refuses those that would
    change the run; see :func:`cnnlab.config.resumed_config`)."""
    typed = given_flags(args.parser, getattr(args, "argv", []))
    fields = set(cfg.to_dict())
    return {dest: getattr(cfg, dest) for dest in typed if dest in fields}


def cmd_train(args) -> int:
    take_sigint()
    from cnnlab.engine import train

    if args.resume and getattr(args, "config", None):  # its settings would be ignored, or change the run
        raise CnnlabError(f"--resume continues a run with its own settings, and --config {args.config} would change "
                          "them; drop --config, or start a new run with --out")
    cfg = config_from_args(args)
    if args.dry_run:
        for dest in ("out", "tensorboard", "save_every"):
            refuse_typed(args, dest, "with --dry-run, which writes nothing")
    if not args.resume:  # a resume keeps the run's own settings (and refuses changes to them)
        check_given_settings_act(cfg, set(args.typed))
    if args.resume:
        if args.dry_run or args.out:
            raise CnnlabError("--resume continues a run in its own folder; drop --out and --dry-run")
        result = train(cfg, resume=args.resume, changes=resume_changes(args, cfg), quiet=args.quiet,
                       verbose=args.verbose)
    else:
        result = train(cfg, out=args.out, write=not args.dry_run, quiet=args.quiet, report=not args.dry_run,
                       verbose=args.verbose, rerun_of=getattr(args, "rerun_of", None))
    if args.dry_run and says_notes():  # under torchrun: rank 0's line only
        print(f"dry run ok: {plural(result.final.n, 'test image')} evaluated, nothing written")
    return 0


def _add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="train several models over several seeds and compare them",
                       formatter_class=RawDescriptionHelpFormatter,
                       description="Train every (model, seed) pair under identical settings (or reuse finished "
                                   "runs with the same config)\nand write comparison.md and comparison.png.\n\n"
                                   + recipes_text())
    p.add_argument("--models", nargs="+", default=list(COMPARE_MODELS), type=model_arg,
                   help=f"models to compare (default: {' '.join(COMPARE_MODELS)})")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per model (default: %(default)s)")
    add_data_args(p)
    _add_recipe_flags(p, ("epochs", "batch_size"))
    _add_val_split(p)
    add_device(p)
    add_threads(p)
    p.add_argument("--out", default=None, type=path_arg,
                   help="where runs and the comparison go (default: runs/compare-<dataset>-<recipe>)")
    p.add_argument("--tta", metavar="VIEWS", default="none",
                   help="also the test accuracy with test-time augmentation (see 'cnnlab evaluate --help'), in a "
                        "column of its own beside the final accuracy; e.g. shift (default: none)")
    p.add_argument("--teachers", metavar="DIR", default=None, type=path_arg,
                   help="distil every run from its model and seed's run in DIR, a compare of the same settings "
                        "without --teachers ('cnnlab train --help': --teacher); 'auto': that compare in its default "
                        "folder, made first (or reused); the runs and comparison go to --out, by default "
                        "DIR-distilled (default: none)")
    p.add_argument("--teacher-model", metavar="MODEL", default=None, type=model_arg,
                   help="with --teachers: the teachers are MODEL's runs there (e.g. resnet teaching inception), "
                        "not each model's own (default: each model's own)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    take_sigint()
    from cnnlab.compare import AUTO_TEACHERS, compare, default_out

    cfg = settings_from_args(args)  # its flags' settings: --dataset, --epochs, --batch-size...
    teachers = str(Path(args.teachers)) if args.teachers else None  # runs/x/ -> runs/x (its -distilled sibling)
    named = default_out(args.dataset, args.recipe) if teachers == AUTO_TEACHERS else teachers
    out = args.out or (f"{named}-distilled" if teachers else default_out(args.dataset, args.recipe))
    if args.teacher_model and not teachers:
        raise CnnlabError("--teacher-model names whose runs teach: give --teachers DIR (or auto) too")
    # output.say: a stdout on a full disk or closed is warned of once and the compare goes on (print stopped it after
    # its first run, which it had trained, with neither comparison file written)
    res = compare(args.models, args.seeds, cfg, out, tta=args.tta, teachers=teachers, teacher_model=args.teacher_model,
                  log=say)
    say("\n" + res["table"])
    say(f"wrote {shell_quoted(str(res['out'] / 'comparison.md'))} and "  # a folder's name as a shell takes it
        f"{shell_quoted(str(res['out'] / 'comparison.png'))}")
    return 0
