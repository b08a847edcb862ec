"""(fixR, s44.) Resumes that were killed, refused or resumed from an earlier epoch (the train probe's D1-D5): a folder
killed before its config.json, what a resume records in config.json before it saved anything (its epochs, its
processes, its threads), a batch that does not divide over a resume's processes, and TensorBoard's events after a
resume from an earlier checkpoint. docs/reliability.md lists them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import main
from cnnlab.distributed import Dist
from cnnlab.engine import train
from cnnlab.runs import describe_run, read_metrics

from conftest import tiny_config

HERE = Path(__file__).parent
QUIET = dict(quiet=True, log=lambda m: None)
ARGS = ["--model", "basic_cnn", "--batch-size", "32", "--lr", "0.05", "--device", "cpu", "--threads", "1", "--quiet"]


def record(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def killed_at(fault: str, *args: str) -> None:
    """``cnnlab ARGS`` SIGKILLed at the write boundary ``fault`` (tests/fault_worker.py)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(HERE / "fault_worker.py"), fault, "--", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_checkpoint(a), load_checkpoint(b)
    return x["train_state"]["step"] == y["train_state"]["step"] and all(
        torch.equal(v, y["state_dict"][k]) for k, v in x["state_dict"].items())


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


# ----------------------------------------------------------------------------- D2 and D4


def test_a_resume_that_extends_a_run_killed_before_its_first_save_leaves_the_run_as_it_was(tiny_idx, tmp_path, capsys):
    """``--resume RUN --epochs 2`` killed in its first new epoch: config.json said 2 epochs (and this process's
    threads) while last.pt said 1; the listing showed 1/2 and "it resumes", and the plain resume trained nothing and
    wrote the 1 back."""
    data = ["--dataset", f"idx:{tiny_idx}"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main(["train", *ARGS, *data, "--epochs", "2", "--out", str(ref)]) == 0
    assert main(["train", *ARGS, *data, "--epochs", "1", "--out", str(run)]) == 0
    kept = (run / "config.json").read_bytes()
    killed_at("metrics.csv:before-rename:1", "train", "--resume", str(run), "--epochs", "2", "--threads", "2", "--quiet")
    assert (run / "config.json").read_bytes() == kept  # its epochs, processes and threads: the run's, as before
    row = describe_run(run)
    assert (row["epochs"], row["epochs_done"], row["status"]) == (1, 1, "stopped")
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0  # what config.json says: a finished run, re-evaluated
    assert "already finished its 1 epoch; nothing to train" in capsys.readouterr().out
    assert (record(run)["config"]["epochs"], record(run)["cpu_threads"]) == (1, [1])
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    assert same_weights(ref / "last.pt", run / "last.pt") and record(run)["config"]["epochs"] == 2
    kept_columns = ("epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc", "lr")
    assert [[r[k] for k in kept_columns] for r in read_metrics(run / "metrics.csv")] == [
        [r[k] for k in kept_columns] for r in read_metrics(ref / "metrics.csv")]


def test_an_extension_whose_first_checkpoint_is_saved_is_continued_by_a_plain_resume(tiny_idx, tmp_path):
    """Killed between the first checkpoint of ``--resume RUN --epochs 2`` and its config.json: last.pt holds the
    extension, and the plain resume goes on to it (before, config.json was written at the resume's start, and a kill
    there left a last.pt of 1 epoch under a config.json of 2)."""
    data = ["--dataset", f"idx:{tiny_idx}"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main(["train", *ARGS, *data, "--epochs", "2", "--save-every", "4", "--out", str(ref)]) == 0
    assert main(["train", *ARGS, *data, "--epochs", "1", "--save-every", "4", "--out", str(run)]) == 0
    killed_at("config.json:before-rename:1", "train", "--resume", str(run), "--epochs", "2", "--quiet")
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 12  # the part's first save (--save-every 4)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert same_weights(ref / "last.pt", run / "last.pt") and record(run)["config"]["epochs"] == 2


def test_a_kill_between_a_lengthening_resumes_first_row_and_its_last_pt_is_put_right_by_the_plain_resume(
        tiny_idx, tmp_path, capsys):
    """The one window left: the first new epoch's metrics.csv row is written before its last.pt (and config.json
    after it), so a kill between them leaves a row past the epochs config.json says, which ``runs`` calls damage. The
    plain resume from last.pt makes metrics.csv its history again (it re-evaluated, and the row stayed)."""
    data = ["--dataset", f"idx:{tiny_idx}"]
    run = tmp_path / "run"
    assert main(["train", *ARGS, *data, "--epochs", "1", "--out", str(run)]) == 0
    killed_at("last.pt:before-rename:1", "train", "--resume", str(run), "--epochs", "2", "--quiet")
    assert len(read_metrics(run / "metrics.csv")) == 2 and describe_run(run)["status"] == "damaged"
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    row = describe_run(run)
    assert (row["epochs"], row["epochs_done"], row["status"]) == (1, 1, "finished")


def test_a_killed_resume_is_listed_with_its_own_step_limit(tiny_idx, tmp_path):
    """The listing's command for a resume killed before it saved anything is that process's ``--max-steps`` (its
    status.json's "running" record), not the run's earlier limit in config.json: ``--max-steps 3`` for a run at step 3
    continued nothing, and with config.json written at the first save it would have replaced ``--max-steps 6``."""
    data = ["--dataset", f"idx:{tiny_idx}"]
    run = tmp_path / "run"
    assert main(["train", *ARGS, *data, "--epochs", "2", "--max-steps", "3", "--out", str(run)]) == 0
    killed_at("last.pt:before-rename:1", "train", "--resume", str(run), "--max-steps", "6", "--quiet")
    assert describe_run(run)["detail"].endswith(f"(continue with: cnnlab train --resume {run} --max-steps 6)")
    killed_at("last.pt:before-rename:1", "train", "--resume", str(run), "--quiet")
    assert describe_run(run)["detail"] == "killed, or interrupted without saying so: it resumes from last.pt"
    assert record(run)["config"]["max_steps"] == 3


def test_a_resume_compares_its_processes_with_those_that_saved_the_checkpoint(tiny_idx, tmp_path, capsys):
    """A 2-process run's config.json said ``world_size: 1`` after a 1-process resume was killed before it saved
    anything; the next resume at 2 warned that it "will not end as it would have uninterrupted", and then did. Here
    the other way round: a config.json that says 2 over a last.pt one process saved."""
    run = tmp_path / "run"
    train(tiny_config(tiny_idx, max_steps=3, threads=1), out=run, **QUIET)
    (run / "config.json").write_text(json.dumps({**record(run), "world_size": 2}))
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--max-steps", "4"]) == 0
    assert "process" not in capsys.readouterr().out


def test_a_resume_that_only_re_evaluates_keeps_the_processes_and_threads_the_run_trained_in(tiny_idx, tmp_path):
    """A finished run re-evaluated in another process, at another thread count, recorded that process's count as
    the run's, which the next resume and ``--config RUN`` then warned of."""
    run = tmp_path / "run"
    train(tiny_config(tiny_idx, threads=1), out=run, **QUIET)
    (run / "config.json").write_text(json.dumps({**record(run), "world_size": 2}))  # as a 2-process run records it
    assert main(["train", "--resume", str(run), "--threads", "2", "--quiet"]) == 0
    assert (record(run)["world_size"], record(run)["cpu_threads"]) == (2, [1])


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


# ----------------------------------------------------------------------------- D5


def test_tensorboard_after_a_resume_from_an_earlier_epoch_holds_what_metrics_csv_holds(tiny_idx, tmp_path):
    """``--resume RUN/best.pt`` (or any earlier checkpoint) kept the old epochs' events beside the retrained ones: two
    points at each step after it, while metrics.csv is rewritten."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(tiny_config(tiny_idx, epochs=3, max_steps=8, tensorboard=True), out=run, **QUIET)  # epoch 1 ends at step 8
    shutil.copy(run / "last.pt", run / "epoch1.pt")
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert main(["train", "--resume", str(run / "epoch1.pt"), "--quiet"]) == 0  # epochs 2 and 3 again
    steps = [row["step"] for row in read_metrics(run / "metrics.csv")]
    assert steps == [8, 16, 24]
    files = sorted((run / "tensorboard").iterdir())
    points = []
    for path in files:
        events = EventAccumulator(str(path))
        events.Reload()
        points += [e.step for e in events.Scalars("seconds")]
    assert len(files) == 1 and points == steps
    folder = EventAccumulator(str(run / "tensorboard"))
    folder.Reload()
    assert [e.value for e in folder.Scalars("seconds")] == pytest.approx(  # the retrained epochs' (float32 there)
        [row["seconds"] for row in read_metrics(run / "metrics.csv")], rel=1e-5)
