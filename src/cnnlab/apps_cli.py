"""Commands that take a trained net to users: ``predict``, ``export`` and ``serve``.

Registered through ``cnnlab.cli.COMMAND_MODULES``; each command only parses arguments and calls
library functions (:mod:`cnnlab.predict`, :mod:`cnnlab.export`, :mod:`cnnlab.serve`).
"""

from __future__ import annotations

import json
import sys

from cnnlab.cli import _add_data_args

#: ``cnnlab.export.FORMATS`` and ``TOLERANCE``, repeated so that building the parser does not import
#: torch (tests/test_export.py checks that they agree).
EXPORT_FORMATS = ("onnx", "torchscript")
EXPORT_TOLERANCE = 1e-4


def register(sub) -> None:
    from cnnlab.serve.cli import add_parser as add_serve_parser

    _add_predict_parser(sub)
    _add_export_parser(sub)
    add_serve_parser(sub)


# ----------------------------------------------------------------------------- predict


def _add_predict_parser(sub) -> None:
    p = sub.add_parser(
        "predict", help="classify your own digit images with a trained run",
        description="Classify image files (PNG, JPEG, BMP, GIF, WebP; any size, colour or gray, dark ink on light "
                    "paper or light on dark). Each is made MNIST-like first: grayscale, inverted if the paper is "
                    "light, cropped to the ink, scaled to 20 px, centred by mass in 28x28, normalised like the "
                    "run's data. Bad files are reported and skipped; the exit code is 1 if any failed.")
    p.add_argument("run", help="run directory or checkpoint (.pt) written by cnnlab")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, directories (their image files) or globs")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last",
                   help="which checkpoint of a run directory (default: last)")
    p.add_argument("--top-k", type=int, default=3, help="classes shown per image (default: 3)")
    p.add_argument("--json", action="store_true", help="print one JSON array: per file its top classes or its error")
    p.add_argument("--show-input", metavar="DIR", default=None,
                   help="save the 28x28 image the net saw for each file as DIR/<name>.input.png")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:

    from cnnlab.errors import CnnlabError
    from cnnlab.predict import Predictor, predict_paths, save_input_image

    if args.top_k < 1:
        raise CnnlabError(f"--top-k must be at least 1, got {args.top_k}")
    predictor = Predictor.from_run(args.run, which=args.checkpoint, device=args.device)
    preds, failures = predict_paths(predictor, args.images)
    k = min(args.top_k, len(predictor.classes))
    saved: dict[str, str] = {}
    if args.show_input:
        taken: set[str] = set()
        for pred in preds:
            saved[pred.name] = str(save_input_image(pred, args.show_input, taken))
    for f in failures:
        print(f"cnnlab: skipped {f.error}", file=sys.stderr)
    if args.json:
        rows = []
        for pred in preds:
            row = pred.to_dict(k)
            if pred.name in saved:
                row["input_image"] = saved[pred.name]
            rows.append(row)
        rows += [f.to_dict() for f in failures]
        print(json.dumps(rows, indent=2))
    else:
        width = max((len(p.name) for p in preds), default=0)
        for pred in preds:
            ranked = "  ".join(f"{c} {100 * prob:5.1f}%" for c, prob in pred.top(k))
            print(f"{pred.name:<{width}}  {ranked}")
        if failures:
            print(f"{len(preds)} predicted, {len(failures)} failed", file=sys.stderr)
    return 1 if failures else 0


# ----------------------------------------------------------------------------- export


def _add_export_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export a run as ONNX or TorchScript, checked against PyTorch",
        description="Write the run's net as ONNX (dynamic batch axis, normalisation in metadata_props) or "
                    f"TorchScript, then check it on test images: the largest logit difference from PyTorch is "
                    f"printed and must be under {EXPORT_TOLERANCE:g}.")
    p.add_argument("run", help="run directory or checkpoint (.pt) written by cnnlab")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx", help="(default: onnx)")
    p.add_argument("--out", default=None, help="output file (default: beside the checkpoint, e.g. RUN/last.onnx)")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last",
                   help="which checkpoint of a run directory (default: last)")
    p.add_argument("--samples", type=int, default=256, help="test images used for the check (default: 256)")
    _add_data_args(p, dataset_default=None)  # the dataset for the check
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from cnnlab.export import TOLERANCE, export_run

    res = export_run(args.run, args.format, out=args.out, which=args.checkpoint, samples=args.samples,
                     dataset=args.dataset, data_dir=args.data_dir)
    print(f"wrote {res.path} ({res.format}); checked on {res.n_checked} test images in batches of "
          f"{' and '.join(map(str, res.batch_sizes))}: max abs logit difference {res.max_abs_diff:.3e} "
          f"(limit {TOLERANCE:g})")
    return 0
