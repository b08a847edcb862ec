"""``cnnlab evaluate``: test loss and accuracy of a run or a bare weights file, with its report."""

# cnnlab.evaluation and cnnlab.devices import torch (~1.3 s): they are imported inside the command
# function, so that parsing, --help and argument errors answer without it.

from __future__ import annotations

import json
from pathlib import Path

from cnnlab.cli.common import add_data_args, add_device, add_eval_batch_size, add_json, add_run, plural
from cnnlab.runs import read_metrics, run_dir_of


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="test loss and accuracy of a run or weights file",
                       description="Evaluate a run's checkpoint (or a bare state_dict with --weights) on the test "
                                   "set; for a run, also write summary.json, the per-class table and the plots.")
    add_run(p, optional=True)
    p.add_argument("--weights", default=None,
                   help="a bare state_dict file (e.g. saved by the lecture's code) instead of RUN; needs --model "
                        "(default: none)")
    p.add_argument("--model", default=None, help="model the --weights belong to (default: none)")
    add_data_args(p, default=None)
    add_device(p)
    add_eval_batch_size(p)
    add_json(p, "the summary line")
    p.add_argument("--out", default=None,
                   help="where to write summary.json and the plots (default: the run directory; with --weights: "
                        "nowhere)")
    p.add_argument("--no-report", action="store_true", help="only print loss and accuracy (default: off)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from cnnlab.devices import resolve_device
    from cnnlab.evaluation import evaluate_run, report_run

    out = Path(args.out) if args.out else (None if args.weights or args.run is None else run_dir_of(args.run))
    reporting = out is not None and not args.no_report
    res, model, data = evaluate_run(args.run, which=args.checkpoint, weights=args.weights, model_name=args.model,
                                    dataset=args.dataset, data_dir=args.data_dir, device=args.device,
                                    batch_size=args.batch_size, keep_outputs=reporting)
    if reporting:
        history = read_metrics(out / "metrics.csv") if (out / "metrics.csv").is_file() else []
        log = (lambda m: None) if args.json else print
        report_run(out, model, data, resolve_device(args.device), history=history, batch_size=args.batch_size,
                   extra={"checkpoint": args.checkpoint if not args.weights else str(args.weights)}, log=log,
                   result=res, context={"dataset": data.name})
    if args.json:
        print(json.dumps({"dataset": data.name, "n": res.n, "test_loss": res.loss, "test_acc": res.accuracy}))
    else:
        print(f"{data.name} test set ({plural(res.n, 'image')}): loss {res.loss:.4f}  accuracy {res.accuracy:.2f}%")
    return 0
