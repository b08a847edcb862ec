"""``cnnlab evaluate``: test loss and accuracy of a run, shipped pretrained weights, or a bare weights file."""

# cnnlab.evaluation imports torch (~1.3 s): it is imported inside the command function, so that parsing,
# --help and argument errors answer without it.

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from cnnlab.cli.common import (add_data_args, add_device, add_eval_batch_size, add_json, add_run, chosen_checkpoint,
                               model_arg, path_arg, plural, refuse_typed)
from cnnlab.errors import CnnlabError, WriteError, printable
from cnnlab.fileio import is_file, resolved
from cnnlab import output
from cnnlab.output import complain, json_text
from cnnlab.runs import is_run_dir, read_metrics, removed_if_unused


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="test loss and accuracy of a run, pretrained weights or a weights file",
                       description="Evaluate a run's checkpoint (or the shipped weights with --pretrained, or a bare "
                                   "state_dict with --weights) on the test set: the per-class table, then, for a run, "
                                   "summary.json and the plots in the run folder; the headline comes last.")
    add_run(p, optional=True)
    p.add_argument("--pretrained", metavar="MODEL", default=None, type=model_arg,
                   help="evaluate cnnlab's shipped weights of MODEL on --dataset (see 'cnnlab models') (default: none)")
    p.add_argument("--weights", default=None, type=path_arg,
                   help="a state_dict file (e.g. saved by the lecture's code; also saved from DataParallel or "
                        "torch.compile, or inside a script's checkpoint under 'model_state_dict' or 'state_dict') "
                        "instead of RUN; needs --model (default: none)")
    p.add_argument("--model", default=None, type=model_arg, help="model the --weights belong to (default: none)")
    add_data_args(p, default=None)
    add_device(p)
    add_eval_batch_size(p)
    add_json(p, "the summary line")
    p.add_argument("--out", default=None, type=path_arg,
                   help="where to write summary.json, confusion.png and mistakes.png (curves.png, the training's "
                        "epochs, only into the run directory) (default: the run directory when evaluating its last.pt "
                        "on its own dataset, which makes it the run's result, not a folder of yours that a last.pt was "
                        "copied into; otherwise nowhere)")
    p.add_argument("--no-report", action="store_true",
                   help="write nothing: no summary.json or plots anywhere (the per-class table, loss and accuracy "
                        "are still printed) (default: off)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="val: the run's own validation split (a run trained with --val-split), to choose things such "
                        "as --tta without looking at the test set; writes no report unless --out (default: test)")
    p.add_argument("--tta", metavar="VIEWS", default="none",
                   help="test-time augmentation, reported beside the plain figure (which stays the run's result): the "
                        "softmax averaged over views of each image: shift[:px=1] (5 views), rotate[:deg=10] (3), flip "
                        "(2; clothes, never digits), or combinations such as shift+rotate (15) (default: none)")
    p.set_defaults(func=cmd_evaluate)


def _curves_stale(run_dir: Path) -> bool:
    """Whether curves.png needs drawing: it shows metrics.csv, which an evaluation does not change, so a
    curves.png newer than the metrics is left as it is (about a third of the report's drawing)."""
    metrics, curves = run_dir / "metrics.csv", run_dir / "curves.png"
    try:
        return metrics.is_file() and (not curves.is_file() or curves.stat().st_mtime < metrics.stat().st_mtime)
    except OSError:  # a stat that failed (an input/output error): drawn, where metrics.csv's read says what is wrong
        return is_file(metrics, if_unknown=True)


def _history(run_dir: Path) -> list[dict] | None:
    """The run's metrics for its curves; None (a warning, curves.png left as it is) when metrics.csv is damaged."""
    try:
        return read_metrics(run_dir / "metrics.csv")
    except (OSError, CnnlabError) as err:
        complain(f"cnnlab: warning: curves.png not redrawn: {err}")
        return None


def cmd_evaluate(args) -> int:
    from cnnlab.data.catalog import flip_warning
    from cnnlab.evaluation import check_report_folder, evaluate_subject, open_subject
    from cnnlab.tta import parse_tta

    tta = parse_tta(args.tta)  # a bad spec answers before any data is read
    if args.pretrained or args.weights:
        refuse_typed(args, "checkpoint", f"with {'--pretrained' if args.pretrained else '--weights'}: it picks a "
                                         "run folder's last or best checkpoint")
    if args.pretrained:
        refuse_typed(args, "model", "with --pretrained, which names the shipped model itself (--model is for "
                                    "--weights)")
    if args.no_report:
        refuse_typed(args, "out", "with --no-report, which writes nothing")
    _LOST.clear()
    say = (lambda m: None) if args.json else _shown
    subject = open_subject(args.run, which=chosen_checkpoint(args), weights=args.weights, model_name=args.model,
                           pretrained=args.pretrained, dataset=args.dataset, data_dir=args.data_dir, split=args.split)
    if args.out and not args.no_report:
        check_report_folder(subject, args.out)
    if subject.warning:
        complain(f"cnnlab: {subject.warning}")
    if tta is not None and tta.flips and (warning := flip_warning(subject.data.name, f"--tta {args.tta}")):
        complain(f"cnnlab: {warning}")
    say(printable(f"evaluating {subject.source} ({subject.model_name}) on the {subject.data.name} "  # names escaped
                  f"{subject.split_name}"))
    res = evaluate_subject(subject, device=args.device, batch_size=args.batch_size, keep_outputs=True)
    extra = {"checkpoint": subject.source, **({"split": "val"} if subject.split == "val" else {})}
    if tta is not None:  # beside the plain figure, never instead of it
        t = evaluate_subject(subject, device=args.device, batch_size=args.batch_size, tta=tta)
        extra["tta"] = {"views": tta.spec, "count": tta.count, "loss": t.loss, "accuracy": t.accuracy}
    code = _report(args, subject, res, extra, say)
    where = printable(f"{subject.data.name} {subject.split_name} ({plural(res.n, 'image')})")
    if args.json:
        print(json_text({"dataset": subject.data.name, "split": subject.split, "source": subject.source, "n": res.n,
                          "test_loss": res.loss, "test_acc": res.accuracy, **({"tta": extra["tta"]} if tta else {})}))
        return code
    if tta is not None:
        t = extra["tta"]
        _shown(f"{where} with test-time augmentation ({t['views']}: {plural(t['count'], 'view')}): loss "
              f"{t['loss']:.4f}  accuracy {t['accuracy']:.2f}% ({t['accuracy'] - res.accuracy:+.2f} points; "
              "reported beside, not instead of, the plain figure)")
    _shown(f"{where}: loss {res.loss:.4f}  accuracy {res.accuracy:.2f}%  [{printable(subject.source)}]")
    if _LOST:
        raise _LOST.pop()
    return output.EXIT_PIPE_CLOSED if output.stdout_reader_gone() else code


#: The error of a stdout that could not be written (a full disk): said once the report is written (:func:`_shown`).
_LOST: list[Exception] = []


def _shown(line: str) -> None:
    """A line on stdout; its reader gone (``| head -1``), or stdout on a full disk, the rest of the output is dropped
    and the report is written all the same (the evaluation stopped at its next line, leaving no report in
    ``--out``): exit 141, or the full disk's one line and exit 2 after the report."""
    if _LOST:
        return
    try:
        print(line)
    except BrokenPipeError:
        if not output.stdout_closed():
            raise
        output.discard_stdout(reader_gone=True)
    except output.OutputError as err:
        _LOST.append(err)
        output.discard_stdout()


def _report(args, subject, res, extra: dict, say) -> int:
    """summary.json and the figures, where they belong (the run's own folder, or --out); 1 if they could not be
    written (the accuracy is still the answer)."""
    from cnnlab.evaluation import own_report

    out = Path(args.out) if args.out else subject.run_dir
    reporting = out is not None and not args.no_report
    own = out is not None and subject.run_dir is not None and resolved(out) == resolved(subject.run_dir)
    if not (reporting and own):  # an --out this command makes is removed again when nothing could be written in it
        with removed_if_unused(out) if reporting else contextlib.nullcontext():
            return _write_report(args, subject, res, extra, say, out if reporting else None, own)
    with own_report(subject) as why:  # the run's lock held; its last.pt still the file evaluated
        if why:
            say(f"no report written: {printable(why)}")
        return _write_report(args, subject, res, extra, say, None if why else out, own)


def _write_report(args, subject, res, extra: dict, say, out: Path | None, own: bool) -> int:
    """The per-class table, and summary.json and the figures in ``out`` (None: nowhere)."""
    from cnnlab.evaluation import report_run
    from cnnlab.report import RUN_FACTS, IncompleteReport

    # the run's own folder: its curves.png drawn again only when older than metrics.csv (None: left as it is); any
    # other folder: no curves, and an earlier report's curves.png there goes with its summary.json
    history = (_history(out) if _curves_stale(out) else None) if out is not None and own else []
    code = 0
    try:
        report_run(out, subject.model, subject.data, next(subject.model.parameters()).device,
                   history=history, batch_size=args.batch_size, extra=extra,
                   log=say, result=res, context=subject.context,
                   table=True, keep=RUN_FACTS if own else ())  # the training's own figures (time, target) stay
    except IncompleteReport as err:  # summary.json (and maybe a figure) written, then the disk filled up
        print(f"cnnlab: warning: {printable(str(err))}", file=sys.stderr)
        code = 1
    except WriteError as err:  # a read-only run folder: the accuracy is still the answer
        print(f"cnnlab: warning: no report written: {printable(str(err))}", file=sys.stderr)
        code = 1
    if subject.not_own and not args.out and not args.no_report:
        run = Path(subject.source).parent  # (a folder of the user's: its summary.json is theirs, not the run's result)
        held = ", and the run's summary.json holds the run's result" \
            if is_run_dir(run) and is_file(run / "summary.json", if_unknown=False) else ""
        say(printable(f"no report written: {subject.not_own}{held}; --out DIR writes this one's"))
    return code
