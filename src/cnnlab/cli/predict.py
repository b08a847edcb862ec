"""``cnnlab predict RUN IMAGE...`` or ``cnnlab predict --model NAME IMAGE...``: classify your own digit images with
a trained run or with cnnlab's shipped weights."""

# cnnlab.predict imports torch (~1.3 s), cnnlab.imageio Pillow and numpy: they are imported inside the
# functions that use them, so that parsing, --help and argument errors answer without them.

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path

from cnnlab.cli.common import (
    CHECKPOINT_HELP,
    add_device,
    add_json,
    chosen_checkpoint,
    dataset_arg,
    model_arg,
    path_arg,
    plural,
    refuse_typed,
)
from cnnlab.runs import CHECKPOINTS, DEFAULT_CHECKPOINT, LATEST, resolve_run
from cnnlab.errors import CnnlabError, FolderGone
from cnnlab.fileio import NO_INODES, FolderGuard, file_size_limit, guarded, is_dir, is_file
from cnnlab.imagelimits import DEFAULT_MAX_PIXELS, MIN_MAX_PIXELS
from cnnlab.output import json_text, stops_held
from cnnlab.text import display_width, pad

#: Where ``--show-input`` without DIR writes an input image whose own folder is not writable.
FALLBACK_INPUT_DIR = Path("cnnlab-inputs")
#: The ``--show-input`` value that means "beside each input file".
BESIDE = ""


#: The option whose value may be an image typed before the others (:func:`images_in_place`).
SHOW_INPUT = "--show-input"


def images_in_place(argv: list[str]) -> list[str]:
    """``argv`` with each image typed as ``--show-input``'s value (the flag typed before the images: ``--show-input
    my_digit.png``, ``--show-input -`` for standard input) made an image where it was typed, after a ``--show-input``
    without DIR (``--show-input= my_digit.png``): argparse took it for DIR, and the command refused for want of images,
    or put it last among them. :func:`cnnlab.cli._parse` parses the command line again as this gives it, so that the
    images keep the order they were typed in (a folder, or any other value, stays DIR)."""
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token == "--":  # what follows is positional: no option's value
            return [*out, *argv[i:]]
        if token == SHOW_INPUT and i + 1 < len(argv) and _an_image(argv[i + 1]):
            out, i = [*out, f"{SHOW_INPUT}=", argv[i + 1]], i + 2
        elif token.startswith(f"{SHOW_INPUT}=") and _an_image(value := token.split("=", 1)[1]):
            out, i = [*out, f"{SHOW_INPUT}=", value], i + 1
        else:
            out, i = [*out, token], i + 1
    return out


def _an_image(value: str) -> bool:
    """Whether ``--show-input``'s ``value`` is an image to predict, not its DIR: ``-`` (standard input, as an image
    argument takes it) or an image file (one named like an option, ``-a.png``, is no value argparse takes)."""
    from cnnlab.imageio import IMAGE_SUFFIXES  # Pillow's formats: only when a value is given

    return value == "-" or (not value.startswith("-") and Path(value).suffix.lower() in IMAGE_SUFFIXES
                            and is_file(value, if_unknown=False))


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
    p.add_argument(SHOW_INPUT, metavar="DIR", nargs="?", const=BESIDE, default=None,
                   help="save the 28x28 image the net saw for each file as <name>.input.png: into DIR if given, "
                        f"else beside the file (or into ./{FALLBACK_INPUT_DIR}/ where that folder is not "
                        "writable, or is a class folder of the net's folder: dataset, whose next load would train on "
                        "them); a file of that name that cnnlab did not write is kept and another name taken, "
                        "and a later predict of the folder leaves these images out; give it after the images, or "
                        "with a DIR (default: off)")
    add_max_pixels(p)
    add_device(p)
    p.set_defaults(func=cmd_predict, loose_inputs="inputs", in_place=images_in_place)


def add_max_pixels(p, least: str = f"{MIN_MAX_PIXELS:,}") -> None:
    """``--max-pixels``, shared by ``predict`` and ``serve`` (whose page needs ``least``)."""
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="largest image accepted, in pixels (width x height, read from the file's header before "
                        f"anything is decoded; decoding peaks at up to 16 bytes a pixel), at least {least} "
                        f"(default: {DEFAULT_MAX_PIXELS:,} = 4096x4096)")


def save_input_images(preds, directory: str | Path | None = None,
                      fallback: str | Path = FALLBACK_INPUT_DIR, data_name: str = "") -> list[Path | None]:
    """Each prediction's input image (``<stem>.input.png``), in the order of ``preds`` (the same file given
    twice is two images): into ``directory``, or, when it is None, beside each input file, or into
    ``fallback`` where that folder cannot be written, or where the net's ``folder:`` dataset (``data_name``, the
    dataset as its run recorded it) reads it (:func:`cnnlab.predict.read_by_training_data`: its next load would train
    on them). A file of that name that ``--show-input`` did not
    write is left as it is, the next free name taken, and a note says so. One path per prediction, None where
    its image could not be written (a warning says why and what to do: the predictions are shown all the same);
    a folder made for images none of which could be written is removed again (:class:`InputImages`, which a
    predict keeps across its chunks)."""
    images = InputImages(directory, fallback, data_name)
    try:
        return images.save(preds)
    finally:
        images.finish()


class InputImages:
    """``--show-input``'s images of one ``cnnlab predict``, written chunk by chunk (:meth:`save`): the names taken
    and the folders made are remembered across chunks, so that no image overwrites another; :meth:`finish` removes
    a folder made for images none of which could be written."""

    def __init__(self, directory: str | Path | None = None, fallback: str | Path = FALLBACK_INPUT_DIR,
                 data_name: str = ""):
        self.directory, self.fallback, self.data_name = directory, fallback, data_name
        self.taken: dict[Path, set[str]] = {}  # per folder: names written by this predict, so none is overwritten
        self.there_before: dict[Path, bool] = {}  # per folder: whether it was there before this predict
        self.used: set[Path] = set()  # the folders an image was written into
        self.read: dict[Path, tuple[Path, str] | None] = {}  # per folder: the net's folder: dataset reads it as
        self.passed_over: set[Path] = set()  # folders beside the images that the dataset reads: said once each
        #: --show-input DIR as it was when it was first written into (or found): the images go into it or nowhere
        #: (moved or deleted meanwhile, each image made it anew at its old path); ``gone``: the line that said so.
        self.guard: FolderGuard | None = None
        self.gone: str | None = None

    def read_by(self, folder: Path) -> tuple[Path, str] | None:
        """``(DIR, CLASS)`` where the net's ``folder:DIR`` dataset reads ``folder`` as its class folder ``CLASS``
        (:func:`cnnlab.predict.read_by_training_data`), looked up once per folder; None where it does not."""
        from cnnlab.predict import read_by_training_data

        if folder not in self.read:
            self.read[folder] = read_by_training_data(self.data_name, folder)
        return self.read[folder]

    def check(self, paths: list) -> None:
        """Refuse, before anything is predicted, a ``--show-input`` whose images would all land where the net's
        ``folder:`` dataset reads them: ``--show-input DIR`` inside it, or beside an image of it where
        ``./cnnlab-inputs`` (where they go instead) is inside it too. Its next load would train on them."""
        from cnnlab.errors import printable

        folder = Path(self.directory) if self.directory is not None else Path(self.fallback)
        read = self.read_by(folder)
        if read is None:
            return
        root = printable(str(read[0]))
        if self.directory is None:
            beside = next((p for p in paths if self.read_by(Path(p).parent) is not None), None)
            if beside is None:
                return
            what = (f"--show-input writes the input image of {printable(str(beside))} into {printable(str(folder))}, "
                    f"not beside it in class folder {printable(self.read_by(Path(beside).parent)[1])}/ of "
                    f"folder:{root}, the data this net trained on; but {printable(str(folder))} is inside that folder "
                    f"too: its loads would read them as images of a class {printable(read[1])}")
        else:
            what = (f"--show-input {printable(str(folder))} is inside folder:{root}, the data this net trained on, "
                    f"whose loads would read the input images written there as images of class {printable(read[1])}")
        raise CnnlabError(f"{what}; give --show-input a folder outside {root}, or a hidden one (--show-input .inputs), "
                          "which a folder: dataset never reads")

    def save(self, preds) -> list[Path | None]:
        """:func:`save_input_images` of ``preds``, one path (or None) each."""
        from cnnlab.errors import printable
        from cnnlab.predict import foreign_input_names, save_input_image

        saved: list[Path | None] = []
        for pred in preds:
            folders = [Path(self.directory)] if self.directory is not None else [Path(pred.name).parent,
                                                                                  Path(self.fallback)]
            passed = [f for f in folders if self.read_by(f) is not None]
            folders = [f for f in folders if f not in passed]
            if not folders:  # where check() was not asked first: every folder it may write into is read
                saved.append(None)
                root = self.read_by(passed[0])[0]
                print(f"warning: --show-input: the input image of {printable(pred.name)} was not written: "
                      f"folder:{printable(str(root))}, the data this net trained on, reads "
                      f"{' and '.join(printable(str(f)) for f in passed)}; give a folder outside it: --show-input DIR",
                      file=sys.stderr)
                continue
            if self.gone is not None:  # its folder went: said once, for this image and those after it
                saved.append(None)
                continue
            for folder in folders:
                self.there_before.setdefault(folder, os.path.lexists(folder))
                stem = Path(pred.name).stem
                first = f"{stem}.input.png" not in self.taken.get(folder, ())
                try:
                    with self._guarded(folder):
                        out = save_input_image(pred, folder, self.taken.setdefault(folder, set()))
                except FolderGone as err:
                    self.gone = f"--show-input: the input image of {printable(pred.name)} and those after it were " \
                                f"not written: {printable(str(err))}"
                    saved.append(None)
                    print(f"warning: {self.gone}", file=sys.stderr)
                    break
                except OSError as err:
                    error = err
                    continue
                saved.append(out)
                self._take(folder)  # (a --show-input DIR made by this write: guarded from now on)
                self.used.add(out.parent)
                self._passed_over(passed, folder)
                if first and out.name != f"{stem}.input.png":  # its own name is held by a file cnnlab did not write
                    kept = " and ".join(printable(str(p)) for p in foreign_input_names(folder, stem))
                    print(f"note: {kept or printable(str(folder / f'{stem}.input.png'))}: not written by "
                          f"--show-input, left as it is; wrote {printable(str(out))} instead", file=sys.stderr)
                break
            else:
                saved.append(None)
                print(f"warning: {_not_saved(pred.name, folders, error)}", file=sys.stderr)
        return saved

    def _guarded(self, folder: Path):
        """Around a write into ``folder``: where it is ``--show-input DIR``, the folder as it was first found or
        written into (:class:`cnnlab.fileio.FolderGuard`), taken now where it is there."""
        self._take(folder)
        return guarded(self.guard if self._given(folder) else None)

    def _take(self, folder: Path) -> None:
        """The guard of ``--show-input DIR``, taken once, where ``folder`` is it and it is there."""
        if self.guard is None and self._given(folder) and is_dir(folder, if_unknown=False):
            self.guard = FolderGuard(folder).take()

    def _given(self, folder: Path) -> bool:
        return self.directory is not None and folder == Path(self.directory)

    def _passed_over(self, passed: list[Path], folder: Path) -> None:
        """The note, once per folder, that an image's own folder was passed over for ``folder``: the net's
        ``folder:`` dataset reads it (its next load would train on the input images written there)."""
        from cnnlab.errors import printable

        for other in passed:
            if other not in self.passed_over:
                self.passed_over.add(other)
                root, inside = self.read_by(other)
                print(f"note: --show-input: {printable(str(other))} is class folder {printable(inside)}/ of "
                      f"folder:{printable(str(root))}, the data this net trained on, whose next load would train on "
                      f"the input images written there; wrote them into {printable(str(folder))} instead",
                      file=sys.stderr)

    def finish(self) -> None:
        """Remove the folders made for images none of which could be written."""
        if self.guard is not None:
            self.guard.release()
        for folder, before in self.there_before.items():
            if not before and folder not in self.used:
                with contextlib.suppress(OSError):  # not empty (something else wrote there), or gone: left as it is
                    os.rmdir(folder)


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
    elif err.errno == errno.EFBIG:  # the write's own line holds its fix: the reason alone, and that fix once
        why = f"cannot write {printable(str(err.path))}: {file_size_limit()}" if getattr(err, "path", None) else \
            file_size_limit()
        fix = "raise the limit (ulimit -f unlimited) and run it again"
    elif err.errno in (errno.ENOSPC, errno.EDQUOT):  # another folder on the same disk would not help
        why = getattr(err, "reason", None) or err.strerror
        fix = f"{NO_INODES[1]} and run it again" if getattr(err, "out_of", None) == "inodes" else \
            "free some disk space and run it again"
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
    from cnnlab.imageio import check_max_pixels
    from cnnlab.predict import Predictor

    check_max_pixels(args.max_pixels, "--max-pixels")  # named as typed (the API's callers see max_pixels)
    if args.top_k < 1:
        raise CnnlabError(f"--top-k must be at least 1, got {args.top_k}")
    if args.model:
        refuse_typed(args, "checkpoint", "with the shipped weights: they are one file, not a run's last and best")
    else:
        refuse_typed(args, "dataset", "without --model: it picks the shipped weights of a dataset, and a run knows "
                                      "its own")
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
        predictor = Predictor.from_run(resolve_run(run) if run == LATEST else run, which=chosen_checkpoint(args),
                                       device=args.device, max_pixels=args.max_pixels)
    if (args.number or args.lines) and not args.json:
        refuse_typed(args, "top_k", f"in {'--lines' if args.lines else '--number'}'s table (it shows each digit's "
                                    "most likely class; --json lists each digit's top classes)")
    return _predict(args, predictor, images)


def _predict(args, predictor, images: list[str]) -> int:
    """Predict ``images`` chunk by chunk (:func:`cnnlab.predict.predict_chunks`), each chunk's rows printed as it is
    done; stopped (Ctrl-C, SIGTERM, SIGHUP), what was done is kept: its rows, and the rest of the output (the
    failures so far, the input images written, the notes; ``--json``'s array closed), then the stop's own line."""
    from cnnlab.predict import CHUNK, expand_inputs, predict_chunks

    stdin = _stdin(images)
    left_out: list[Path] = []
    paths, failures = expand_inputs(images, left_out)
    if left_out:
        print(f"note: left out {plural(len(left_out), 'image')} that --show-input wrote (<name>.input.png, "
              "<name>.input.x10.png) from the folders and patterns given; name one to predict it", file=sys.stderr)
    k = min(args.top_k, len(predictor.classes))
    width = None if len(paths) <= CHUNK else _names_width(paths, stdin, args.lines)  # one chunk: its rows' widths
    images = (InputImages(None if args.show_input == BESIDE else args.show_input, data_name=predictor.data_name)
              if args.show_input is not None else None)
    if images is not None:
        images.check(paths)
    done = Done(JsonArray(k, args.show_input is not None) if args.json else Table(k, width), failures, images,
                word="row" if args.lines else "image", given=len(paths))
    try:
        for preds, failed in predict_chunks(predictor, paths, stdin, number=args.number, lines=args.lines):
            done.add(preds, failed)
    except KeyboardInterrupt:
        done.close(stopped=True)
        raise
    return done.close()


def _names_width(paths: list[Path], stdin, lines: bool) -> int:
    """The table's name column for inputs of more than one chunk, known before any is predicted: the widest name
    (each as the table shows it), with room for `` line 9`` when each row of a page is read."""
    from cnnlab.errors import printable
    from cnnlab.predict import STDIN, STDIN_NAME

    names = {STDIN_NAME if stdin is not None and str(p) == STDIN else str(p) for p in paths}
    return max((display_width(printable(n)) for n in names), default=0) + (display_width(" line 9") if lines else 0)


class Done:
    """What a ``cnnlab predict`` has done so far: each chunk's rows printed (``out``: a :class:`Table` or a
    :class:`JsonArray`) as they come, the input images written for them (``images``), the failures, and the notes,
    said once the rows are (:meth:`close`). ``word``: what a result is (``image``, or ``row`` of a page), ``given``:
    how many images were given, both for the line a stop ends with."""

    def __init__(self, out, failures: list, images: InputImages | None, word: str = "image", given: int = 0):
        self.out, self.failures, self.images = out, list(failures), images
        self.count, self.notes, self.unsaved, self.unsaid = 0, [], False, list(failures)
        self.word, self.given = word, given

    def say_failures(self, failures: list) -> None:
        """The files that could not be predicted, with those the arguments named that were not found (said with
        the first chunk, before its rows)."""
        for f in self.unsaid + failures:
            print(f"cnnlab: skipped {f.error}", file=sys.stderr)
        self.unsaid = []

    def add(self, preds: list, failed: list) -> None:
        """One chunk: its failures said, then each result in turn: its input images written, its row printed and
        counted, as one step that a stop waits for (:func:`cnnlab.output.stops_held`): a stop keeps every row
        printed, names every input image written (none left half a pair), and counts them."""
        with stops_held():
            self.say_failures(failed)
            self.failures += failed
        self.out.start(preds)
        for pred in preds:
            with stops_held():
                path = self.images.save([pred])[0] if self.images is not None else None
                self.unsaved |= self.images is not None and path is None
                self.out.row(pred, path)
                self.count += 1
                self.notes += _notes(pred)
        with stops_held():  # a flush cut short drops what it was writing from the stream
            sys.stdout.flush()  # a pipe's reader sees each chunk as it is done

    def close(self, stopped: bool = False) -> int:
        """The rest of the output, and the exit code (1 if a file failed or an input image was not written).
        ``stopped``: a stop ended the predict, whose line says how far it got (the stop's own line, and its exit
        code, come after). The rest is written whole (``--json``'s failures and its closing ``]``): a stop meanwhile
        is taken once it is, said the same way, and raised (one after a first is left to the first's)."""
        taken = None
        try:
            with stops_held():
                self.say_failures([])
                self.out.close(self.failures)
                if self.images is not None:
                    self.images.finish()
                for note in self.notes:
                    print(note, file=sys.stderr)
        except KeyboardInterrupt as stop:
            taken = None if stopped else stop
            stopped = True
        if stopped:
            failed = f", {len(self.failures)} failed" if self.failures else ""
            print(f"stopped: {plural(self.count, self.word)} predicted{failed}, of {plural(self.given, 'image')} "
                  "given", file=sys.stderr)
        elif self.failures:
            print(f"{plural(self.count, 'image')} predicted, {len(self.failures)} failed", file=sys.stderr)
        if taken is not None:
            raise taken
        return 1 if self.failures or self.unsaved else 0


def _notes(pred) -> list[str]:
    """The notes on one result, said after the rows: digits side by side, thick strokes, the other paper, a digit
    much wider than high, marks away from the number's row."""
    from cnnlab.errors import printable

    name, notes = printable(pred.name), []
    if getattr(pred, "marks", 1) > 1:
        notes.append(f"note: {name}: {pred.marks} digits side by side, read as one; add --number to read each")
    if thick := pred.thick_note():  # a digit's, or a number's digits'
        line = f" line {pred.line}" if getattr(pred, "line", 0) else ""
        notes.append(f"note: {name}{line}: {thick}")
    if getattr(pred, "paper", ""):
        notes.append(f"note: {name}: {pred.paper_note()}")
    for i, ratio in getattr(pred, "wide", {}).items():
        notes.append(f"note: {name}{f' line {pred.line}' if pred.line else ''}: digit {i + 1} "
                     f"('{pred.digits[i].label}') is {ratio:.1f} times wider than high: digits that touch may have "
                     "been read as one; leave a gap between them")
    if getattr(pred, "left_out", 0):
        notes.append(f"note: {name}: {plural(pred.left_out, 'more mark')} as large as a digit away from the number's "
                     "row, not read; add --lines to read every row")
    return notes


class JsonArray:
    """``--json``'s array, written an entry at a time: each result's entry (with ``input_image`` under
    ``--show-input``), then the failures; the same text as the whole array at once (``json_text(..., indent=2)``).
    Closed after a stop too: what was done is valid JSON."""

    def __init__(self, k: int, shown: bool):
        self.k, self.shown, self.count = k, shown, 0

    def start(self, preds) -> None:
        """A chunk's results are to come (nothing to do: each entry stands on its own)."""

    def row(self, pred, path: Path | None) -> None:
        self._entry({**pred.to_dict(self.k), **({"input_image": path and str(path)} if self.shown else {})})

    def _entry(self, entry: dict) -> None:
        body = json_text([entry], indent=2)[2:-2]  # the entry as it stands in the array: "[\n" and "\n]" cut off
        # one write, which Done makes whole (cnnlab.output.stops_held): a stop never splits an entry nor drops it
        sys.stdout.write(("[\n" if not self.count else ",\n") + body)
        self.count += 1

    def close(self, failures: list) -> None:
        for f in failures:
            self._entry(f.to_dict())
        sys.stdout.write("\n]\n" if self.count else "[]\n")
        sys.stdout.flush()


class Table:
    """The table, printed a row at a time: one row per image, its top ``k`` classes, or, for a number, the number,
    how sure the net is of it, and each digit's class; the names padded to ``width`` columns (None: the widest
    name of the first rows printed, which are all the rows when the input is one chunk); then the input images
    written (:meth:`close`)."""

    def __init__(self, k: int, width: int | None = None):
        self.k, self.width, self.wrote = k, width, []

    def start(self, preds) -> None:
        """A chunk's results are to come: the first one sets the names' width, unless it was given."""
        if self.width is None and preds:  # columns of a terminal: 中 two, an accent none
            self.width = max((display_width(self._shown(p)) for p in preds), default=0)

    def row(self, pred, path: Path | None) -> None:
        from cnnlab.errors import printable

        name = self._shown(pred)
        if hasattr(pred, "digits"):  # a number
            each = "  ".join(f"{d.label} {100 * d.top(1)[0][1]:5.1f}%" for d in pred.digits)
            print(f"{pad(name, self.width)}  {pred.label}  {100 * pred.probability:5.1f}%   ({each})")
        else:
            ranked = "  ".join(f"{c} {100 * prob:5.1f}%" for c, prob in pred.top(self.k))
            print(f"{pad(name, self.width)}  {ranked}")
        if path is not None:  # None: not written (a warning said why)
            self.wrote.append(f"wrote {printable(str(path))} (what the net saw of {name})")

    @staticmethod
    def _shown(pred) -> str:
        from cnnlab.errors import printable

        # a newline in a file name would break the table
        return printable(pred.name) + (f" line {pred.line}" if getattr(pred, "line", 0) else "")

    def close(self, failures: list = ()) -> None:
        for line in self.wrote:
            print(line)


def print_table(preds, k: int, saved: list[Path]) -> None:
    """One row per image: its top ``k`` classes, or, for a number, the number, how sure the net is of it, and
    each digit's class; then the input images written (``saved``: one per image, in order, None where it was not
    written; or none at all)."""
    table = Table(k)
    table.start(preds)
    for pred, path in zip(preds, saved or [None] * len(preds)):
        table.row(pred, path)
    table.close()
