"""distD (s45): torchrun groups whose ranks loaded other data, a second join in one process, a stop's evaluation
counted as training time, a CLI note said by every rank, and commands that do not run in a group."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from cnnlab.checkpoint import load_checkpoint
from cnnlab.runs import read_metrics
from conftest import tiny_config, two_ranks, write_idx_dataset
from test_distributed import torchrun


def finish(proc: subprocess.Popen, timeout: float = 150) -> str:
    """torchrun's output once it exited 0; past ``timeout``, torchrun is stopped with SIGTERM, which it passes on to
    its workers (a SIGKILL left them running, holding the pipe: the test waited for ever)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"torchrun timed out:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-6000:]
    return out


def _shift_train_labels(directory: Path) -> None:
    """The same images and as many labels, each train label moved to the next class."""
    path = directory / "train-labels-idx1-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:8] + bytes((b + 1) % 10 for b in raw[8:]))


def _cut_train_split(directory: Path, n: int) -> None:
    """The first ``n`` train images and labels of the split (another version of the same files)."""
    images, labels = directory / "train-images-idx3-ubyte", directory / "train-labels-idx1-ubyte"
    raw = images.read_bytes()
    images.write_bytes(raw[:4] + n.to_bytes(4, "big") + raw[8:16] + raw[16:16 + n * 28 * 28])
    raw = labels.read_bytes()
    labels.write_bytes(raw[:4] + n.to_bytes(4, "big") + raw[8:8 + n])


def test_ranks_that_loaded_other_data_are_refused_in_one_line_each_before_any_step(tmp_path):
    """D1: each rank's idx:data from its own folder: other sizes aborted rank 1 in C++ (gloo::EnforceNotMet,
    SIGABRT); the same sizes with other labels trained without a word, config.json naming rank 0's data alone."""
    cases = {"sizes": "the number of train images, the train images' mean and their spread differ (128 train / 64 "
                      "test images against 256 / 64)",
             "labels": "the train images or labels differ"}
    for case, said in cases.items():
        folders = [tmp_path / case / "m0", tmp_path / case / "m1"]
        for folder in folders:
            write_idx_dataset(folder / "data")
        (_cut_train_split if case == "sizes" else lambda d, n: _shift_train_labels(d))(folders[1] / "data", 128)
        out = tmp_path / case / "run"
        r0, r1 = two_ranks(folders, [["train", "--model", "basic_cnn", "--dataset", "idx:data", "--epochs", "1",
                                      "--batch-size", "32", "--device", "cpu", "--threads", "1", "--quiet",
                                      "--out", str(out)]] * 2)
        for rank, done in enumerate((r0, r1)):
            assert done.returncode == 2 and done.stderr.count("\n") == 1, (case, rank, done.stderr, done.stdout)
        line = (f"the group's processes loaded other data: rank 1's data (idx:{folders[1] / 'data'}) is not rank 0's "
                f"(idx:{folders[0] / 'data'}): {said}; give every process the same data (the same files in each "
                "machine's cache, --data-dir or idx:/folder: directory)\n")
        assert r0.stderr == f"cnnlab: error: {line}", r0.stderr
        assert r1.stderr == f"cnnlab: error: rank 1: {line}", r1.stderr
        assert "step" not in r0.stdout and not out.exists(), (r0.stdout, list(out.iterdir()) if out.exists() else None)


def test_a_process_alone_gathers_without_a_collective(monkeypatch):
    """D1: the ranks' comparison costs a process alone nothing: its own value back, no collective called."""
    import torch.distributed

    from cnnlab.distributed import Dist

    def no_collective(*args, **kwargs):
        raise AssertionError("a collective in a process alone")

    monkeypatch.setattr(torch.distributed, "all_gather_object", no_collective)
    assert Dist().all_gather({"train_size": 3}) == [{"train_size": 3}]


def test_a_second_training_in_one_torchrun_worker_joins_its_group_again(tiny_idx, tmp_path):
    """D2: every join of a process used torchrun's store under one prefix: the second or third cnnlab.train of a script
    under torchrun met the first one's keys and failed in gloo's connectFullMesh or waited until CNNLAB_JOIN_TIMEOUT,
    then blamed the launch. A training refused after its join (a batch that does not divide over the group) left the
    group open, and the next one's join was torch's "trying to initialize the default process group twice"."""
    script = tmp_path / "three.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from cnnlab.config import TrainConfig
        from cnnlab.engine import train
        from cnnlab.errors import CnnlabError

        def run(seed, batch=32):
            cfg = TrainConfig(model="basic_cnn", dataset="idx:{tiny_idx}", epochs=1, batch_size=batch, device="cpu",
                              lr=0.05, max_steps=2, threads=1, seed=seed, eval_limit=32)
            return train(cfg, write=False, quiet=True, log=lambda m: None)

        def say(line):  # one write a line: the ranks share the pipe
            sys.stdout.write(f"rank {{os.environ['RANK']}} {{line}}\\n")
            sys.stdout.flush()

        try:
            run(0, batch=33)
        except CnnlabError as err:
            say(f"refused: {{err}}")
        for seed in (0, 1, 2):
            say(f"seed {{seed}} trained {{run(seed).final.n}}")
        os._exit(0)
    """))
    out = finish(torchrun(2, [str(script)], {"CNNLAB_JOIN_TIMEOUT": "20"}), timeout=150)
    for rank in (0, 1):
        assert f"rank {rank} refused: --batch-size 33 is the global batch" in out, out[-3000:]
        for seed in (0, 1, 2):
            assert f"rank {rank} seed {seed} trained 64" in out, out[-3000:]


def test_a_reduction_returns_once_glooss_thread_has_let_go_of_its_tensor():
    """D2: gloo's worker thread freed a reduction's tensor after the caller had its result, taking the GIL to do it;
    the end of a training, freeing its DDP wrapper (whose group's destructor joins that thread, the GIL held) in the
    meantime, waited for it for ever (5 of 16 launches of a script that trained three times under torchrun hung)."""
    import threading

    import torch

    from cnnlab import distributed

    t = torch.zeros(3, dtype=torch.float64)
    held = [t.view(3)]  # another holder of the tensor, as the thread's finished work is
    threading.Timer(0.3, held.clear).start()
    start = time.monotonic()
    distributed._let_go(t)
    assert 0.25 < time.monotonic() - start < distributed.LET_GO_WAIT_S and t._use_count() == 1


def test_a_stops_evaluation_is_not_counted_as_training_time(tiny_idx, tmp_path, monkeypatch):
    """D3: a run stopped by --max-steps recorded its stop's evaluation in the epoch's seconds (last.pt's elapsed,
    summary.json's train_seconds), and the resumed epoch said 14.1 s and 427 img/s for what takes 1.7 s; the
    weights and losses were right, and stay bit for bit so."""
    import cnnlab.trainer
    from cnnlab.engine import train

    real, pause = cnnlab.trainer.evaluate, 2.0

    def slow(*args, **kwargs):  # an evaluation of a large split: seconds, and none of it training
        time.sleep(pause)
        return real(*args, **kwargs)

    cfg = dict(max_steps=0, threads=1, eval_limit=0)
    train(tiny_config(tiny_idx, **cfg), out=tmp_path / "u", quiet=True, log=lambda m: None)
    monkeypatch.setattr(cnnlab.trainer, "evaluate", slow)
    train(tiny_config(tiny_idx, **{**cfg, "max_steps": 3}), out=tmp_path / "s", quiet=True, log=lambda m: None)
    state = load_checkpoint(tmp_path / "s" / "last.pt")["train_state"]
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert state["step"] == 3 and 0 < state["elapsed"] < pause, state["elapsed"]
    assert summary["train_seconds"] == state["elapsed"]
    monkeypatch.setattr(cnnlab.trainer, "evaluate", real)
    train(tiny_config(tiny_idx), resume=tmp_path / "s", quiet=True, log=lambda m: None)
    (whole,), (resumed,) = read_metrics(tmp_path / "u" / "metrics.csv"), read_metrics(tmp_path / "s" / "metrics.csv")
    assert resumed["seconds"] < pause, resumed
    assert {k: v for k, v in resumed.items() if k not in ("seconds", "images_per_s")} == \
        {k: v for k, v in whole.items() if k not in ("seconds", "images_per_s")}
    a, b = (load_checkpoint(tmp_path / r / "last.pt")["state_dict"] for r in ("u", "s"))
    assert all((a[k] == b[k]).all() for k in a)


def test_a_note_of_the_command_line_is_said_by_rank_0_alone(tiny_idx, tmp_path, monkeypatch, capsys):
    """D4: under torchrun every rank printed `note: RUN/config.json: its data folder (...) is not there ...`."""
    from cnnlab.cli import train as cli_train

    cfg = tiny_config(tiny_idx, dataset="mnist", data_dir=str(tmp_path / "gone"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, notes in (("1", 0), ("0", 1)):
        monkeypatch.setenv("RANK", rank)
        cfg.data_dir = str(tmp_path / "gone")
        cli_train._settle_recorded_data_dir(cfg, set(), "a/config.json", "mnist")
        assert cfg.data_dir is None  # dropped on every rank: each loads the data from its cache
        assert capsys.readouterr().out.count("note: a/config.json: its data folder") == notes


@pytest.mark.parametrize("command", [
    ["evaluate", "RUN"], ["compare", "--models", "basic_cnn", "--seeds", "1", "--out", "OUT"],
    ["export", "RUN", "--format", "torchscript", "--out", "OUT"], ["predict", "RUN", "x.png"], ["serve", "RUN"],
    ["analyze", "branches", "RUN"]])
def test_a_command_that_runs_in_one_process_is_refused_in_a_group(command, tmp_path, monkeypatch, capsys):
    """D5: `torchrun -m cnnlab evaluate RUN` evaluated in every process, each writing the run's summary.json and
    figures; `compare` trained its first run in both, then hung in the second's join, leaving a folder."""
    from cnnlab.cli import main

    run = tmp_path / "run"
    run.mkdir()
    argv = [str(run) if a == "RUN" else str(tmp_path / "out") if a == "OUT" else a for a in command]
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, prefix in (("1", "cnnlab: error: rank 1: "), ("0", "cnnlab: error: ")):
        monkeypatch.setenv("RANK", rank)
        assert main(argv) == 2
        err = capsys.readouterr().err
        name = " ".join(command[:2] if command[0] == "analyze" else command[:1])
        assert err.startswith(f"{prefix}cnnlab {name} runs in one process, and this is one of a torchrun group "
                              "(WORLD_SIZE=2)") and err.count("\n") == 1, err
    assert list(run.iterdir()) == [] and not (tmp_path / "out").exists()


def test_compare_under_torchrun_is_refused_by_every_rank_before_any_work(tiny_idx, tmp_path):
    """D5 (and D2's compare): refused on each rank in one line, no folder made, nothing trained."""
    proc = torchrun(2, ["-m", "cnnlab", "compare", "--models", "basic_cnn", "--seeds", "2", "--epochs", "1",
                        "--dataset", f"idx:{tiny_idx}", "--threads", "1", "--out", str(tmp_path / "cmp")],
                    {"CNNLAB_JOIN_TIMEOUT": "10"})
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun passes it on to its workers (a SIGKILL would leave them running)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    lines = [line for line in out.splitlines() if line.startswith("cnnlab: ")]
    refusal = ("cnnlab compare runs in one process, and this is one of a torchrun group (WORLD_SIZE=2); run it without "
               "torchrun (only cnnlab train trains in a group: torchrun ... -m cnnlab train, one run at a time)")
    # each rank that says it before torchrun stops the group (at the first rank's exit) says it, once
    assert lines and set(lines) <= {f"cnnlab: error: {refusal}", f"cnnlab: error: rank 1: {refusal}"}, out
    assert len(lines) == len(set(lines)), out
    assert not (tmp_path / "cmp").exists() and "trained" not in out
