"""``cnnlab analyze``'s writes: one writer per folder, nothing into a run it does not speak for, the table before
the files, and a cap on the training budget."""

from __future__ import annotations

import errno
import shutil

import pytest

from conftest import HeldElsewhere
from cnnlab.analysis import gradients as gr
from cnnlab.cli import main
from cnnlab.errors import CnnlabError, WriteError
from cnnlab.runs import RunLock

GRAD = ["analyze", "gradients", "--depths", "2", "--width", "2", "--seeds", "1", "--epochs", "0", "--device", "cpu"]


def _train_inception(tmp_path, data_dir):
    out = tmp_path / "inc"
    assert main(["train", "--model", "inception", "--dataset", f"idx:{data_dir}", "--epochs", "1", "--batch-size",
                 "64", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    return out


def _held(folder, name):
    lock = RunLock(folder)
    lock.path = folder / name
    return lock.acquire()


def test_a_second_analysis_into_one_folder_is_refused(tiny_idx, tmp_path, capsys):
    out = tmp_path / "cc"
    out.mkdir()
    with HeldElsewhere(out, ".analysis.lock"):  # another analysis writing there
        code = main([*GRAD, "--dataset", f"idx:{tiny_idx}", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "in use by another cnnlab process" in err
    assert not (out / "gradients.json").exists()


def test_branches_write_nothing_into_a_run_still_training_or_of_another_dataset(tiny_idx, tmp_path, capsys):
    run = _train_inception(tmp_path, tiny_idx)
    capsys.readouterr()
    with RunLock(run):  # its training holds the run's lock
        assert main(["analyze", "branches", str(run), "--train-images", "64", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "zeroed acc" in out and "still training" in out and "--out" in out
    assert not (run / "branches.json").exists() and not (run / "branches.png").exists()
    other = shutil.copytree(tiny_idx, tmp_path / "other")  # the same images under another dataset's name
    assert main(["analyze", "branches", str(run), "--dataset", f"idx:{other}", "--train-images", "64",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "zeroed acc" in out and "nothing written" in out and "not the dataset the run trained on" in out
    assert not (run / "branches.json").exists()
    assert main(["analyze", "branches", str(run), "--train-images", "64", "--device", "cpu"]) == 0
    assert (run / "branches.json").is_file()  # its own: written, as before


def test_an_unwritable_out_is_refused_before_computing(tiny_idx, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")

    def computed(*a, ready=lambda: None, **k):
        ready()  # the output folder is locked once the arguments and data are checked, before any computing
        raise AssertionError("computed before finding the folder unwritable")

    monkeypatch.setattr(gr, "analyze_gradients", computed)
    code = main([*GRAD, "--dataset", f"idx:{tiny_idx}", "--out", str(tmp_path / "file" / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "file" in err


def test_a_full_disk_keeps_the_table_and_says_what_was_written(tiny_idx, tmp_path, capsys, monkeypatch):
    from cnnlab.analysis import plots

    def full(result, path):
        raise WriteError(f"cannot write {path}: No space left on device; free some disk space", errno.ENOSPC)

    monkeypatch.setattr(plots, "plot_depth", full)
    out = tmp_path / "g"
    code = main([*GRAD, "--dataset", f"idx:{tiny_idx}", "--out", str(out)])
    cap = capsys.readouterr()
    assert code == 1 and "first-layer grad norm" in cap.out
    assert "wrote gradients.json, gradients.png" in cap.err and "not depth.png" in cap.err
    assert cap.err.count("\n") == 1 and (out / "gradients.json").is_file()


def test_the_training_budget_has_a_cap():
    ok = dict(norm="none", width=2, seeds=1, batch_size=8, train_images=0, test_images=0, lr=0.01, momentum=0.5)
    gr._check_gradient_arguments([2], epochs=gr.MAX_EPOCHS if hasattr(gr, "MAX_EPOCHS") else 1, **ok)
    with pytest.raises(CnnlabError, match=r"--epochs must be in 0\.\.\d+"):
        gr._check_gradient_arguments([2], epochs=1_000_000_000, **ok)


def test_many_depths_get_ticks_that_do_not_overlap_and_no_crowded_value_labels():
    # found by a tester: --depths 2,4,...,40 wrote every depth under a log axis ("2628303234...") and a value beside
    # every point; with --epochs 0 the accuracy panel said "after 0 epoch(s)" beside "not trained"
    import math

    from cnnlab.analysis.plots import MOST_LABELLED, _thinned

    ticks = _thinned(list(range(2, 41, 2)))
    assert ticks[0] == 2 and ticks[-1] == 40 and len(ticks) <= 10
    gaps = [math.log2(b) - math.log2(a) for a, b in zip(ticks, ticks[1:])]
    assert min(gaps) >= 0.5 * (math.log2(40) - math.log2(2)) / 9
    assert _thinned([2, 4, 8, 16]) == [2, 4, 8, 16] and MOST_LABELLED >= 4
