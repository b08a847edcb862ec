"""``cnnlab evaluate``: test loss and accuracy of a run, shipped pretrained weights, or a bare weights file."""

# cnnlab.evaluation imports torch (~1.3 s): it is imported inside the command function, so that parsing,
# --help and argument errors answer without it.

from __future__ import annotations

import json
import sys
from pathlib import Path

from cnnlab.cli.common import add_data_args, add_device, add_eval_batch_size, add_json, add_run, plural
from cnnlab.errors import WriteError
from cnnlab.runs import read_metrics


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="test loss and accuracy of a run, pretrained weights or a weights file",
                       description="Evaluate a run's checkpoint (or the shipped weights with --pretrained, or a bare "
                                   "state_dict with --weights) on the test set: the per-class table, then, for a run, "
                                   "summary.json and the plots in the run folder; the headline comes last.")
    add_run(p, optional=True)
    p.add_argument("--pretrained", metavar="MODEL", default=None,
                   help="evaluate cnnlab's shipped weights of MODEL on --dataset (see 'cnnlab models') (default: none)")
    p.add_argument("--weights", default=None,
                   help="a bare state_dict file (e.g. saved by the lecture's code) instead of RUN; needs --model "
                        "(default: none)")
    p.add_argument("--model", default=None, help="model the --weights belong to (default: none)")
    add_data_args(p, default=None)
    add_device(p)
    add_eval_batch_size(p)
    add_json(p, "the summary line")
    p.add_argument("--out", default=None,
                   help="where to write summary.json and the plots (default: the run directory when evaluating its "
                        "last.pt on its own dataset, which makes it the run's result; otherwise nowhere)")
    p.add_argument("--no-report", action="store_true", help="only print loss and accuracy (default: off)")
    p.set_defaults(func=cmd_evaluate)


def _curves_stale(run_dir: Path) -> bool:
    """Whether curves.png needs drawing: it shows metrics.csv, which an evaluation does not change, so a
    curves.png newer than the metrics is left as it is (about a third of the report's drawing)."""
    metrics, curves = run_dir / "metrics.csv", run_dir / "curves.png"
    try:
        return metrics.is_file() and (not curves.is_file() or curves.stat().st_mtime < metrics.stat().st_mtime)
    except OSError:
        return metrics.is_file()


def cmd_evaluate(args) -> int:
    from cnnlab.evaluation import evaluate_subject, open_subject, report_run
    from cnnlab.report import RUN_FACTS

    say = (lambda m: None) if args.json else print
    subject = open_subject(args.run, which=args.checkpoint, weights=args.weights, model_name=args.model,
                           pretrained=args.pretrained, dataset=args.dataset, data_dir=args.data_dir)
    out = Path(args.out) if args.out else subject.run_dir
    reporting = out is not None and not args.no_report
    say(f"evaluating {subject.source} ({subject.model_name}) on the {subject.data.name} test set")
    res = evaluate_subject(subject, device=args.device, batch_size=args.batch_size, keep_outputs=True)
    code = 0
    own = out is not None and subject.run_dir is not None and out.resolve() == subject.run_dir.resolve()
    history = read_metrics(out / "metrics.csv") if reporting and own and _curves_stale(out) else []
    try:
        report_run(out if reporting else None, subject.model, subject.data, next(subject.model.parameters()).device,
                   history=history, batch_size=args.batch_size, extra={"checkpoint": subject.source},
                   log=say, result=res, context={"model": subject.model_name, "dataset": subject.data.name},
                   table=True, keep=RUN_FACTS if own else ())  # the training's own figures (time, target) stay
    except WriteError as err:  # a read-only run folder: the accuracy is still the answer
        print(f"cnnlab: warning: no report written: {err}", file=sys.stderr)
        code = 1
    if subject.not_own and not args.out and not args.no_report:
        say(f"no report written: {subject.not_own}, and the run's summary.json holds the run's result; "
            "--out DIR writes this one's")
    if args.json:
        print(json.dumps({"dataset": subject.data.name, "source": subject.source, "n": res.n,
                          "test_loss": res.loss, "test_acc": res.accuracy}))
    else:
        print(f"{subject.data.name} test set ({plural(res.n, 'image')}): loss {res.loss:.4f}  "
              f"accuracy {res.accuracy:.2f}%  [{subject.source}]")
    return code
