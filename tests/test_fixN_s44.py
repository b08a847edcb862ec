"""The newcomer tester's defects (s44, fix helper fixN): ``evaluate --out`` naming a file refused before the evaluation
(D1); no run folder where a ``folder:`` dataset reads it (D2); no ``runs/`` left by a refused command (D3); a
``--batch-size`` above the train split refused (D4); an empty ``--tta`` refused (D5); ``--data-dir FILE`` named as a
file (D6); ``-1e-3`` and ``-inf`` read as values (D7); ``folder:`` with no path refused (D8); ``pretrained_build
--only`` of no weights refused (D9). docs/reliability.md lists them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conftest import trained_once, write_idx_dataset
from cnnlab.cli import main


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """``cnnlab ARGV``'s exit code, stdout and stderr (argparse's refusals exit)."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- D7: -1e-3, -inf


@pytest.mark.parametrize("argv, line", [
    (["train", "--lr", "-1e-3", "--dry-run"], "--lr must be a positive finite number, got -0.001"),
    (["train", "--ema", "-inf", "--dry-run"], "--ema is a decay in [0, 1) (0: off), got -inf"),
    (["train", "--lr", "-2.5E+1", "--dry-run"], "--lr must be a positive finite number, got -25.0"),
    (["train", "--seed", "-1e3", "--dry-run"], "argument --seed: invalid int value: '-1e3'"),
    (["analyze", "gradients", "--lr", "-1E-2"], "--lr must be a positive finite number, got -0.01"),
])
def test_a_negative_number_with_an_exponent_or_inf_is_a_value(argv, line, capsys):
    """newcomer D7. ``train --lr -1e-3`` said ``argument --lr: expected one argument`` (argparse's negative-number
    test knew ``-1`` and ``-.5`` only, and took ``-1e-3`` and ``-inf`` for options): the value is read, and the
    flag's own check names the problem, as ``--lr=-1e-3`` did."""
    code, out, err = run(argv, capsys)
    assert code == 2 and not out and err.count("\n") == 1, err
    assert line in err and "expected one argument" not in err, err


# ----------------------------------------------------------------------------- D8: folder: and idx: with no path


@pytest.mark.parametrize("argv", [
    ["train", "--model", "basic_cnn", "--dataset", "folder:", "--dry-run", "--threads", "1"],
    ["train", "--dataset", "idx: ", "--dry-run"],
    ["data", "fetch", "folder:"],
    ["evaluate", "--pretrained", "resnet", "--dataset", "folder:", "--no-report"],
])
def test_an_empty_path_after_folder_or_idx_is_refused(argv, tmp_path, monkeypatch, capsys):
    """newcomer D8. ``--dataset "folder:$D"`` with D unset trained on the current folder's subfolders (``dry run
    ok``), and ``data fetch folder:`` cached it, where ``--data-dir "$D"`` was refused as an empty path: now the
    parser refuses an empty or blank path after ``folder:``/``idx:`` (``dataset_names.canonical_dataset_name``), and
    ``folder:.`` still names the current folder."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    for c in "ab":
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.new("L", (28, 28), 40 * i).save(tmp_path / c / f"{i}.png")
    kind = argv[argv.index("--dataset") + 1 if "--dataset" in argv else 2].split(":")[0]
    code, out, err = run(argv, capsys)
    assert code == 2 and not out and err.count("\n") == 1, err
    assert (f"{kind}: with an empty path (an unset shell variable?); give {kind}:DIR, or {kind}:. for the current "
            "folder") in err, err
    assert {p.name for p in tmp_path.iterdir()} <= {"a", "b", "home"}  # no runs/
    assert not (tmp_path / "home" / "datasets").exists()  # nothing converted, nothing cached


def test_the_api_refuses_an_empty_folder_path_too(tmp_path, monkeypatch):
    """newcomer D8, the API: ``cnnlab.train(dataset="folder:")`` is refused in the same words."""
    import cnnlab
    from cnnlab.errors import CnnlabError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(CnnlabError, match=r"folder: with an empty path \(an unset shell variable\?\)"):
        cnnlab.train(model="basic_cnn", dataset="folder:", max_steps=1)
    assert {p.name for p in tmp_path.iterdir()} <= {"home"} and not (tmp_path / "home" / "datasets").exists()


# ----------------------------------------------------------------------------- D5: --tta ""


EMPTY_TTA = ("--tta is empty (an unset variable?); give none for no test-time augmentation, or leave it out")


@pytest.mark.parametrize("spec", ["", "  "])
def test_an_empty_tta_is_refused_as_an_empty_augment_is(spec, tmp_path, monkeypatch, capsys):
    """newcomer D5. ``evaluate --pretrained resnet --no-report --tta "$VIEWS"`` with VIEWS unset printed the plain
    figure only, rc 0, where ``--augment ""`` is refused: now ``tta.parse_tta`` refuses an empty or blank spec
    before any data is read (evaluate, compare and the API's ``Run.evaluate(tta="")`` alike)."""
    from cnnlab.compare import compare
    from cnnlab.config import TrainConfig
    from cnnlab.errors import CnnlabError

    monkeypatch.chdir(tmp_path)
    code, out, err = run(["evaluate", "--pretrained", "resnet", "--no-report", "--tta", spec], capsys)
    assert (code, out, err) == (2, "", f"cnnlab: error: {EMPTY_TTA}\n")
    with pytest.raises(CnnlabError, match=re.escape(EMPTY_TTA)):
        compare(["basic_cnn"], 1, TrainConfig(model="basic_cnn", dataset="idx:nowhere"), tmp_path / "c", tta=spec)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- D6: --data-dir FILE


@pytest.mark.parametrize("argv", [["data", "fetch", "mnist"], ["evaluate", "--pretrained", "resnet", "--no-report"],
                                  ["train", "--model", "basic_cnn", "--dry-run"]])
def test_a_data_dir_that_is_a_file_is_named_so(argv, tmp_path, monkeypatch, capsys):
    """newcomer D6. ``--data-dir f``, a file, was ``no such directory``, the wrong cause; now it is said as
    ``folder:FILE`` says it (``data.sources._not_a_data_dir``), and a missing path keeps its line."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("hi")
    os.mkfifo(tmp_path / "ff")
    here = f"{tmp_path}/" if argv[0] == "train" else ""  # train records --data-dir absolute, and names it so
    code, out, err = run([*argv, "--data-dir", "f"], capsys)
    assert (code, out) == (2, "") and err == (f"cnnlab: error: --data-dir {here}f is a file, not a directory; give the "
                                              "folder that holds the IDX files, or leave --data-dir out to use the "
                                              "cache and downloads\n"), err
    code, out, err = run([*argv, "--data-dir", "ff"], capsys)
    assert code == 2 and f"--data-dir {here}ff is a FIFO (named pipe), not a directory; give the folder" in err, err
    code, out, err = run([*argv, "--data-dir", "gone"], capsys)
    assert code == 2 and err == (f"cnnlab: error: --data-dir {here}gone: no such directory; check the path, or leave "
                                 "--data-dir out to use the cache and downloads\n"), err


# ----------------------------------------------------------------------------- D9: pretrained_build --only TYPO


@pytest.mark.parametrize("argv", [["--check", "--only", "resnet_mnist"], ["--measure", "--only", "nothing"],
                                  ["--only", "resnet-mnist", "TYPO"], ["--measure", "--only"]])
def test_pretrained_build_refuses_a_name_of_no_weights(argv, monkeypatch, capsys):
    """newcomer D9. ``python -m cnnlab.pretrained_build --check --only resnet_mnist`` printed nothing and exited 0
    (``make weights --check`` read as passed, having checked nothing), and ``--measure --only nothing`` rewrote the
    shipped manifest having measured nothing: ``--only`` takes the names of ``SETS`` only (``set_name``), at least
    one, refused in one line naming them, exit 2, before anything is trained, measured or written."""
    from cnnlab import pretrained_build
    from cnnlab.pretrained import MANIFEST, weights_dir

    def never(*args, **kwargs):
        raise AssertionError("it went on")

    for name in ("build_one", "measure_again", "write_manifest"):
        monkeypatch.setattr(pretrained_build, name, never)
    manifest = weights_dir() / MANIFEST
    before = (manifest.read_bytes(), manifest.stat().st_mtime_ns)
    with pytest.raises(SystemExit) as stop:
        pretrained_build.main(argv)
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and not out and err.count("\n") == 1, err
    assert err.startswith("python -m cnnlab.pretrained_build: error: argument --only: ")
    if argv[-1] != "--only":
        assert (f"{argv[-1]!r} names no shipped weights; give one or more of resnet-mnist, inception-mnist, "
                "resnet-fashion-mnist, inception-fashion-mnist") in err
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns) == before


# ----------------------------------------------------------------------------- D1: evaluate --out afile


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished tiny run (basic_cnn, one epoch), which the tests only read."""
    return trained_once(tmp_path_factory, "fixN")


@pytest.mark.parametrize("kind", ["file", "fifo", "device", "dangling link"])
def test_evaluate_out_that_is_no_folder_is_refused_before_the_evaluation(kind, trained, tmp_path, monkeypatch, capsys):
    """newcomer D1. ``evaluate --pretrained resnet --out afile`` (a file, a FIFO, /dev/null, a link to nowhere)
    evaluated the whole split (19-28 s), printed the table, then warned ``no report written: cannot create folder
    afile: ...``, rc 1, where ``--out afile/sub`` was refused at once: ``runs.check_output_folder`` now says the same
    line (``fileio.not_a_folder``, make_dirs' own) before any evaluation, exit 2."""
    from cnnlab import evaluation

    monkeypatch.chdir(tmp_path)
    out, what = {"file": ("afile", "a file of that name is in the way; remove it or pick another path"),
                 "fifo": ("ff", "a FIFO (named pipe) of that name is in the way; pick another path"),
                 "device": ("/dev/null", "a character device of that name is in the way; pick another path"),
                 "dangling link": ("dl", f"dl is a symbolic link to nowhere ({tmp_path}/gone/x: missing); remove or "
                                         "fix the link, or pick another path")}[kind]
    (tmp_path / "afile").write_text("hi")
    os.mkfifo(tmp_path / "ff")
    (tmp_path / "dl").symlink_to(tmp_path / "gone" / "x")
    monkeypatch.setattr(evaluation, "evaluate_subject", lambda *a, **k: pytest.fail("it evaluated"))
    code, printed, err = run(["evaluate", str(trained), "--out", out, "--device", "cpu"], capsys)
    assert (code, printed, err) == (2, "", f"cnnlab: error: cannot create folder {out}: {what}\n")
    assert (tmp_path / "afile").read_text() == "hi" and (tmp_path / "ff").is_fifo() and not (tmp_path / "gone").exists()


# ----------------------------------------------------------------------------- D3: the runs/ a refused command made


TRAIN = ["train", "--model", "basic_cnn", "--max-steps", "1", "--threads", "1", "--device", "cpu"]


def test_a_refused_train_leaves_no_runs_folder_it_made(tmp_path, monkeypatch, capsys):
    """newcomer D3. ``train --dataset idx:/nonexistent`` (and ``--teacher /nonexistent``) refused, rc 2, and left an
    empty ``runs/``: the run folder went (``engine._forget_if_empty``), its parent, made with it, stayed. Now
    ``RunPlan.made`` is the outermost folder made for the run and ``runs.remove_if_unused`` removes it while empty: runs/,
    a new ``--out a/b/c``'s ``a/``; a runs/ that was there, with another run in it, stays as it was."""
    monkeypatch.chdir(tmp_path)
    missing = ["--dataset", f"idx:{tmp_path / 'nowhere'}"]
    for extra in (missing, [*missing, "--out", "a/b/c"], ["--teacher", str(tmp_path / "nowhere.pt")]):
        code, out, err = run([*TRAIN, *extra], capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == [], err
    (tmp_path / "runs" / "other").mkdir(parents=True)
    code, out, err = run([*TRAIN, *missing], capsys)
    assert code == 2 and [p.name for p in (tmp_path / "runs").iterdir()] == ["other"]


def test_a_stopped_analysis_leaves_no_runs_folder_it_made(tiny_idx, tmp_path, monkeypatch, capsys):
    """newcomer D3, ``analyze gradients`` stopped (Ctrl-C, SIGTERM) before it wrote: its folder went, the runs/ made
    with it stayed; now both go (``cli.analyze._Folders``, ``runs.remove_if_unused``)."""
    from cnnlab.analysis import gradients

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gradients, "measure_stack", stopped)
    code, out, err = run(["analyze", "gradients", "--dataset", f"idx:{tiny_idx}", "--depths", "2", "--seeds", "1",
                          "--epochs", "0", "--device", "cpu"], capsys)
    assert code == 130 and not (tmp_path / "runs").exists(), err


def test_removed_if_unused_takes_the_folders_it_made_above(tmp_path):
    """The folders above a new --out of evaluate or compare, made with it, go with it when nothing was written
    (``runs.removed_if_unused``); one that holds something stays."""
    from cnnlab.fileio import make_dirs
    from cnnlab.runs import removed_if_unused

    (tmp_path / "x").mkdir()
    with pytest.raises(RuntimeError), removed_if_unused(tmp_path / "x" / "new" / "deeper" / "out"):
        make_dirs(tmp_path / "x" / "new" / "deeper" / "out")
        (tmp_path / "x" / "new" / "kept.txt").write_text("mine")
        raise RuntimeError
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["x", "x/new", "x/new/kept.txt"]


# ----------------------------------------------------------------------------- D2: cd DATA; train --dataset folder:.


def image_folder(root: Path, classes=("cats", "dogs"), n: int = 12) -> Path:
    """``root/<class>/<i>.png``: ``n`` small grey images a class."""
    from PIL import Image

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("L", (28, 28), 20 * i + 100 * c).save(root / name / f"{i}.png")
    return root


def inside(data: Path, named: str, top: str) -> str:
    return (f"cnnlab: error: {named} is inside folder:{data}, whose loads would take {top}/ for a class folder (empty "
            f"at first, then holding the figures written there); give --out a folder outside {data}, or a hidden one "
            "(--out .runs/NAME), which a folder: dataset never reads\n")


def test_train_from_inside_a_folder_dataset_says_what_to_do_every_time(tmp_path, monkeypatch, capsys):
    """newcomer D2. ``cd DATA && cnnlab train --dataset folder:.`` made runs/ in the dataset before reading it, then
    refused runs/ as an empty class folder (``add images or remove the folder``), and again after the folder was
    removed; a run that got through would have made its figures a class. Now the run's folder is refused where the
    dataset reads it, before any folder is made (``data.folder.check_not_read``, from ``engine.train``), the first
    time and every time, naming the fix; a hidden ``--out`` (never read) or one outside trains."""
    data = image_folder(tmp_path / "pets")
    monkeypatch.chdir(data)
    for _ in range(2):
        code, out, err = run([*TRAIN, "--dataset", "folder:.", "--quiet"], capsys)
        assert (code, out, err) == (2, "", inside(data, "runs/ (where a run goes without --out)", "runs"))
        assert sorted(p.name for p in data.iterdir()) == ["cats", "dogs"]
    code, out, err = run([*TRAIN, "--dataset", "folder:.", "--out", "mine/r1"], capsys)
    assert (code, err) == (2, inside(data, "--out mine/r1", "mine")) and not (data / "mine").exists()
    for out_dir in (".runs/r1", str(tmp_path / "r2"), ".runs/r3"):  # the second load reads the same two classes
        code, out, err = run([*TRAIN, "--dataset", "folder:.", "--quiet", "--out", out_dir], capsys)
        assert code == 0 and "final test accuracy" in out, err
    assert sorted(p.name for p in data.iterdir()) == [".runs", "cats", "dogs"]


def test_analyses_and_compare_are_refused_inside_a_folder_dataset_too(tmp_path, monkeypatch, capsys):
    """newcomer D2, the other commands that make folders under runs/ or --out: ``analyze gradients`` and ``compare``
    (whose runs would be read as a class by its next load), before any data is read."""
    data = image_folder(tmp_path / "pets")
    monkeypatch.chdir(data)
    code, out, err = run(["analyze", "gradients", "--dataset", "folder:.", "--depths", "2", "--epochs", "0"], capsys)
    assert (code, err) == (2, inside(data, "runs/ (where an analysis goes without --out)", "runs"))
    code, out, err = run(["compare", "--models", "basic_cnn", "--seeds", "1", "--dataset", f"folder:{data}",
                          "--out", "cmp"], capsys)
    assert (code, err) == (2, inside(data, "--out cmp", "cmp"))
    assert sorted(p.name for p in data.iterdir()) == ["cats", "dogs"]


def test_which_folders_a_folder_dataset_reads(tmp_path):
    """``data.folder.class_folder_of``: the class folder a load would take a path for, or None where it reads
    nothing of it (outside, the folder itself, hidden, beside train/ and test/, not a folder)."""
    from cnnlab.data.folder import class_folder_of

    auto, split = image_folder(tmp_path / "auto"), tmp_path / "split"
    image_folder(split / "train"), image_folder(split / "test")
    for data, path, want in [(auto, auto / "runs" / "r1", "runs"), (auto, auto / "cats" / "x", "cats"),
                             (auto, auto / "runs", "runs"), (auto, auto, None), (auto, tmp_path / "runs", None),
                             (auto, auto / ".runs" / "r1", None), (auto, auto / "runs" / ".r1", None),
                             (split, split / "runs" / "r1", None), (split, split / "train" / "runs", "train/runs"),
                             (split, split / "test", None), (tmp_path / "gone", tmp_path / "gone" / "runs", None)]:
        assert class_folder_of(data, path) == want, (data, path)


# ----------------------------------------------------------------------------- D4: --batch-size above the split


def test_a_batch_larger_than_the_train_split_is_refused(tiny_idx, tmp_path, monkeypatch, capsys):
    """newcomer D4. ``train --batch-size 100000`` (a typo for 1000) on MNIST's 60,000 took the whole split each step
    without a word: 79 s and 4.3 GB for one step of basic_cnn (resnet's --dry-run past 90 s and 6.6 GB), and
    ``analyze gradients --batch-size 99999999999999`` alike. Now a batch chosen above the train split is refused in
    one line naming its size, before any step (``engine._refuse_batch_beyond``, ``analyze_gradients``, both
    ``data.loader.batch_beyond``), and no folder is left."""
    monkeypatch.chdir(tmp_path)
    data = ["--dataset", f"idx:{tiny_idx}"]  # 256 train images
    code, out, err = run([*TRAIN, *data, "--batch-size", "300"], capsys)
    assert (code, out, err) == (2, "", "cnnlab: error: --batch-size 300 is more than the 256 images of the train "
                                       "split: each step would take them all; give at most 256\n")
    code, out, err = run([*TRAIN, *data, "--batch-size", "200", "--val-split", "0.25", "--dry-run"], capsys)
    assert code == 2 and err == ("cnnlab: error: --batch-size 200 is more than the 192 images of the train split "
                                 "less its --val-split 0.25: each step would take them all; give at most 192\n"), err
    code, out, err = run(["analyze", "gradients", *data, "--batch-size", "99999999999999", "--epochs", "0",
                          "--depths", "2", "--seeds", "1", "--device", "cpu"], capsys)
    assert code == 2 and err == ("cnnlab: error: --batch-size 99,999,999,999,999 is more than the 256 images of the "
                                 "train split: each step would take them all; give at most 256\n"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    code, out, err = run([*TRAIN, *data, "--batch-size", "256", "--quiet", "--out", "whole"], capsys)
    assert code == 0, err  # the whole split, asked for


def test_a_recipe_or_default_batch_above_a_small_split_takes_it_whole(tmp_path, monkeypatch, capsys):
    """The recipe's batch (64) or analyze's default one above a split of 40 images is no typo of the user's: each step
    takes the split whole, as before, and the API refuses a batch given above it in its own words."""
    import cnnlab
    from cnnlab.errors import CnnlabError

    monkeypatch.chdir(tmp_path)
    small = write_idx_dataset(tmp_path / "small", n_train=40, n_test=16)
    code, out, err = run([*TRAIN, "--dataset", f"idx:{small}", "--quiet", "--out", "r1"], capsys)
    assert code == 0 and "final test accuracy" in out, err
    code, out, err = run(["analyze", "gradients", "--dataset", f"idx:{small}", "--epochs", "0", "--depths", "2",
                          "--seeds", "1", "--device", "cpu", "--json", "--out", "g1"], capsys)
    assert code == 0 and '"batch_size": 40' in out, err
    with pytest.raises(CnnlabError, match=r"^batch_size=50 is more than the 40 images of the train split"):
        cnnlab.train(model="basic_cnn", dataset=f"idx:{small}", batch_size=50, max_steps=1, device="cpu",
                     out=tmp_path / "r2")
    assert not (tmp_path / "r2").exists()
