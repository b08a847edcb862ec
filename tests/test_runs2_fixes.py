"""Issue 'runs2' (s38): a FIFO or a folder named last.pt never hangs the listing; a checkpoint altered in place (same
size, zeroed, appended) is listed damaged, as evaluate refuses it; evaluate of a run killed during a save writes its
report; a signal during a run's last step writes its result; SIGTERM/SIGHUP before the loop clean up like SIGINT."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

import cnnlab.trainer
from conftest import tiny_config
from cnnlab import observers as obs
from cnnlab.cli import main
from cnnlab.engine import train
from cnnlab.errors import Interrupted
from cnnlab.runs import describe_run, run_problem

QUIET = dict(quiet=True, log=lambda m: None)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _in_a_process(code: str, *args) -> list[str]:
    """``code`` run in a child process (a hang there fails the test instead of hanging the suite)."""
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=ENV,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


# ----------------------------------------------------------------------------- 1. not a regular file


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_fifo_or_a_folder_named_last_pt_is_listed_damaged_without_hanging(finished, kind):
    (finished / "last.pt").unlink()
    if kind == "fifo":
        os.mkfifo(finished / "last.pt")
    else:
        (finished / "last.pt").mkdir()
    code = ("import sys, json, cnnlab; from pathlib import Path; from cnnlab.runs import run_problem; "
            "rows = cnnlab.list_runs(sys.argv[1]); print(json.dumps([rows[0]['status'], rows[0]['detail'], run_problem(Path(sys.argv[2]))]))")
    status, detail, problem = json.loads(_in_a_process(code, finished.parent, finished)[-1])
    what = "a FIFO (named pipe)" if kind == "fifo" else "a folder"
    assert status == "damaged" and detail.startswith(f"last.pt: {what}, not a file"), detail
    assert "remove it" in detail and "check its permissions" not in detail
    assert problem.startswith(f"last.pt: {what}, not a file")


def test_a_fifo_named_best_pt_does_not_hang_cnnlab_runs(finished):
    (finished / "best.pt").unlink()
    os.mkfifo(finished / "best.pt")
    code = "import sys; from cnnlab.cli import main; sys.exit(main(['runs', '--root', sys.argv[1]]))"
    lines = _in_a_process(code, finished.parent)
    assert any("damaged (best.pt: a FIFO (named pipe), not a file" in line for line in lines), lines


# ----------------------------------------------------------------------------- 2. altered in place


def _flip_middle(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:]


def _zero_middle(data: bytes) -> bytes:
    mid, n = len(data) // 4, min(199_000, len(data) // 2)
    return data[:mid] + bytes(n) + data[mid + n:]


@pytest.mark.parametrize("alter", [_flip_middle, _zero_middle, lambda data: data + b"x" * 1000],
                         ids=["flipped", "zeroed", "appended"])
def test_a_checkpoint_altered_in_place_is_listed_damaged_as_evaluate_refuses_it(finished, alter, capsys):
    path = finished / "last.pt"
    data = path.read_bytes()
    path.write_bytes(alter(data))
    row = describe_run(finished)
    assert row["status"] == "damaged" and row["detail"].startswith("last.pt: altered"), row
    assert run_problem(finished).startswith("last.pt: altered")
    capsys.readouterr()
    assert main(["evaluate", str(finished)]) != 0  # what evaluate says of it, as before
    path.write_bytes(data)
    assert describe_run(finished)["status"] == "finished" and run_problem(finished) == ""


def test_a_sidecar_listing_two_hashes_or_none_is_no_damage(finished):
    path, side = finished / "last.pt", finished / "last.pt.sha256"
    real = hashlib.sha256(path.read_bytes()).hexdigest()
    side.write_text(f"{'0' * 64}  last.pt\n{real}  last.pt\n")  # a save in flight: either hash
    assert describe_run(finished)["status"] == "finished"
    side.write_text(f"{real}  last.pt\n{'0' * 64}  last.pt\n")
    assert describe_run(finished)["status"] == "finished"
    side.unlink()
    path.write_bytes(_flip_middle(path.read_bytes()))  # no sidecar: no check of the bytes (the zip is whole)
    assert describe_run(finished)["status"] == "finished"


# ----------------------------------------------------------------------------- 3. evaluate after a killed save


def test_evaluate_writes_the_report_of_a_run_killed_during_a_checkpoint_save(finished, capsys):
    path, side = finished / "last.pt", finished / "last.pt.sha256"
    real = hashlib.sha256(path.read_bytes()).hexdigest()
    side.write_text(f"{'a' * 64}  last.pt\n{real}  last.pt\n")  # the new hash, never written, and the file's
    (finished / "summary.json").unlink()
    capsys.readouterr()
    assert main(["evaluate", str(finished)]) == 0
    out = capsys.readouterr().out
    assert "changed while it was evaluated" not in out and "wrote summary.json" in out, out
    assert (finished / "summary.json").is_file()


# ----------------------------------------------------------------------------- 4. a signal during the last step


def _signal_during_step(monkeypatch, signum: int, which: int) -> None:
    """Send this process ``signum`` during the ``which``-th optimiser step (counted from 1): after its work, before
    the observers' after_step, as a signal that lands while the step computes."""
    real, calls = cnnlab.trainer.Trainer.train_step, []

    def step(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == which:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(cnnlab.trainer.Trainer, "train_step", step)


@pytest.mark.parametrize("signum, epochs, batch_size, which", [(signal.SIGTERM, 1, 256, 1), (signal.SIGINT, 2, 64, 8)])
def test_a_signal_during_the_runs_last_step_writes_its_result(tiny_idx, tmp_path, monkeypatch, signum, epochs,
                                                             batch_size, which):
    """One step in all (the whole train set in a batch), or the last of two epochs' steps: the run's result is
    written, then the run stops with 128+signal (it was "interrupted at step 1 (epoch 2, batch 0/1)", stopped)."""
    cfg = tiny_config(tiny_idx, epochs=epochs, batch_size=batch_size)
    run = tmp_path / "run"
    _signal_during_step(monkeypatch, signum, which)
    with pytest.raises(Interrupted) as caught:
        train(cfg, out=run, **QUIET)
    assert caught.value.exit_code == 128 + signum
    assert "its result is written" in str(caught.value) and "interrupted at step" not in str(caught.value)
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert (run / "summary.json").is_file() and describe_run(run)["status"] == "finished"


def _group_trainer(epoch: int, batch: int, step: int, others: int):
    stops = []
    ranks = SimpleNamespace(all_reduce_max=lambda value, device: max(value, others))
    return SimpleNamespace(state=SimpleNamespace(epoch=epoch, batch=batch, step=step), cfg=SimpleNamespace(epochs=2),
                           steps_per_epoch=8, stop_reason=None, ranks=ranks, device="cpu",
                           request_stop=stops.append), stops


@pytest.mark.parametrize("mine", [True, False])
def test_under_torchrun_a_signal_agreed_at_the_last_epochs_end_does_not_stop_the_run(mine):
    """The group's agreement at the last epoch's end turned the signal into a stop at "epoch 2, batch 0/8": the
    signal is kept (the engine stops after the result), whichever rank took it."""
    stop = obs.SignalStop(silent=True, group=True)
    try:
        t, stops = _group_trainer(epoch=1, batch=8, step=15, others=0 if mine else signal.SIGINT)
        if mine:
            stop.signum = signal.SIGINT  # taken during the last step
        stop.after_step(t)
        t.state.epoch, t.state.batch = 2, 0  # end_epoch moved on
        stop.after_epoch(t, {}, None, False)
        assert stops == [] and stop.signum == signal.SIGINT and stop.training_over
        t, stops = _group_trainer(epoch=1, batch=7, step=14, others=signal.SIGINT)  # before its last step: a stop
        fresh = obs.SignalStop(silent=True, group=True)
        fresh.after_step(t)
        fresh.after_epoch(t, {}, None, False)
        fresh.close()
        assert stops == ["signal"]
    finally:
        stop.close()


# ----------------------------------------------------------------------------- 5. SIGTERM/SIGHUP before the loop

EARLY = textwrap.dedent("""
    import os, signal, sys, time
    import cnnlab.engine as engine
    real = engine.build_trainer
    def build_trainer(*args, **kwargs):  # the run's folder is made and locked: the moment before the loop
        os.kill(os.getpid(), int(sys.argv[1]))
        time.sleep(0.5)
        return real(*args, **kwargs)
    engine.build_trainer = build_trainer
    from cnnlab.cli import main
    sys.exit(main(["train", "--model", "basic_cnn", "--dataset", "idx:" + sys.argv[2], "--epochs", "1", "--device",
                   "cpu", "--threads", "1", "--quiet", "--out", sys.argv[3]]))
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_before_the_loop_removes_the_fresh_folder(tiny_idx, tmp_path, signum):
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-c", EARLY, str(int(signum)), str(tiny_idx), str(run)], capture_output=True,
                         text=True, env=ENV, timeout=120, preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))
    assert out.returncode == 128 + signum, (out.returncode, out.stderr)
    assert not run.exists(), sorted(p.name for p in run.iterdir())
    err = out.stderr.strip()
    assert err.count("\n") == 0 and err.startswith(f"cnnlab: {signal.Signals(signum).name} before training began")


def test_an_ignored_sighup_stays_ignored(tiny_idx, tmp_path):
    """Under nohup: SIGHUP changes nothing, the run trains to its end."""
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-c", EARLY, str(int(signal.SIGHUP)), str(tiny_idx), str(run)],
                         capture_output=True, text=True, env=ENV, timeout=120,
                         preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "status.json").read_text())["status"] == "finished"


# ----------------------------------------------------------------------------- 6. wording after --max-steps


def test_a_signal_after_a_step_limit_does_not_say_the_run_finished(tiny_idx, tmp_path, capsys):
    run = tmp_path / "run"
    sent = []

    def log(line: str) -> None:
        if str(line).startswith("final test accuracy") and not sent:
            sent.append(line)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as caught:
        train(tiny_config(tiny_idx, epochs=2, max_steps=2), out=run, quiet=True, log=log)
    assert caught.value.exit_code == 130
    message, err = str(caught.value), capsys.readouterr().err
    assert "its training has ended and its result is written" in message and "finished" not in message
    assert "the run's training has ended; writing its result" in err and "finished" not in err
    assert json.loads((run / "status.json").read_text())["status"] == "stopped"
