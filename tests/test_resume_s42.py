"""What a resume keeps, found by the tester of session 42 (rprR): a resume without ``--threads`` (the command that
Ctrl-C, ``--max-steps`` and a failure print, ``cnnlab.train(resume=...)``) went on at torch's default, not at the
run's own count, said nothing, ended with other weights than the uninterrupted run and rewrote config.json's
``"threads"`` to 0; ``--device`` and ``--no-malloc-tuning`` were dropped the same way; an ``--eval-batch-size`` given
on a resume was recorded as the whole run's. docs/reliability.md lists them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cnnlab
import cnnlab.engine
from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import main

from test_reliability import assert_same_weights, weights

BASE = ["--model", "basic_cnn", "--batch-size", "32", "--lr", "0.05", "--epochs", "2", "--quiet"]


def trained(tiny_idx: Path, out: Path, *flags: str) -> Path:
    assert main(["train", *BASE, "--dataset", f"idx:{tiny_idx}", *flags, "--out", str(out)]) == 0
    return out


def record(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


@pytest.fixture
def default_threads():
    """torch's thread count, put back after the test (which sets it to play machines of other cores)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("how", ["cli", "api"])
def test_a_resume_without_threads_goes_on_at_the_runs_own_count_and_ends_bitwise(tiny_idx, tmp_path, capsys, how,
                                                                                  default_threads):
    torch.set_num_threads(2)  # torch's default of a 2-core machine: the run's own count is 1
    straight = trained(tiny_idx, tmp_path / "straight", "--threads", "1")
    run = trained(tiny_idx, tmp_path / "run", "--threads", "1", "--max-steps", "3")
    capsys.readouterr()
    if how == "cli":
        assert main(["train", "--resume", str(run), "--quiet"]) == 0  # what a stopped run's hint says
    else:
        assert cnnlab.train(resume=run, quiet=True).stopped == "finished"
    assert "CPU threads" not in capsys.readouterr().out
    assert_same_weights(weights(straight), weights(run))
    assert record(run)["cpu_threads"] == [1]
    assert record(run)["config"] == record(straight)["config"]  # "threads": 1, not rewritten to 0
    assert load_checkpoint(run / "last.pt")["config"]["threads"] == 1


def test_threads_given_on_a_resume_change_it_with_a_warning_and_are_recorded(tiny_idx, tmp_path, capsys,
                                                                              default_threads):
    run = trained(tiny_idx, tmp_path / "run", "--threads", "1", "--max-steps", "3")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--threads", "2", "--max-steps", "5", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert (f"warning: --resume {run}: that run trained at 1 CPU threads and this resume at 2, so it will not end as "
            "it would have uninterrupted: its figures may differ in their last digits; to go on at the run's own "
            "count, drop --threads 2") in said
    assert record(run)["config"]["threads"] == 2 and record(run)["cpu_threads"] == [1, 2]
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # its last part's count now: no warning
    assert "CPU threads" not in capsys.readouterr().out and record(run)["cpu_threads"] == [1, 2]
    run2 = trained(tiny_idx, tmp_path / "run2", "--threads", "1", "--max-steps", "3")
    capsys.readouterr()
    cnnlab.train(resume=run2, threads=2)  # the API names the run and the setting as its arguments
    said = capsys.readouterr().out
    assert f"warning: cnnlab.train(resume={str(run2)!r}): that run trained at 1 CPU threads" in said
    assert "drop threads=2" in said


def test_a_run_at_torchs_default_resumed_where_the_default_differs_goes_on_at_its_recorded_count(
        tiny_idx, tmp_path, capsys, default_threads):
    """A run at ``--threads 0`` (torch's default) records the count it trained at; resumed on a machine with more
    cores it goes on at that count (a note says so), and config.json still says 0."""
    torch.set_num_threads(1)  # the machine it trained on
    straight = trained(tiny_idx, tmp_path / "straight")
    run = trained(tiny_idx, tmp_path / "run", "--max-steps", "3")
    assert record(run)["cpu_threads"] == [1] and record(run)["config"]["threads"] == 0
    torch.set_num_threads(2)  # the resume's machine has more
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert (f"note: --resume {run}: the run trained at torch's default there, 1 CPU threads, and goes on at 1 so that "
            "it ends as it would have uninterrupted (torch's default here is 2: --threads 2 to use them") in said
    assert torch.get_num_threads() == 2  # the caller's count given back
    assert_same_weights(weights(straight), weights(run))
    assert record(run)["config"]["threads"] == 0 and record(run)["cpu_threads"] == [1]


def test_a_run_at_torchs_default_resumed_on_fewer_cpus_than_it_used_goes_on_at_the_default_and_says_so(
        tiny_idx, tmp_path, capsys, monkeypatch, default_threads):
    torch.set_num_threads(2)
    run = trained(tiny_idx, tmp_path / "run", "--max-steps", "3")
    torch.set_num_threads(1)
    monkeypatch.setattr(cnnlab.engine, "usable_cpus", lambda: 1)  # a 1-CPU machine: 2 threads were many times slower
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert (f"warning: --resume {run}: the run trained at torch's default there, 2 CPU threads, more than this "
            "process can use: it goes on at torch's default here, 1") in capsys.readouterr().out
    assert record(run)["cpu_threads"] == [2, 1]


def test_a_resume_keeps_the_runs_own_device_and_allocator_setting_unless_given(tiny_idx, tmp_path):
    run = trained(tiny_idx, tmp_path / "run", "--threads", "1", "--device", "cpu", "--no-malloc-tuning",
                  "--max-steps", "3")
    assert main(["train", "--resume", str(run), "--max-steps", "5", "--quiet"]) == 0
    for config in (record(run)["config"], load_checkpoint(run / "last.pt")["config"]):
        assert (config["device"], config["malloc_tuning"], config["threads"]) == ("cpu", False, 1)
    assert main(["train", "--resume", str(run), "--device", "auto", "--malloc-tuning", "--quiet"]) == 0
    assert (record(run)["config"]["device"], record(run)["config"]["malloc_tuning"]) == ("auto", True)


def test_an_eval_batch_size_given_on_a_resume_is_recorded_as_that_parts_own(tiny_idx, tmp_path, capsys):
    """``--resume RUN --eval-batch-size 7`` (allowed: it moves the evaluations' last digits, not the weights) was
    written into config.json as the whole run's, whose earlier evaluations ran at 1000; --resume's help did not name
    it."""
    run = trained(tiny_idx, tmp_path / "run", "--threads", "1", "--max-steps", "10")  # epoch 1 evaluated at 1000
    assert "eval_batch_sizes" not in record(run)
    assert main(["train", "--resume", str(run), "--eval-batch-size", "7", "--quiet"]) == 0
    assert record(run)["config"]["eval_batch_size"] == 7 and record(run)["eval_batch_sizes"] == [1000, 7]
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # a finished run re-evaluated, at its batch of 7
    assert record(run)["eval_batch_sizes"] == [1000, 7]
    assert main(["train", "--config", str(run), "--dry-run"]) == 0  # a re-run reads the record it wrote
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    helped = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert "--resume RUN_DIR continue the run" in helped
    assert "--tensorboard may be given" in helped and "--eval-batch-size moves only the evaluations' last digits" in helped


def test_a_resume_in_another_number_of_processes_takes_each_ones_default_threads_and_says_it_differs(
        tiny_idx, tmp_path, default_threads):
    """(atkT, s43.) A one-process run at torch's default (2 threads on a 2-CPU machine) resumed under torchrun with 2
    ranks set 2 threads in each (torchrun's OMP_NUM_THREADS=1 overridden): 4 threads on 2 CPUs, 10-40x slower, with a
    note that it ends as it would have uninterrupted, which another number of processes never does."""
    from types import SimpleNamespace

    from cnnlab.engine import ResumedThreads

    torch.set_num_threads(2)
    run = trained(tiny_idx, tmp_path / "run", "--max-steps", "3")
    assert record(run)["cpu_threads"] == [2] and record(run)["world_size"] == 1
    plan = SimpleNamespace(resume_from=run, run_dir=run)
    in_two = ResumedThreads.of(plan, 0, False, ranks=2)
    assert in_two.processes == (1, 2) and in_two.count() == 0  # each rank at torch's default (torchrun's: 1)
    assert in_two.note(1) is None
    assert in_two.lines(1) == [f"warning: --resume {run}: the run trained in 1 process and this resume in 2, so it "
                               "will not end as it would have uninterrupted (the gradients are summed in another "
                               "order); each process trains at 1 CPU thread"]
    given = ResumedThreads.of(plan, 1, True, ranks=2)  # --threads 1: no advice to drop it
    assert given.count() == 1 and "drop" not in " ".join(given.lines(1))
    assert ResumedThreads.of(plan, 0, False).count() == 2  # one process, as the run: its own count
