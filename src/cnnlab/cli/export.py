"""``cnnlab export`` (ONNX or TorchScript, checked against PyTorch) and ``cnnlab export-weights`` (safetensors)."""

# cnnlab.export imports torch (~1.3 s): it is imported inside the command functions, so that parsing,
# --help and argument errors answer without it (the choices come from the torch-free cnnlab.export_formats).

from __future__ import annotations

from cnnlab.cli.common import (WITH_PRETRAINED, add_data_args, add_run, chosen_checkpoint, dataset_arg, model_arg,
                               path_arg, plural, refuse_typed)
from cnnlab.errors import printable
from cnnlab.export_formats import CHECK_BATCH, FORMATS, SUFFIXES, TOLERANCE, WEIGHT_FORMATS
from cnnlab.text import either


def register(sub) -> None:
    _add_export_parser(sub)
    _add_export_weights_parser(sub)


def _add_export_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export a run (or the shipped weights) as ONNX or TorchScript, checked against PyTorch",
        description="Write the run's net (or, with --pretrained, cnnlab's shipped weights) as ONNX (dynamic batch "
                    "axis, normalisation in metadata_props) or TorchScript, then check it on test images: the "
                    f"largest logit difference from PyTorch is printed and must be at most {TOLERANCE:g} times the "
                    f"logits' largest magnitude (or {TOLERANCE:g}, if that is more). The file's metadata also records "
                    "the checkpoint it came from (file name, the run's step and epoch, its SHA-256; the shipped "
                    "file's name and SHA-256 with --pretrained). A run still training is not exported into its "
                    "folder: --out FILE outside it writes its checkpoint, marked as mid-training; the last.pt of a "
                    "run that diverged is not exported.")
    add_run(p, optional=True)
    p.add_argument("--pretrained", metavar="MODEL", default=None, type=model_arg,
                   help="export cnnlab's shipped weights of MODEL on --dataset instead of a run (see 'cnnlab "
                        "models'), to MODEL-DATASET.onnx here unless --out (default: none)")
    p.add_argument("--format", choices=FORMATS, default=FORMATS[0],
                   help="format of the exported file; ONNX is checked with onnxruntime (default: %(default)s)")
    suffixes = " or ".join(f"RUN/last{s}" for s in SUFFIXES.values())
    p.add_argument("--out", default=None, type=path_arg, help=f"output file, or a folder (a path ending in '/') to write the "
                                               f"default name into (default: beside the checkpoint, e.g. {suffixes})")
    p.add_argument("--samples", type=int, default=256,
                   help=f"test images used for the check, run in batches of at most {CHECK_BATCH} (default: %(default)s)")
    add_data_args(p, default=None, use=" to check on")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from cnnlab.export import export_run

    if args.pretrained:
        refuse_typed(args, "checkpoint", WITH_PRETRAINED)
    res = export_run(args.run, args.format, out=args.out, which=chosen_checkpoint(args), samples=args.samples,
                     dataset=args.dataset, data_dir=args.data_dir, pretrained=args.pretrained)
    print(f"wrote {printable(str(res.path))} ({res.format}); checked on {plural(res.n_checked, 'test image')} in batches of "
          f"{either(res.batch_sizes, 'and')}: max abs logit difference {res.max_abs_diff:.3e} "
          f"(limit {res.limit:.3g}: {TOLERANCE:g} x the logits' largest magnitude, at least {TOLERANCE:g})")
    return 0


def _add_export_weights_parser(sub) -> None:
    p = sub.add_parser("export-weights", help="write a run's bare weights for other tools (safetensors)",
                       description="Write a checkpoint's weights as safetensors, with the metadata of 'cnnlab "
                                   "export' (model and its arguments, classes, normalisation, input layout, "
                                   "and the checkpoint it came from: file name, the run's step and epoch, its "
                                   "SHA-256; the shipped file's name and SHA-256 with --pretrained). A run still "
                                   "training is not written into: --out FILE writes its checkpoint elsewhere, marked "
                                   "as mid-training; the last.pt of a run that diverged is not written.")
    add_run(p, optional=True)
    p.add_argument("--pretrained", metavar="MODEL", default=None, type=model_arg,
                   help="write cnnlab's shipped weights of MODEL on --dataset instead of a run's (see 'cnnlab models'), "
                        "with their provenance, to MODEL-DATASET.safetensors here unless --out (default: none)")
    p.add_argument("--dataset", default=None, type=dataset_arg,
                   help="the dataset of the shipped weights --pretrained names (default: mnist)")
    p.add_argument("--format", choices=WEIGHT_FORMATS, default=WEIGHT_FORMATS[0],
                   help="format of the weights file (default: %(default)s)")
    p.add_argument("--out", default=None, type=path_arg,
                   help="output file, or a folder (a path ending in '/') to write the default name into (default: "
                        "beside the checkpoint, named after it: RUN/model.safetensors for a run's last.pt, "
                        "RUN/best.safetensors with --checkpoint best, NAME.safetensors for NAME.pt (model.pt.safetensors for "
                        "model.pt, model.checkpoint.safetensors for a model with no suffix); "
                        "MODEL-DATASET.safetensors here with --pretrained; never in cnnlab's shipped weights folder)")
    p.set_defaults(func=cmd_export_weights)


def cmd_export_weights(args) -> int:
    from cnnlab.export import export_safetensors

    if args.pretrained:
        refuse_typed(args, "checkpoint", WITH_PRETRAINED)
    path = export_safetensors(args.run, which=chosen_checkpoint(args), out=args.out, pretrained=args.pretrained,
                              dataset=args.dataset)
    print(f"wrote {printable(str(path))}")  # a newline in the name would split the line
    return 0
