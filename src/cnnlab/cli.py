"""The command line: parses arguments and calls library functions (which tests call directly too)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from cnnlab import __version__
from cnnlab.config import OPTIMIZERS, TrainConfig
from cnnlab.errors import CnnlabError

DEFAULTS = TrainConfig()


def _add_data_args(p: argparse.ArgumentParser, dataset_default: str | None = "mnist") -> None:
    p.add_argument("--dataset", default=dataset_default,
                   help="dataset: mnist, or idx:DIR for any directory with the four IDX files"
                        + (f" (default: {dataset_default})" if dataset_default else " (default: the run's own)"))
    p.add_argument("--data-dir", default=None,
                   help="directory holding the dataset's IDX files (raw or .gz, also torchvision's MNIST/raw "
                        "layout); tried before the cache and downloads")


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (defaults: the lecture's recipe)",
                       description="Train a registered model. Defaults are the lecture's recipe: SGD lr 0.01 "
                                   "momentum 0.5, batch 64, cross-entropy, 10 epochs.")
    p.add_argument("--model", default=DEFAULTS.model, help=f"model name (default: {DEFAULTS.model}); see 'cnnlab models'")
    _add_data_args(p)
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help=f"passes over the train split (default: {DEFAULTS.epochs})")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help=f"images per optimiser step (default: {DEFAULTS.batch_size})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS.optimizer, help=f"(default: {DEFAULTS.optimizer})")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help=f"learning rate (default: {DEFAULTS.lr})")
    p.add_argument("--momentum", type=float, default=DEFAULTS.momentum, help=f"SGD momentum (default: {DEFAULTS.momentum})")
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay, help=f"(default: {DEFAULTS.weight_decay})")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help=f"seed for weights and batch order (default: {DEFAULTS.seed})")
    p.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--threads", type=int, default=DEFAULTS.threads, help="CPU threads for torch; 0 keeps torch's default")
    p.add_argument("--eval-batch-size", type=int, default=DEFAULTS.eval_batch_size, help=f"(default: {DEFAULTS.eval_batch_size})")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many optimiser steps in total (0: no limit)")
    p.add_argument("--save-every", type=int, default=0, help="also save last.pt every N steps (0: only at epoch ends)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<model>-<dataset>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR from its last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="train 2 batches, evaluate 1,000 test images, write nothing")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from cnnlab.engine import train

    if args.resume:
        result = train(TrainConfig(), resume=args.resume, quiet=args.quiet)
    else:
        cfg = TrainConfig(
            model=args.model, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
            batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
            weight_decay=args.weight_decay, seed=args.seed, device=args.device, threads=args.threads,
            eval_batch_size=args.eval_batch_size, max_steps=args.max_steps, save_every=args.save_every,
        )
        if args.dry_run:
            cfg.epochs, cfg.max_steps, cfg.eval_limit = 1, 2, 1000
        result = train(cfg, out=args.out, write=not args.dry_run, quiet=args.quiet)
    where = f"; run saved in {result.run_dir}" if result.run_dir else ""
    best = f" (best epoch {result.best_accuracy:.2f}%)" if result.history else ""
    print(f"final test accuracy {result.final.accuracy:.2f}%{best}{where}")
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
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from cnnlab.engine import evaluate_run

    res, _, data = evaluate_run(args.run, which=args.checkpoint, weights=args.weights, model_name=args.model,
                                dataset=args.dataset, data_dir=args.data_dir, device=args.device,
                                batch_size=args.batch_size)
    if args.json:
        print(json.dumps({"dataset": data.name, "n": res.n, "test_loss": res.loss, "test_acc": res.accuracy}))
    else:
        print(f"{data.name} test set ({res.n:,} images): loss {res.loss:.4f}  accuracy {res.accuracy:.2f}%")
    return 0


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

    d = load_dataset(args.name, data_dir=args.data_dir)
    print(f"{d.name}: {len(d.train_labels):,} train and {len(d.test_labels):,} test images, verified, from {d.source}")
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


def _add_models_parser(sub) -> None:
    p = sub.add_parser("models", help="list registered models and their parameter counts")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    from cnnlab.models import count_parameters, create_model, list_models, model_summary

    for name in list_models():
        print(f"{name:<12} {count_parameters(create_model(name)):>9,} params  {model_summary(name)}")
    return 0


#: Modules that add their own subcommands: each has ``register(subparsers)`` which adds parsers
#: whose ``func`` takes the parsed args and returns an exit code. Keeps this file from growing
#: with every capability; a module's command stays importable and testable without the CLI.
COMMAND_MODULES: tuple[str, ...] = ()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnlab", description="Train, evaluate and understand the lecture's CNNs.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train_parser, _add_evaluate_parser, _add_data_parser, _add_models_parser):
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
