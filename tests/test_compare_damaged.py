"""``cnnlab compare`` over run folders whose files were damaged, deleted or replaced since the runs trained."""

from __future__ import annotations

import os

import pytest

from apps_helpers import deadline
from cnnlab.compare import compare
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.runs import check_output_folder, describe_run



def _base(tiny_idx) -> TrainConfig:
    return TrainConfig(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=2, batch_size=32, device="cpu", lr=0.05)


def _blank(csv: bytes, line: int, column: str) -> bytes:
    """``csv`` with one cell blanked, as cnnlab writes a None (and as an edit by hand leaves it)."""
    lines = csv.decode().split("\n")
    header = lines[0].split(",")
    cells = lines[line].split(",")
    cells[header.index(column)] = ""
    lines[line] = ",".join(cells)
    return "\n".join(lines).encode()


def _accuracies(out) -> list[str]:
    """The comparison's row up to its accuracies (the throughput's last digit may differ from the figure
    metrics.csv keeps to 6 digits)."""
    row = next(line for line in (out / "comparison.md").read_text().splitlines() if line.startswith("| basic_cnn |"))
    return row.split(" | ")[:5]


def test_compare_reads_a_runs_epochs_from_its_checkpoint_when_metrics_csv_is_blank_missing_or_cut_short(tiny_idx,
                                                                                                         tmp_path):
    """Found by probing: a blank cell in a reused run's metrics.csv was a TypeError traceback (a blank `seconds`:
    float + None; a blank `test_acc`: None > int); a deleted metrics.csv a FileNotFoundError traceback (the resume
    trains nothing, so it was not written again); one cut short mid-row was "damaged ... cnnlab writes it whole
    again when the run resumes", on every compare again, while the compare had just resumed it: no way out.
    Now the epochs come from last.pt's history (what metrics.csv is written from) and the file is written whole
    again, byte for byte as the training wrote it."""
    out, base = tmp_path / "cmp", _base(tiny_idx)
    compare(["basic_cnn"], 1, base, out, log=lambda m: None)
    run = next(out.glob("basic_cnn-seed0-*"))
    good, table = (run / "metrics.csv").read_bytes(), _accuracies(out)
    damages = {"a blank seconds cell": _blank(good, 2, "seconds"), "a blank test_acc cell": _blank(good, 2, "test_acc"),
               "the file deleted": None, "the file cut short mid-row": good[:good.rindex(b"\n", 0, -1) + 10]}
    for what, damage in damages.items():
        (run / "metrics.csv").unlink()
        if damage is not None:
            (run / "metrics.csv").write_bytes(damage)
        if what == "the file cut short mid-row":
            row = describe_run(run)  # 'cnnlab runs' said "0/2 ... finished"
            assert row["status"] == "damaged" and row["detail"].startswith("metrics.csv: damaged (line 3 has "), row
        logs = []
        compare(["basic_cnn"], 1, base, out, log=logs.append)
        assert any("metrics.csv" in m and "written again from last.pt" in m for m in logs), (what, logs)
        assert (run / "metrics.csv").read_bytes() == good, what
        assert _accuracies(out) == table, what
        logs.clear()
        compare(["basic_cnn"], 1, base, out, log=logs.append)  # whole again: reused as it is
        assert len(logs) == 1 and ": reused, final " in logs[0], (what, logs)
        assert describe_run(run)["status"] == "finished"


def test_a_fifo_in_a_compared_runs_folder_is_one_line_whose_advice_works(tiny_idx, tmp_path):
    """A FIFO where a run's file goes hung the compare (reading it waits for a writer)."""
    out, base = tmp_path / "cmp", _base(tiny_idx)
    compare(["basic_cnn"], 1, base, out, log=lambda m: None)
    run = next(out.glob("basic_cnn-seed0-*"))
    for name in ("metrics.csv", "summary.json", "status.json"):
        (run / name).unlink()
        os.mkfifo(run / name)
        with deadline(60), pytest.raises(CnnlabError) as err:
            compare(["basic_cnn"], 1, base, out, log=lambda m: None)
        message = str(err.value)
        assert "\n" not in message and f"{name}: is a FIFO (named pipe), not the file cnnlab writes there; remove it, " \
            "and run the same compare again" in message, message
        (run / name).unlink()  # as it says: the same compare then resumes the run, which writes its files again
        with deadline(120):
            compare(["basic_cnn"], 1, base, out, log=lambda m: None)
        assert describe_run(run)["status"] == "finished", name


def test_a_compare_folder_nested_in_another_does_not_stop_the_outer_compare(tmp_path):
    """Found by probing: a compare with --out inside another compare's folder made the outer compare refuse to run
    again ("is not a cnnlab report's folder (it holds 'inner')"), though all it holds is cnnlab's. The inner folder
    is a report's now; a file of the user's inside it is named itself."""
    outer = tmp_path / "cmp"
    for folder in (outer, outer / "inner"):
        (folder / "basic_cnn-seed0-0123abcd").mkdir(parents=True)
        (folder / "basic_cnn-seed0-0123abcd" / "config.json").write_text("{}")
        (folder / "comparison.md").write_text("# a table")
    (outer / "inner" / "resnet-seed0-4567cdef").mkdir()  # a run whose config.json is gone: still cnnlab's
    (outer / "inner" / "resnet-seed0-4567cdef" / "last.pt").write_bytes(b"x")
    check_output_folder(outer, None, writes=("comparison.md", "comparison.png"))
    (outer / "inner" / "notes.txt").write_text("mine")
    with pytest.raises(CnnlabError) as err:
        check_output_folder(outer, None, writes=("comparison.md", "comparison.png"))
    assert f"--out {outer} is not a cnnlab report's folder (it holds 'inner/notes.txt')" in str(err.value)


def test_a_finished_run_whose_checkpoint_is_cut_short_or_gone_is_not_reused(tiny_idx, tmp_path):
    """compare reused a run whose last.pt was truncated (or deleted): its figures stood in the table for weights that
    could no longer be evaluated, resumed or exported."""
    out = tmp_path / "cmp"
    compare(["basic_cnn"], 1, _base(tiny_idx), out, log=lambda m: None)
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    whole = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(whole[:1000])
    with pytest.raises(CnnlabError, match=r"cannot be reused: last.pt: cut short"):
        compare(["basic_cnn"], 1, _base(tiny_idx), out, log=lambda m: None)
    assert (run / "last.pt").read_bytes() == whole[:1000]  # nothing of it touched
    (run / "last.pt").unlink()
    with pytest.raises(CnnlabError, match=r"cannot be reused: last.pt: missing, the run finished"):
        compare(["basic_cnn"], 1, _base(tiny_idx), out, log=lambda m: None)


def test_seeds_beyond_a_thousand_are_refused_at_once(tiny_idx, tmp_path):
    with pytest.raises(CnnlabError, match=r"--seeds must be 1 to 1,000 \(seeds 0..N-1 per model\), got 100,000,000"):
        compare(["basic_cnn"], 100_000_000, _base(tiny_idx), tmp_path / "cmp", log=lambda m: None)
