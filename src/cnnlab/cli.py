"""The command line: parses arguments and calls library functions (which tests call directly too)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from cnnlab import __version__
from cnnlab.config import AUGMENTS, OPTIMIZERS, PRECISIONS, RECIPES, SCHEDULES, TrainConfig, apply_recipe
from cnnlab.errors import CnnlabError

DEFAULTS = TrainConfig()


def _add_data_args(p: argparse.ArgumentParser, dataset_default: str | None = "mnist") -> None:
    p.add_argument("--dataset", default=dataset_default,
                   help="dataset: mnist, fashion-mnist, idx:DIR (a directory with the four IDX files) or "
                        "folder:DIR (one subfolder of images per class)"
                        + (f" (default: {dataset_default})" if dataset_default else " (default: the run's own)"))
    p.add_argument("--data-dir", default=None,
                   help="directory holding the dataset's IDX files (raw or .gz, also torchvision's MNIST/raw "
                        "layout); tried before the cache and downloads")


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (defaults: the lecture's recipe)",
                       description="Train a registered model. Defaults are the lecture's recipe: SGD lr 0.01 "
                                   "momentum 0.5, batch 64, cross-entropy, 10 epochs. A flag you give overrides "
                                   "the recipe's value.")
    p.add_argument("--model", default=DEFAULTS.model, help=f"model name (default: {DEFAULTS.model}); see 'cnnlab models'")
    _add_data_args(p)
    p.add_argument("--recipe", choices=tuple(RECIPES), default="lecture",
                   help="lecture: the seed's settings; fast: Adam + one-cycle, tuned to reach 99%% early (default: lecture)")
    p.add_argument("--epochs", type=int, help=f"passes over the train split (lecture: {DEFAULTS.epochs})")
    p.add_argument("--batch-size", type=int,
                   help=f"global images per optimiser step, split across processes under torchrun (lecture: {DEFAULTS.batch_size})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(lecture: {DEFAULTS.optimizer})")
    p.add_argument("--lr", type=float, help=f"learning rate; the peak rate with --schedule onecycle (lecture: {DEFAULTS.lr})")
    p.add_argument("--momentum", type=float, help=f"SGD momentum (lecture: {DEFAULTS.momentum})")
    p.add_argument("--weight-decay", type=float, help=f"(lecture: {DEFAULTS.weight_decay})")
    p.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (lecture: constant)")
    p.add_argument("--augment", choices=AUGMENTS, help="batched augmentation: shift = random translation up to 2 px (lecture: none)")
    p.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing (lecture: 0)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help=f"seed for weights and batch order (default: {DEFAULTS.seed})")
    p.add_argument("--val-split", type=float, default=0.0,
                   help="hold out this fraction of the train split (seeded) to choose best.pt; the test set is then used once, at the end")
    p.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--threads", type=int, default=DEFAULTS.threads, help="CPU threads for torch; 0 keeps torch's default")
    p.add_argument("--malloc-tuning", action=argparse.BooleanOptionalAction, default=DEFAULTS.malloc_tuning,
                   help="keep freed host memory for reuse instead of returning it to the OS every step "
                        "(glibc; process-wide; default: on)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16 = autocast on CPU/CUDA, weights stay fp32 (default: fp32)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format for data and weights (lecture: off, fast: on)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (needs a C++ compiler on CPU)")
    p.add_argument("--target-accuracy", type=float, default=0.0,
                   help="stop as soon as the evaluated accuracy reaches this percentage (0: off)")
    p.add_argument("--evals-per-epoch", type=int, help="evaluations per epoch while --target-accuracy is set (lecture: 1, fast: 4)")
    p.add_argument("--eval-batch-size", type=int, default=DEFAULTS.eval_batch_size, help=f"(default: {DEFAULTS.eval_batch_size})")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many optimiser steps in total (0: no limit); resumable")
    p.add_argument("--save-every", type=int, default=0, help="also save last.pt every N steps, so a killed run loses at most N steps (0: only at epoch ends)")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard scalars to RUN/tensorboard")
    p.add_argument("--out", default=None, help="run directory (default: runs/<model>-<dataset>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR from its last.pt (its own settings; --max-steps, --device, --threads, --malloc-tuning still apply)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="train 2 batches, evaluate 1,000 test images, write nothing")
    p.set_defaults(func=cmd_train)


#: Flags whose default comes from the recipe (None on the command line = not given): every recipe sets the same keys.
RECIPE_FLAGS = tuple(RECIPES["lecture"])


def config_from_args(args) -> TrainConfig:
    """A TrainConfig from parsed ``train`` flags: the recipe's values, then the flags given."""
    given = {k: getattr(args, k) for k in RECIPE_FLAGS if getattr(args, k) is not None}
    cfg = TrainConfig(
        model=args.model, dataset=_absolute_dataset(args.dataset), data_dir=args.data_dir, seed=args.seed, device=args.device,
        threads=args.threads, malloc_tuning=args.malloc_tuning, eval_batch_size=args.eval_batch_size,
        max_steps=args.max_steps, save_every=args.save_every, val_split=args.val_split, precision=args.precision,
        compile=args.compile, target_accuracy=args.target_accuracy,
        tensorboard=args.tensorboard, recipe=args.recipe,
    )
    apply_recipe(cfg, given)
    if args.dry_run:
        cfg.epochs, cfg.max_steps, cfg.eval_limit = 1, 2, 1000
    return cfg.validate()


def cmd_train(args) -> int:
    from cnnlab.engine import train

    cfg = config_from_args(args)
    if args.resume:
        result = train(cfg, resume=args.resume, quiet=args.quiet)
    else:
        result = train(cfg, out=args.out, write=not args.dry_run, quiet=args.quiet, report=not args.dry_run)
    if args.dry_run:
        print(f"dry run ok: {result.final.n} test images evaluated, nothing written")
    return 0


def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="test loss and accuracy of a run or weights file")
    p.add_argument("run", nargs="?", help="run directory or checkpoint (.pt) written by cnnlab")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last", help="which checkpoint of a run directory (default: last)")
    p.add_argument("--weights", default=None, help="a bare state_dict file (e.g. saved by the lecture's code); needs --model")
    p.add_argument("--model", default=None, help="model the weights belong to")
    _add_data_args(p, dataset_default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", default=None,
                   help="where to write summary.json and the plots (default: the run directory; with --weights: nowhere)")
    p.add_argument("--no-report", action="store_true", help="only print loss and accuracy")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from cnnlab.devices import resolve_device
    from cnnlab.evaluation import evaluate_run, report_run
    from cnnlab.runs import read_metrics

    out = Path(args.out) if args.out else (None if args.weights or args.run is None else _run_dir_of(args.run))
    reporting = out is not None and not args.no_report
    res, model, data = evaluate_run(args.run, which=args.checkpoint, weights=args.weights, model_name=args.model,
                                    dataset=args.dataset, data_dir=args.data_dir, device=args.device,
                                    batch_size=args.batch_size, keep_outputs=reporting)
    if reporting:
        history = read_metrics(out / "metrics.csv") if (out / "metrics.csv").is_file() else []
        log = (lambda m: None) if args.json else print
        report_run(out, model, data, resolve_device(args.device), history=history, batch_size=args.batch_size,
                   extra={"checkpoint": args.checkpoint if not args.weights else str(args.weights)}, log=log,
                   result=res)
    if args.json:
        print(json.dumps({"dataset": data.name, "n": res.n, "test_loss": res.loss, "test_acc": res.accuracy}))
    else:
        print(f"{data.name} test set ({res.n:,} images): loss {res.loss:.4f}  accuracy {res.accuracy:.2f}%")
    return 0


def _run_dir_of(path: str) -> Path:
    p = Path(path)
    return p if p.is_dir() else p.parent


def _add_data_parser(sub) -> None:
    p = sub.add_parser("data", help="fetch datasets and show where they live")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    f = dsub.add_parser("fetch", help="fetch, verify and cache a dataset")
    f.add_argument("name", help="dataset name, e.g. mnist")
    f.add_argument("--data-dir", default=None, help="take the files from this directory instead of downloading")
    f.set_defaults(func=cmd_data_fetch)
    i = dsub.add_parser("info", help="where each dataset lives, sizes and checksum status")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_data_info)


def cmd_data_fetch(args) -> int:
    from cnnlab.data import load_dataset

    d = load_dataset(_absolute_dataset(args.name), data_dir=args.data_dir)
    checked = "verified by MD5" if ":" not in d.name else "read (no official checksums for local data)"
    print(f"{d.name}: {len(d.train_labels):,} train and {len(d.test_labels):,} test images, {checked}, from {d.source}")
    return 0


def cmd_data_info(args) -> int:
    from cnnlab.data.status import dataset_status

    rows = dataset_status()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']}: {r['status']}  ({r['location']})")
        for f in r["files"]:
            print(f"  {f['file']:<28} {f['bytes']:>12,} bytes  {f['status']}")
    return 0


def _add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="train several models over several seeds and compare them",
                       description="Train every (model, seed) pair under identical settings (or reuse finished "
                                   "runs with the same config) and write comparison.md and comparison.png.")
    p.add_argument("--models", nargs="+", default=["inception", "resnet", "basic_cnn"], help="models to compare")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per model (default: 3)")
    _add_data_args(p)
    p.add_argument("--recipe", choices=tuple(RECIPES), default="lecture", help="(default: lecture)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--val-split", type=float, default=0.0, help="choose best on a held-out validation fraction")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None, help="where runs and the comparison go (default: runs/compare-<dataset>-<recipe>)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from cnnlab.compare import compare

    if args.seeds < 1:
        raise CnnlabError(f"--seeds must be at least 1, got {args.seeds}")
    cfg = TrainConfig(dataset=_absolute_dataset(args.dataset), data_dir=args.data_dir, device=args.device,
                      threads=args.threads, val_split=args.val_split, recipe=args.recipe)
    given = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size)) if v is not None}
    apply_recipe(cfg, given).validate()
    from cnnlab.models import list_models

    unknown = [m for m in args.models if m not in list_models()]
    if unknown:
        raise CnnlabError(f"unknown model(s) {', '.join(unknown)}; choose from: {', '.join(list_models())}")
    safe = args.dataset.split(":", 1)[0]
    out = args.out or f"runs/compare-{safe}-{args.recipe}"
    res = compare(args.models, args.seeds, cfg, out)
    print()
    print(res["table"])
    print(f"wrote {res['out'] / 'comparison.md'} and {res['out'] / 'comparison.png'}")
    return 0


def _add_export_weights_parser(sub) -> None:
    p = sub.add_parser("export-weights", help="write a run's bare weights for other tools (safetensors)")
    p.add_argument("run", help="run directory or checkpoint")
    p.add_argument("--checkpoint", choices=("last", "best"), default="best", help="(default: best)")
    p.add_argument("--format", choices=("safetensors",), default="safetensors")
    p.add_argument("--out", default=None, help="output file (default: RUN/model.safetensors)")
    p.set_defaults(func=cmd_export_weights)


def cmd_export_weights(args) -> int:
    from cnnlab.export import export_safetensors

    path = export_safetensors(args.run, which=args.checkpoint, out=args.out)
    print(f"wrote {path}")
    return 0


def _absolute_dataset(name: str) -> str:
    """``idx:``/``folder:`` paths made absolute, so a run can be evaluated from any directory."""
    for prefix in ("idx:", "folder:"):
        if name.startswith(prefix):
            return prefix + str(Path(name[len(prefix):]).expanduser().resolve())
    return name


def _add_models_parser(sub) -> None:
    p = sub.add_parser("models", help="list registered models and their parameter counts")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    from cnnlab.models import count_parameters, create_model, list_models, model_summary

    for name in list_models():
        print(f"{name:<16} {count_parameters(create_model(name)):>9,} params  {model_summary(name)}")
    return 0


#: Modules that add their own subcommands: each has ``register(subparsers)`` which adds parsers
#: whose ``func`` takes the parsed args and returns an exit code. Keeps this file from growing
#: with every capability; a module's command stays importable and testable without the CLI.
COMMAND_MODULES: tuple[str, ...] = ("cnnlab.analysis.cli", "cnnlab.apps_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnlab", description="Train, evaluate and understand the lecture's CNNs.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train_parser, _add_evaluate_parser, _add_compare_parser, _add_export_weights_parser,
                _add_data_parser, _add_models_parser):
        add(sub)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CnnlabError as err:
        print(f"cnnlab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
