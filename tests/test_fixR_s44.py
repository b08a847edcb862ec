"""(fixR, s44.) Resumes that were killed, refused or resumed from an earlier epoch (the train probe's D1-D5): a folder
killed before its config.json, what a resume records in config.json before it saved anything (its epochs, its
processes, its threads), a batch that does not divide over a resume's processes, and TensorBoard's events after a
resume from an earlier checkpoint. docs/reliability.md lists them."""

from __future__ import annotations

import json
import os

import pytest

from cnnlab.cli import main
from cnnlab.distributed import Dist
from cnnlab.engine import train

from conftest import tiny_config

QUIET = dict(quiet=True, log=lambda m: None)


# ----------------------------------------------------------------------------- D1


@pytest.mark.parametrize("left", [(), ("teacher.pt", ".config.json.1a2b.tmp")])
def test_a_run_killed_before_its_config_json_is_named_and_started_again_with_its_command(tmp_path, capsys, left):
    """A folder cnnlab made for a run killed before it wrote config.json (its data, teacher or torchrun group still
    loading) held ``.lock status.json``; its resume said ``k7/last.pt: no such checkpoint; pass a run directory``."""
    run = tmp_path / "k7"
    run.mkdir()
    (run / ".lock").write_text("")
    (run / "status.json").write_text(json.dumps({"status": "running", "detail": "", "at": 0}) + "\n")
    for name in left:
        (run / name).write_bytes(b"x")
    before = sorted(os.listdir(run))
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err == (f"cnnlab: error: --resume {run}: the run was stopped before it saved anything (no config.json, no "
                   "last.pt), so there is no position to continue from; start it again: the command that started it, "
                   f"with --out {run}\n")
    assert sorted(os.listdir(run)) == [n for n in before if not n.endswith(".tmp")]  # the lock's clean-up, no more
    assert json.loads((run / "status.json").read_text())["status"] == "running"


def test_a_folder_with_files_of_its_own_is_still_no_checkpoint(tmp_path, capsys):
    run = tmp_path / "notes"
    run.mkdir()
    (run / "status.json").write_text("{}")
    (run / "notes.txt").write_text("mine")
    assert main(["train", "--resume", str(run)]) == 2
    assert "no such checkpoint; pass a run directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------- D3


def test_a_resume_in_processes_that_do_not_divide_the_runs_batch_names_a_count_that_does(tiny_idx, tmp_path,
                                                                                          monkeypatch, capsys):
    """torchrun --nproc_per_node 3 of a run with a global batch of 64: ``--batch-size 64 ... pick a multiple of
    3``, a flag the user never gave and a resume refuses."""
    run = tmp_path / "run"
    train(tiny_config(tiny_idx, batch_size=64, max_steps=2), out=run, **QUIET)
    kept = (run / "status.json").read_bytes()
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setattr(Dist, "init", lambda self, device, say=print: None)  # the group joined
    assert main(["train", "--resume", str(run)]) == 2
    assert capsys.readouterr().err == (
        f"cnnlab: error: --resume {run}: the run's global batch of 64 does not divide evenly over 3 processes; resume "
        f"it in a number of processes that divides 64 (1, 2, 4, 8, ...); as it trained: cnnlab train --resume {run}\n")
    assert (run / "status.json").read_bytes() == kept
