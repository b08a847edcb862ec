"""``cnnlab analyze branches RUN`` and ``cnnlab analyze gradients``: measure the lecture's two claims."""

# cnnlab.analysis imports torch (~1.3 s) and matplotlib: it is imported inside the command functions,
# so that parsing, --help and argument errors answer without them. (That is also why --norm has no
# argparse choices: they live in cnnlab.models.stacks.NORMS, behind torch; the library checks the value.)

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from cnnlab.cli.common import (
    WITH_PRETRAINED,
    add_data_args,
    add_device,
    add_eval_batch_size,
    add_json,
    add_run,
    chosen_checkpoint,
    model_arg,
    path_arg,
    refuse_typed,
    take_sigint,
)
from cnnlab.config import RECIPES
from cnnlab.errors import CnnlabError, RunBusy, WriteError, printable
from cnnlab.fileio import FolderGuard, atomic_write_json, guarded, is_file, set_aside
from cnnlab.output import complain, json_text, say
from cnnlab.runs import (ANALYSIS_LOCK, RunLock, check_output_folder, folders_made, is_running, new_analysis_dir,
                         remove_if_unused, run_dir_of)

#: The analysis trains with the lecture's optimiser settings.
LECTURE = RECIPES["lecture"]


def register(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="measure the lecture's claims on your own models and data",
                              description="Measure the lecture's two claims: which kernel an Inception module "
                                          "relies on, and how residuals keep gradients alive in deep stacks.")
    p.set_defaults(func=None, help_of=p)
    sub = p.add_subparsers(dest="analyze_cmd", metavar="COMMAND", title="commands")
    _add_branches_parser(sub)
    _add_gradients_parser(sub)


def _add_branches_parser(sub) -> None:
    b = sub.add_parser("branches", help="ablate each Inception branch of a trained net and measure its use",
                       description="For each Inception module of a trained run (or the shipped weights, "
                                   "--pretrained inception) and each branch (pool, 1x1, 5x5, 3x3): test accuracy with "
                                   "the branch zeroed and mean-ablated, the next layer's weight share on its "
                                   "channels, and its activation energy per class. Writes branches.json and "
                                   "branches.png.")
    add_run(b, optional=True)
    b.add_argument("--pretrained", metavar="MODEL", default=None, type=model_arg,
                   help="analyze the shipped weights of MODEL (inception) instead of a run; --dataset picks which "
                        "(mnist unless given) (default: none)")
    b.add_argument("--train-images", type=int, default=10_000,
                   help="train images (a fixed random subset) to compute mean activations from; 0: all "
                        "(default: %(default)s)")
    b.add_argument("--test-images", type=int, default=0,
                   help="test images (a fixed random subset) to measure on; 0: all (default: %(default)s)")
    add_data_args(b, default=None, use=" to test on")
    add_device(b)
    add_eval_batch_size(b)
    b.add_argument("--out", default=None, type=path_arg,
                   help="directory for branches.json and branches.png; for another checkpoint or dataset than the "
                        "run's last.pt on its own, not the run's own (default: the run directory, for its last.pt on "
                        "its own dataset, otherwise nowhere, as for evaluate; with --pretrained, "
                        "runs/branches-<dataset>-<timestamp>)")
    add_json(b, "the table")
    b.set_defaults(func=cmd_branches)


def _add_gradients_parser(sub) -> None:
    g = sub.add_parser("gradients", help="gradient norms at init and short-budget accuracy of plain vs residual stacks",
                       description="Build plain and residual conv stacks (plain_stack, residual_stack) of one width "
                                   "and several depths; on real batches measure every layer's gradient norm at "
                                   "initialisation over several seeds, and the test accuracy after a short training "
                                   "budget. Writes gradients.json, gradients.png and depth.png.")
    g.add_argument("--depths", default="4,8,16,32,64",
                   help="3x3 conv layers in each stack's body, comma-separated even numbers (default: %(default)s)")
    g.add_argument("--width", type=int, default=8, help="channels of every conv in the body (default: %(default)s)")
    g.add_argument("--norm", default="none",
                   help="none: no normalisation, as in the lecture; batch: BatchNorm after every conv of both kinds "
                        "(default: %(default)s)")
    g.add_argument("--seeds", type=int, default=3,
                   help="initialisations (each with its own batch) to measure gradients over (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=LECTURE["batch_size"],
                   help="batch for gradients and training, at most the train split's images (default: "
                        "%(default)s, the lecture's, which takes a smaller split whole)")
    g.add_argument("--epochs", type=int, default=1,
                   help="training budget: passes over --train-images; 0: gradients only (default: %(default)s)")
    g.add_argument("--train-images", type=int, default=6400,
                   help="train images per epoch of the budget (a fixed random subset, the same for every stack); "
                        "0: all (default: %(default)s, affordable on a laptop CPU)")
    g.add_argument("--test-images", type=int, default=10_000,
                   help="test images to score each stack on; 0: all (default: %(default)s)")
    g.add_argument("--lr", type=float, default=LECTURE["lr"],
                   help="SGD learning rate (default: %(default)s, the lecture's)")
    g.add_argument("--momentum", type=float, default=LECTURE["momentum"],
                   help="SGD momentum (default: %(default)s, the lecture's)")
    add_data_args(g)
    add_device(g)
    g.add_argument("--out", default=None, type=path_arg,
                   help="directory for the results (default: runs/gradients-<dataset>-<timestamp>)")
    add_json(g, "the table")
    g.set_defaults(func=cmd_gradients)


def cmd_branches(args) -> int:
    from cnnlab.analysis.branches import analyze_branches, format_branches
    from cnnlab.analysis.plots import plot_branches
    from cnnlab.evaluation import check_not_own_folder, check_not_read_by_net

    take_sigint()  # SIGTERM and SIGHUP too stop it as Ctrl-C does: between its files, no half folder (_write)

    if args.batch_size < 1:
        raise CnnlabError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.pretrained:
        refuse_typed(args, "checkpoint", WITH_PRETRAINED)
    run_dir = run_dir_of(args.run) if args.run else None
    if args.out:  # before the analysis's minutes, not after them
        check_output_folder(args.out, run_dir, writes=("branches.json", "branches.png"))
    if args.out or run_dir is None:  # (a run's own folder is where it trained)
        _check_not_read(args.dataset, args.out)
    # a second analysis into the same folder is refused before the measuring, not mixed with this one's files
    # later; a run still training is not locked (nothing is written into it), nor one whose measurement is not its
    # own (a diverged run's last.pt, its best.pt, other data: nothing is written into it either, as evaluate
    # writes nothing there); nor is any folder before the input is known to be an Inception net: a refused one (an
    # image, a resnet run) leaves no lock file behind. The shipped weights' default folder is made then too: one
    # that cannot be made is refused before the measuring
    fresh = not args.out and run_dir is None
    folder = Path(args.out) if args.out else run_dir if run_dir and not is_running(run_dir) else None

    def ready(subject=None) -> None:  # the opened net (analyze_branches' Subject)
        not_own = subject.not_own if subject is not None else ""
        if subject is not None and (args.out or run_dir is None):  # nor where the net's folder: dataset reads
            check_not_read_by_net(subject, args.out or "runs", _named(args.out))
        if args.out and run_dir is not None:  # best.pt's, another dataset's analysis: not into the run's own folder
            check_not_own_folder(args.out, run_dir, not_own, "analysis")
        if args.out or run_dir is None or (folder is not None and not not_own):
            folders.lock(folder, "branches", args.dataset or "mnist")

    with _Folders() as folders:
        result = analyze_branches(args.run, pretrained=args.pretrained, which=chosen_checkpoint(args),
                                  dataset=args.dataset, data_dir=args.data_dir, train_images=args.train_images,
                                  test_images=args.test_images, device=args.device,
                                  batch_size=args.batch_size, log=(lambda m: None) if args.json else say,
                                  ready=ready, warn=lambda m: complain(f"cnnlab: {m}"))
        not_own = result.pop("not_own", "")
        table = json_text(result, indent=2) if args.json else format_branches(result)
        if not_own and not args.out:
            print(table)
            say("\n" + printable(f"nothing written into {run_dir}: {not_own}; --out DIR writes this analysis's "
                                 "files"))
            return 0
        out = folders.lock(Path(args.out) if args.out else run_dir, "branches", result["dataset"])
        return _write(out, ("branches.json", result), [("branches.png", lambda p: plot_branches(result, p))], table,
                      result["seconds"], args.json, fresh=fresh, guard=folders.guard)


def _check_not_read(dataset: str | None, out: str | None) -> None:
    """An analysis's folder (``--out``, or its own under runs/) where its ``folder:`` dataset would read it as a
    class: refused before the measuring (:func:`cnnlab.data.folder.check_not_read`); a net's analysis checks the
    dataset its net trained on too, once the net is opened (``cmd_branches``' ``ready``)."""
    from cnnlab.data.folder import check_not_read  # numpy and Pillow (see the top of this module)

    check_not_read(dataset, out or "runs", _named(out))


def _named(out: str | None) -> str:
    """An analysis's folder as a refusal names it."""
    return f"--out {out}" if out else "runs/ (where an analysis goes without --out)"


class _Folders:
    """The folder an analysis writes into, locked while it computes and writes (:func:`_lock`); one it made (its
    default folder, a new --out) is removed again, as ``train`` removes the fresh run folder it made, when the
    analysis ends without writing into it (an error, a stop, a full disk: it held only the lock file). Not one whose
    lock another process holds (:class:`~cnnlab.errors.RunBusy`): not there when this one looked, it is that
    process's, made since (the refused analysis removed it from under the one writing into it)."""

    def __init__(self):
        self.locks: list[RunLock] = []
        #: The folder locked, as it was then: its files are written into it or not at all (:func:`_write`).
        self.guard: FolderGuard | None = None
        #: Each folder made, with the folders made for it (runs/, the parents of a new --out, and itself).
        self.made: list[tuple[Path, tuple[Path, ...]]] = []

    def lock(self, folder: Path | None, kind: str, dataset: str) -> Path:
        """Lock ``folder`` (None: the analysis's own new folder under runs/, named after ``kind`` and ``dataset``),
        once; the folder locked."""
        if self.locks:
            return self.locks[0].path.parent
        if folder is None:
            above = folders_made("runs")
            folder = new_analysis_dir("runs", kind, dataset)
            made = (*above, folder)
        else:
            made = folders_made(folder)
        try:
            self.locks.append(_lock(folder))
        except RunBusy:  # another process holds it: a folder it made since `made` was read is its own, left alone
            made = ()
            raise
        finally:
            if made:  # (one made and refused otherwise, a full disk: removed, as nothing was written into it)
                self.made.append((folder, made))
        self.guard = FolderGuard(folder).take(self.locks[0])
        return folder

    def __enter__(self) -> "_Folders":
        return self

    def __exit__(self, *exc) -> None:
        for lock in self.locks:
            lock.release()
        for folder, made in self.made:
            remove_if_unused(folder, (ANALYSIS_LOCK,), made)


def _lock(folder: Path) -> RunLock:
    """An exclusive lock on ``folder`` while an analysis computes and writes into it (its own lock file, not the
    run's .lock: ``evaluate`` and ``train`` read that one as "the run is training"); it also makes the folder,
    so an unwritable --out is refused before the minutes of computing, not after them."""
    return RunLock(folder, busy="another analysis is writing into it; wait for it to finish, or pick another --out",
                   task="analysis", name=ANALYSIS_LOCK).acquire()


def _write(out: Path, record: tuple[str, dict], figures: list, table: str, seconds: float, quiet: bool,
           fresh: bool = False, guard: FolderGuard | None = None) -> int:
    """Write the analysis's JSON (``record``: its name and contents), then each ``(name, draw)`` of its ``figures``
    into ``out``, then print the table: a stdout that cannot be written (a full disk, a closed pipe) loses the table,
    never the files the analysis was asked for. The figures an earlier analysis left there are set aside the moment
    before the new JSON is renamed into place, and removed once it is there (as a report's are:
    :func:`cnnlab.report.write_report`, :func:`cnnlab.fileio.set_aside`), so that a stop between the files (SIGKILL
    too) never leaves the new JSON beside the old figures; a JSON that cannot be written or renamed in leaves the
    earlier files whole. 1 (with what was written and what not, in one line, after the table) when the disk
    refuses a file: the table is still the answer. Stopped (Ctrl-C, SIGTERM) between its files, a folder made for
    this analysis (``fresh``) is removed (it left a folder with the JSON and no figures among the results), and a
    given one is said to be incomplete. ``guard``: the folder as it was locked; moved or deleted since, the next file
    is not written (each was written into a folder made anew at its old path: :class:`cnnlab.fileio.FolderGuard`),
    and the line says where the files written went."""
    name, data = record
    drawn = [out / n for n, _ in figures]
    files = [(name, lambda p: atomic_write_json(p, data, just_before=lambda: set_aside(drawn))), *figures]
    written: list[str] = []
    refused = None
    for name, writer in files:
        try:
            with guarded(guard):
                writer(out / name)
        except WriteError as err:
            refused = err
            break
        except KeyboardInterrupt:
            if fresh:
                shutil.rmtree(out, ignore_errors=True)
            elif written:
                print(printable(f"cnnlab: warning: results incomplete: {_done(out, files, written)}: stopped; run "
                                "it again"), file=sys.stderr)
            raise
        written.append(name)
    print(table)
    if refused is not None:  # (a folder moved meanwhile: what was written went with it)
        where = getattr(refused, "moved_to", None) or out
        print(printable(f"cnnlab: warning: results incomplete: {_done(where, files, written)}: {refused}"),
              file=sys.stderr)
        return 1
    if not quiet:  # the folder's name escaped: a newline or an escape sequence in it stays one line, inert
        print("\n" + printable(f"wrote {', '.join(str(out / n) for n in written)} ({seconds:.0f}s)"))
    return 0


def _done(out: Path, files: list, written: list[str]) -> str:
    """What an analysis stopped or refused between its files wrote and what not, and the earlier analysis's files
    that stay there (its JSON, when the new one was not written; a figure that could not be removed)."""
    missing = [n for n, _ in files if n not in written]
    older = [n for n in missing if is_file(out / n, if_unknown=False)]
    stays = (f" (an earlier analysis's {', '.join(older)} {'stays' if len(older) == 1 else 'stay'} there)"
             if older else "")
    done = f"wrote {', '.join(written)} in {out}, not" if written else f"wrote nothing in {out}:"
    return f"{done} {', '.join(missing)}{stays}"


def cmd_gradients(args) -> int:
    from cnnlab.analysis.gradients import (
        analyze_gradients,
        format_gradients,
        parse_depths,
    )
    from cnnlab.analysis.plots import plot_depth, plot_gradients

    take_sigint()  # SIGTERM and SIGHUP too stop it as Ctrl-C does: between its files, no half folder (_write)

    depths = parse_depths(args.depths)
    if args.epochs == 0:
        for dest in ("lr", "momentum", "train_images", "test_images"):
            refuse_typed(args, dest, "with --epochs 0, which measures gradients only and trains nothing")
    if args.out:
        check_output_folder(args.out, None, writes=("gradients.json", "gradients.png", "depth.png"))
    _check_not_read(args.dataset, args.out)
    # the folder is locked (and made) once the arguments and data are checked: a refusal leaves no lock file, a
    # folder that cannot be made (a read-only current folder) is refused before the measuring
    with _Folders() as folders:
        result = analyze_gradients(depths, width=args.width, norm=args.norm, seeds=args.seeds,
                                   batch_size=args.batch_size, train_images=args.train_images, epochs=args.epochs,
                                   test_images=args.test_images, lr=args.lr, momentum=args.momentum,
                                   dataset=args.dataset, data_dir=args.data_dir, device=args.device,
                                   log=(lambda m: None) if args.json else say,
                                   ready=lambda: folders.lock(Path(args.out) if args.out else None, "gradients",
                                                              args.dataset))
        table = json_text(result, indent=2) if args.json else "\n" + format_gradients(result)
        out = folders.lock(Path(args.out) if args.out else None, "gradients", result["dataset"])
        return _write(out, ("gradients.json", result), [("gradients.png", lambda p: plot_gradients(result, p)),
                                                         ("depth.png", lambda p: plot_depth(result, p))],
                      table, result["seconds"], args.json, fresh=not args.out, guard=folders.guard)
