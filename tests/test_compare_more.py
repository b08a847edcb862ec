"""`cnnlab compare`: what its table says about the runs' threads, and the default folder of a dataset given as a path."""

from __future__ import annotations

import torch

from cnnlab.cli import main
from cnnlab.compare import compare, default_out
from cnnlab.config import TrainConfig
from conftest import write_idx_dataset


def _header(out) -> str:
    return next(line for line in (out / "comparison.md").read_text().splitlines() if line.startswith("torch "))


def test_the_comparison_names_the_threads_its_runs_trained_with(tiny_idx, tmp_path):
    """Found by a tester: `compare ... --threads 1` run twice: the second time (the runs reused) comparison.md said
    `2 CPU threads` (torch's threads when the file was written) beside timings measured at 1. It says the threads
    the runs trained with, from their config.json."""
    base = TrainConfig(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=1, batch_size=32, device="cpu", lr=0.05,
                       threads=1)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        out = tmp_path / "cmp"
        compare(["basic_cnn"], 1, base, out, log=lambda m: None)
        assert ", 1 CPU thread in training." in _header(out)
        logs = []
        compare(["basic_cnn"], 1, base, out, log=logs.append)  # reused
        assert any("reused" in line for line in logs)
        assert ", 1 CPU thread in training." in _header(out) and "3 CPU threads" not in _header(out)
    finally:
        torch.set_num_threads(before)


def test_threads_of_runs_that_differ_are_given_per_model():
    """Runs reused from compares of other --threads: each model's threads are named, not one figure for all."""
    from cnnlab.compare import threads_text

    default = torch.get_num_threads()
    assert threads_text({"resnet": {"threads": [1, 1]}, "inception": {"threads": [1]}}) == "1 CPU thread in training"
    assert threads_text({"resnet": {"threads": [0]}}) == f"{default:,} CPU thread{'s' if default != 1 else ''} " \
                                                         "(torch's default) in training"
    assert threads_text({"resnet": {"threads": [1, 2]}, "inception": {"threads": [0]}}) == \
        f"CPU threads in training: resnet 1/2, inception {default} (torch's default)"
    assert threads_text({"resnet": {"threads": [None]}}) == "CPU threads unknown (not in the runs' config.json)"


def test_two_idx_datasets_get_a_default_compare_folder_each(tmp_path, monkeypatch, capsys):
    """Found by a tester: `compare --dataset idx:small` and `--dataset idx:small2` both wrote
    runs/compare-idx-lecture/, each replacing the other's comparison. The default folder names the dataset's folder,
    with a short hash of its absolute path; the same folder, however typed, is the same compare."""
    monkeypatch.chdir(tmp_path)
    write_idx_dataset(tmp_path / "small", seed=1)
    write_idx_dataset(tmp_path / "small2", seed=2)
    one, two = default_out("idx:small", "lecture"), default_out("idx:small2", "lecture")
    assert one != two and one.name.startswith("compare-idx-small-") and two.name.startswith("compare-idx-small2-")
    assert one == default_out(f"idx:{tmp_path / 'small'}/", "lecture") == default_out("idx:./small", "lecture")
    assert default_out("folder:small", "best").name.startswith("compare-folder-small-")
    assert default_out("mnist", "best").as_posix() == "runs/compare-mnist-best"  # catalog names as before
    assert default_out("fashion-mnist", "lecture").as_posix() == "runs/compare-fashion-mnist-lecture"
    for name in ("small", "small2"):
        assert main(["compare", "--models", "basic_cnn", "--seeds", "1", "--epochs", "1", "--batch-size", "32",
                     "--dataset", f"idx:{name}", "--device", "cpu"]) == 0
    capsys.readouterr()
    tables = [(tmp_path / folder / "comparison.md").read_text() for folder in (one, two)]
    assert f"{tmp_path / 'small'}:" in tables[0].splitlines()[0] and f"{tmp_path / 'small2'}:" in tables[1].splitlines()[0]
    for name in ("x y", "ä/../weird name!"):  # a folder name that is no good folder-name part is made one
        assert all(c.isalnum() or c in "._-" for c in default_out(f"idx:{name}", "lecture").name)
