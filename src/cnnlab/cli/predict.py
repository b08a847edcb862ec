"""``cnnlab predict RUN IMAGE...`` or ``cnnlab predict --model NAME IMAGE...``: classify your own digit images with
a trained run or with cnnlab's shipped weights."""

# cnnlab.predict imports torch (~1.3 s), cnnlab.imageio Pillow and numpy: they are imported inside the
# functions that use them, so that parsing, --help and argument errors answer without them.

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from pathlib import Path

from cnnlab.cli.common import (
    CHECKPOINT_HELP,
    add_device,
    add_json,
    dataset_arg,
    model_arg,
    path_arg,
    plural,
    refuse_typed,
)
from cnnlab.runs import CHECKPOINTS, DEFAULT_CHECKPOINT, LATEST, resolve_run
from cnnlab.errors import CnnlabError
from cnnlab.fileio import is_file
from cnnlab.imagelimits import DEFAULT_MAX_PIXELS, MIN_MAX_PIXELS
from cnnlab.output import json_text
from cnnlab.text import display_width, pad

#: Where ``--show-input`` without DIR writes an input image whose own folder is not writable.
FALLBACK_INPUT_DIR = Path("cnnlab-inputs")
#: The ``--show-input`` value that means "beside each input file".
BESIDE = ""


class ShowInput(argparse.Action):
    """``--show-input [DIR]``: a value that is an image file, not a folder (``--show-input my_digit.png``, the
    flag typed before the images), is an image to predict, its input image written beside it; it was taken for
    DIR, and the command refused for want of images."""

    def __call__(self, parser, namespace, value, option_string=None):
        from cnnlab.imageio import IMAGE_SUFFIXES  # Pillow's formats: only when a value is given

        if value not in (None, BESIDE) and Path(value).suffix.lower() in IMAGE_SUFFIXES and is_file(value, if_unknown=False):
            namespace.shown_image = path_arg(value)
            value = BESIDE
        setattr(namespace, self.dest, value)


def register(sub) -> None:
    p = sub.add_parser(
        "predict", help="classify your own digit images with a trained run or the shipped weights",
        description="Classify image files (PNG, JPEG, BMP, GIF, WebP; any size, colour or gray, dark ink on light "
                    "paper or light on dark). Each is made MNIST-like first: grayscale, inverted if the paper is "
                    "light, cropped to the ink, scaled to 20 px, centred by mass in 28x28, normalised like the "
                    "run's data (a 28x28 white-on-black field is taken as it is; a Fashion-MNIST net's image is one "
                    "piece of clothing, made as that dataset's were: negated if the background is light, trimmed "
                    "to the item, fitted into 28x28). Bad files (not an image, damaged, over --max-pixels, unreadable) are reported "
                    "and skipped; the exit code is 1 if any failed.")
    p.add_argument("inputs", nargs="*", metavar="[RUN] IMAGE", type=path_arg,
                   help="a run directory or checkpoint ('latest': the newest run), then image files, directories "
                        "(their image files) or globs ('-': one image read from standard input); with --model, "
                        "images only")
    p.add_argument("--model", "--pretrained", dest="model", metavar="MODEL", default=None, type=model_arg,
                   help="use cnnlab's shipped weights of this model instead of a run, e.g. resnet (see 'cnnlab "
                        "models') (default: none)")
    p.add_argument("--dataset", default="mnist", type=dataset_arg,
                   help="with --model: the shipped weights trained on mnist or fashion-mnist (default: %(default)s)")
    p.add_argument("--checkpoint", choices=CHECKPOINTS, default=DEFAULT_CHECKPOINT, help=CHECKPOINT_HELP.format(pretrained=" or the shipped weights"))
    p.add_argument("--top-k", type=int, default=3, help="classes shown per image (default: %(default)s)")
    add_json(p, "the table: one array holding, per file, its top classes or its error")
    p.add_argument("--number", action="store_true",
                   help="read a number: every digit written in a row in each image, left to right, each classified "
                        "on its own, with a point, a comma, a colon (10:30) or a leading minus where written; without "
                        "it, each image is one digit (default: off)")
    p.add_argument("--lines", action="store_true",
                   help="read every row of digits in each image, top to bottom, one number per row (as --number "
                        "reads one row; rows are told apart by the gaps between them) (default: off)")
    p.add_argument("--show-input", metavar="DIR", nargs="?", const=BESIDE, default=None, action=ShowInput,
                   help="save the 28x28 image the net saw for each file as <name>.input.png: into DIR if given, "
                        f"else beside the file (or into ./{FALLBACK_INPUT_DIR}/ where that folder is not "
                        "writable); a file of that name that cnnlab did not write is kept and another name taken, "
                        "and a later predict of the folder leaves these images out; give it after the images, or "
                        "with a DIR (default: off)")
    add_max_pixels(p)
    add_device(p)
    p.set_defaults(func=cmd_predict, loose_inputs="inputs")


def add_max_pixels(p, least: str = f"{MIN_MAX_PIXELS:,}") -> None:
    """``--max-pixels``, shared by ``predict`` and ``serve`` (whose page needs ``least``)."""
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="largest image accepted, in pixels (width x height, read from the file's header before "
                        f"anything is decoded; decoding peaks at up to 16 bytes a pixel), at least {least} "
                        f"(default: {DEFAULT_MAX_PIXELS:,} = 4096x4096)")


def save_input_images(preds, directory: str | Path | None = None,
                      fallback: str | Path = FALLBACK_INPUT_DIR) -> list[Path | None]:
    """Each prediction's input image (``<stem>.input.png``), in the order of ``preds`` (the same file given
    twice is two images): into ``directory``, or, when it is None, beside each input file, or into
    ``fallback`` where that folder cannot be written. A file of that name that ``--show-input`` did not
    write is left as it is, the next free name taken, and a note says so. One path per prediction, None where
    its image could not be written (a warning says why and what to do: the predictions are shown all the same);
    a folder made for images none of which could be written is removed again."""
    from cnnlab.errors import printable
    from cnnlab.predict import foreign_input_names, save_input_image

    taken: dict[Path, set[str]] = {}  # per folder: names written in this batch, so none is overwritten
    there_before: dict[Path, bool] = {}  # per folder: whether it was there before this batch
    saved: list[Path | None] = []
    for pred in preds:
        folders = [Path(directory)] if directory is not None else [Path(pred.name).parent, Path(fallback)]
        for folder in folders:
            there_before.setdefault(folder, os.path.lexists(folder))
            stem = Path(pred.name).stem
            first = f"{stem}.input.png" not in taken.get(folder, ())
            try:
                out = save_input_image(pred, folder, taken.setdefault(folder, set()))
            except OSError as err:
                error = err
                continue
            saved.append(out)
            if first and out.name != f"{stem}.input.png":  # its own name is held by a file cnnlab did not write
                kept = " and ".join(printable(str(p)) for p in foreign_input_names(folder, stem))
                print(f"note: {kept or printable(str(folder / f'{stem}.input.png'))}: not written by --show-input, "
                      f"left as it is; wrote {printable(str(out))} instead", file=sys.stderr)
            break
        else:
            saved.append(None)
            print(f"warning: {_not_saved(pred.name, folders, error)}", file=sys.stderr)
    for folder, before in there_before.items():
        if not before and folder not in {p.parent for p in saved if p is not None}:
            with contextlib.suppress(OSError):  # not empty (something else wrote there), or gone: left as it is
                os.rmdir(folder)
    return saved


def _not_saved(name: str, folders: list[Path], err: OSError) -> str:
    """The line for an input image that could not be written into any of ``folders``: why, and the fix that
    works (a shorter image name where the input image's own name is too long, not another folder)."""
    from cnnlab.errors import printable

    tried = " nor ".join(printable(str(f)) for f in folders)
    if err.errno == errno.ENAMETOOLONG:
        why = "the name <image name>.input.x10.png would be too long for the file system"
        fix = "rename the image to a shorter name"
    elif err.errno == errno.ELOOP:  # cnnlab.fileio.symlink_loop's line, which names the link
        why, fix = getattr(err, "reason", None) or err.strerror, "fix or remove the symbolic link, or give another " \
            "folder: --show-input DIR"
    else:
        # the reason alone: a WriteError's whole text carries its generic fix ("another --out"), not this one
        why = getattr(err, "reason", None) or err.strerror or type(err).__name__
        fix = "give a writable folder: --show-input DIR"
    return f"--show-input: the input image of {printable(name)} was not written into {tried} ({why}); {fix}"


def _stdin(images: list[str]):
    """Standard input, for an image argument ``-`` (``... | cnnlab predict --model resnet -``); None without one."""
    from cnnlab.predict import STDIN

    if STDIN not in images:
        return None
    fix = "send the file in: cnnlab predict --model resnet - < digit.png (or name the file)"
    if sys.stdin is None or sys.stdin.closed:  # started with descriptor 0 closed (<&-), or closed since
        raise CnnlabError(f"'{STDIN}' reads one image from standard input, and standard input is closed; {fix}")
    if sys.stdin.isatty():  # reading would wait for a binary file typed at the keyboard
        raise CnnlabError(f"'{STDIN}' reads one image from standard input, which is a terminal here; {fix}")
    return sys.stdin.buffer


def cmd_predict(args) -> int:
    from cnnlab.errors import printable
    from cnnlab.imageio import check_max_pixels
    from cnnlab.predict import Predictor, predict_paths

    check_max_pixels(args.max_pixels, "--max-pixels")  # named as typed (the API's callers see max_pixels)
    if args.top_k < 1:
        raise CnnlabError(f"--top-k must be at least 1, got {args.top_k}")
    if args.model:
        refuse_typed(args, "checkpoint", "with the shipped weights: they are one file, not a run's last and best")
    else:
        refuse_typed(args, "dataset", "without --model: it picks the shipped weights of a dataset, and a run knows "
                                      "its own")
    if getattr(args, "shown_image", None) is not None:  # --show-input IMAGE: the image, shown beside itself
        args.inputs = [*args.inputs, args.shown_image]
    if not args.inputs:
        raise CnnlabError("give the images to predict: cnnlab predict RUN IMAGE... (a run's net), or cnnlab predict "
                          "--model resnet IMAGE... (the shipped weights)")
    if args.model:
        predictor = Predictor.pretrained(args.model, args.dataset, device=args.device, max_pixels=args.max_pixels)
        images = args.inputs
    else:
        run, images = args.inputs[0], args.inputs[1:]
        if not images:
            raise CnnlabError("give a run and the images (cnnlab predict RUN IMAGE...), or the shipped weights and "
                              "the images (cnnlab predict --model resnet IMAGE...)")
        predictor = Predictor.from_run(resolve_run(run) if run == LATEST else run, which=args.checkpoint,
                                       device=args.device, max_pixels=args.max_pixels)
    if (args.number or args.lines) and not args.json:
        refuse_typed(args, "top_k", f"in {'--lines' if args.lines else '--number'}'s table (it shows each digit's "
                                    "most likely class; --json lists each digit's top classes)")
    left_out: list[Path] = []
    preds, failures = predict_paths(predictor, images, stdin=_stdin(images), number=args.number, left_out=left_out,
                                    lines=args.lines)
    k = min(args.top_k, len(predictor.classes))
    saved: list[Path | None] = []
    if args.show_input is not None:
        saved = save_input_images(preds, None if args.show_input == BESIDE else args.show_input)
    if left_out:
        print(f"note: left out {plural(len(left_out), 'image')} that --show-input wrote (<name>.input.png, "
              "<name>.input.x10.png) from the folders and patterns given; name one to predict it", file=sys.stderr)
    for f in failures:
        print(f"cnnlab: skipped {f.error}", file=sys.stderr)
    if args.json:
        rows = [{**pred.to_dict(k), **({"input_image": path and str(path)} if saved else {})}
                for pred, path in zip(preds, saved or [None] * len(preds))]
        print(json_text(rows + [f.to_dict() for f in failures], indent=2))
    else:
        print_table(preds, k, saved)
    for pred in preds:
        if getattr(pred, "marks", 1) > 1:
            print(f"note: {printable(pred.name)}: {pred.marks} digits side by side, read as one; add --number to "
                  "read each", file=sys.stderr)
        if thick := pred.thick_note():  # a digit's, or a number's digits'
            line = f" line {pred.line}" if getattr(pred, "line", 0) else ""
            print(f"note: {printable(pred.name)}{line}: {thick}", file=sys.stderr)
        if getattr(pred, "paper", ""):
            print(f"note: {printable(pred.name)}: {pred.paper_note()}", file=sys.stderr)
        for i, ratio in getattr(pred, "wide", {}).items():
            print(f"note: {printable(pred.name)}{f' line {pred.line}' if pred.line else ''}: digit {i + 1} "
                  f"('{pred.digits[i].label}') is {ratio:.1f} times wider than high: digits that touch may have been "
                  "read as one; leave a gap between them", file=sys.stderr)
        if getattr(pred, "left_out", 0):
            print(f"note: {printable(pred.name)}: {plural(pred.left_out, 'more mark')} as large as a digit away from "
                  "the number's row, not read; add --lines to read every row", file=sys.stderr)
    if failures:
        print(f"{plural(len(preds), 'image')} predicted, {len(failures)} failed", file=sys.stderr)
    return 1 if failures or None in saved else 0


def print_table(preds, k: int, saved: list[Path]) -> None:
    """One row per image: its top ``k`` classes, or, for a number, the number, how sure the net is of it, and
    each digit's class; then the input images written (``saved``: one per image, in order, None where it was not
    written; or none at all)."""
    from cnnlab.errors import printable

    names = {p.name: printable(p.name) for p in preds}  # a newline in a file name would break the table
    shown = [names[p.name] + (f" line {p.line}" if getattr(p, "line", 0) else "") for p in preds]
    width = max((display_width(n) for n in shown), default=0)  # columns of a terminal: 中 two, an accent none
    for pred, name in zip(preds, shown):
        if hasattr(pred, "digits"):  # a number
            each = "  ".join(f"{d.label} {100 * d.top(1)[0][1]:5.1f}%" for d in pred.digits)
            print(f"{pad(name, width)}  {pred.label}  {100 * pred.probability:5.1f}%   ({each})")
        else:
            ranked = "  ".join(f"{c} {100 * prob:5.1f}%" for c, prob in pred.top(k))
            print(f"{pad(name, width)}  {ranked}")
    for path, name in zip(saved, shown):
        if path is not None:  # None: not written (a warning said why)
            print(f"wrote {printable(str(path))} (what the net saw of {name})")
