"""Faults and hostile use of a training run: kills in the save window, two processes on one folder, a diverging
loss, changed flags on resume, signals, full or read-only disks. Each test reproduces the fault first
(deterministic fault injection, no sleeps to hit a window) and checks that nothing is lost and that the user
gets one line. docs/reliability.md lists them."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import cnnlab.fileio
from conftest import HeldElsewhere
from cnnlab.checkpoint import load_checkpoint, load_state_dict_file, save_checkpoint, sidecar
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.engine import train
from cnnlab.errors import CheckpointError, RunError, WriteError
from cnnlab.runs import RunLock, read_metrics, torchrun_launch_id

HERE = Path(__file__).parent
QUIET = dict(quiet=True, log=lambda m: None)
ARGS = ["--model", "basic_cnn", "--epochs", "2", "--batch-size", "32", "--lr", "0.05", "--device", "cpu",
        "--threads", "1", "--quiet"]


def cfg_for(tiny_idx, **kw) -> TrainConfig:
    base = dict(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=2, batch_size=32, device="cpu", lr=0.05)
    return TrainConfig(**{**base, **kw})


def cnnlab_process(args: list[str], faults: tuple[str, ...] = (), **popen) -> subprocess.CompletedProcess:
    """``cnnlab ARGS`` in a fresh process, killed by SIGKILL at the given write boundaries (tests/fault_worker.py)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(HERE / "fault_worker.py"), *faults, "--", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, **popen)


def weights(run: Path) -> dict:
    return load_checkpoint(run / "last.pt")["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------- kills while saving


def test_two_kills_in_the_save_window_then_a_resume_end_bitwise_like_an_uninterrupted_run(tiny_idx, tmp_path):
    """The sweep's reproducer: killed just before last.pt is renamed into place (the sidecar already lists
    the new hash), then twice more on resumes, then a plain resume: it loads and ends bitwise the same."""
    data = ["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--save-every", "3"]
    straight = tmp_path / "straight"
    train(cfg_for(tiny_idx, threads=1, save_every=3), out=straight, **QUIET)
    run = tmp_path / "run"
    first = cnnlab_process([*data, "--out", str(run)], ("last.pt:before-rename:2",))
    assert first.returncode == -signal.SIGKILL
    for _ in range(2):  # each resume is killed at its first save, in the same window
        again = cnnlab_process(["train", "--resume", str(run), "--threads", "1", "--quiet"],
                               ("last.pt:before-rename:1",))
        assert again.returncode == -signal.SIGKILL, again.stderr[-2000:]
    assert leftovers(run)  # the killed writes left their temp files behind...
    # as `cnnlab train --resume RUN --threads 1`: the threads are the process's (a run no longer leaves its own to
    # the caller, so this resume ran at torch's default of 2 and summed in another order)
    assert train(TrainConfig(threads=1), resume=run, **QUIET).stopped == "finished"
    assert_same_weights(weights(straight), weights(run))
    assert leftovers(run) == []  # ...and the next saves removed them
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]  # noqa: E731
    assert strip(read_metrics(straight / "metrics.csv")) == strip(read_metrics(run / "metrics.csv"))


@pytest.mark.parametrize("fault", ["last.pt:mid-write:2", "last.pt:after-rename:2", "last.pt.sha256:before-rename:3",
                                   "last.pt.sha256:after-rename:3", "last.pt.sha256:before-rename:4",
                                   "last.pt.sha256:after-rename:4", "best.pt:before-rename:1"])
def test_a_kill_at_any_write_boundary_leaves_a_checkpoint_that_resumes(tiny_idx, tmp_path, fault):
    data = ["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--save-every", "3"]
    run = tmp_path / "run"
    assert cnnlab_process([*data, "--out", str(run)], (fault,)).returncode == -signal.SIGKILL
    load_checkpoint(run / "last.pt")  # loads: the old file or the whole new one, and its hash is listed
    assert train(TrainConfig(), resume=run, **QUIET).stopped == "finished"  # as `cnnlab train --resume RUN`
    assert load_checkpoint(run / "last.pt")["train_state"]["epoch"] == 2 and leftovers(run) == []


BOUNDARIES = [("last.pt.sha256", 1), ("last.pt", 1), ("last.pt.sha256", 2)]  # the three writes of one save


@pytest.mark.parametrize("first", range(7))
@pytest.mark.parametrize("second", range(7))
def test_any_two_interrupted_saves_in_a_row_leave_a_loadable_checkpoint(tmp_path, monkeypatch, first, second):
    """Every pair of interruption points (before or after each of a save's three renames, or none) over two
    saves in a row, then an untouched load: the file on disk is always listed by its sidecar."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"state_dict": {"w": torch.zeros(3)}})
    real = os.replace

    def interrupting(point: int):
        calls = []

        def replace(src, dst):  # point 2k: before the k-th rename; 2k+1: after it; 6: no interruption
            calls.append(dst)
            k = len(calls) - 1
            if point == 2 * k:
                raise KeyboardInterrupt
            real(src, dst)
            if point == 2 * k + 1:
                raise KeyboardInterrupt

        return replace

    for value, point in ((1.0, first), (2.0, second)):
        monkeypatch.setattr(cnnlab.fileio.os, "replace", interrupting(point))
        try:
            save_checkpoint(path, {"state_dict": {"w": torch.full((3,), value)}})
        except KeyboardInterrupt:
            pass
        monkeypatch.setattr(cnnlab.fileio.os, "replace", real)
        got = load_checkpoint(path)["state_dict"]["w"]
        assert got[0] in (0.0, 1.0, 2.0)
    save_checkpoint(path, {"state_dict": {"w": torch.full((3,), 3.0)}})
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.full((3,), 3.0))
    assert len(sidecar(path).read_text().splitlines()) == 1


def test_a_bit_flip_is_refused_even_without_the_sidecar(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"state_dict": {"w": torch.arange(1000, dtype=torch.float32)}})
    sidecar(path).unlink()
    raw = bytearray(path.read_bytes())
    at = raw.find(torch.arange(1000, dtype=torch.float32)[500:502].numpy().tobytes())
    raw[at] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="do not match the digest"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- whose folder is it


def test_a_run_folder_belongs_to_one_process(tiny_idx, tmp_path):
    run = tmp_path / "run"
    with HeldElsewhere(run):  # another process's training holds it
        with pytest.raises(RunError, match="in use by another cnnlab process"):
            train(cfg_for(tiny_idx), out=run, **QUIET)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing of the refused run was written
    # a resume of a run that is training now says how to resume it (it said "pick another --out", which a resume
    # has not)
    train(cfg_for(tiny_idx, max_steps=1), out=tmp_path / "half", **QUIET)
    with HeldElsewhere(tmp_path / "half"):
        with pytest.raises(RunError, match=r"in use by another cnnlab process \(pid \d+\); it is training now; let it "
                                           r"finish, or stop it \(Ctrl\+C where it runs, or kill \d+\) and resume then: "
                                           r"cnnlab train --resume .*half$"):
            train(cfg_for(tiny_idx), resume=tmp_path / "half", **QUIET)


def test_the_kernel_releases_the_lock_of_a_killed_process(tmp_path):
    run = tmp_path / "run"
    code = f"from cnnlab.runs import RunLock; import os, signal; RunLock({str(run)!r}).acquire(); " \
           "os.kill(os.getpid(), signal.SIGKILL)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == -signal.SIGKILL
    RunLock(run).acquire().release()


def test_a_new_run_into_a_folder_that_holds_a_run_is_refused(tiny_idx, tmp_path, capsys):
    run = tmp_path / "run"
    train(cfg_for(tiny_idx, epochs=1), out=run, **QUIET)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code = main(["train", "--model", "resnet", "--dataset", f"idx:{tiny_idx}", "--epochs", "1", "--device", "cpu",
                 "--out", str(run), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "already holds a run" in err and "--resume" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_new_run_is_not_scattered_among_other_files(tiny_idx, tmp_path, monkeypatch, capsys):
    """'--out .' in a folder of notes (or '--out /' as root) wrote config.json, last.pt, ... among them."""
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("mine")
    (mine / "photos").mkdir()
    monkeypatch.chdir(mine)
    args = ["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--epochs", "1", "--device", "cpu",
            "--quiet"]
    assert main([*args, "--out", "."]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out . is a folder with other files in it (photos, todo.txt)" in err
    assert sorted(p.name for p in mine.iterdir()) == ["photos", "todo.txt"]
    # a run's own files (a run killed before its first checkpoint) and hidden files do not count
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.json").write_text("{}")
    (killed / ".DS_Store").write_text("")
    assert main([*args, "--out", str(killed)]) == 0 and (killed / "last.pt").is_file()


def test_a_failed_start_leaves_no_empty_run_folder(tiny_idx, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", f"idx:{tmp_path / 'missing'}", "--device", "cpu"]) == 2
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    import cnnlab.runs  # a full disk when the lock is taken: writing its pid was an OSError traceback

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cnnlab.runs.os, "pwrite", full)
    capsys.readouterr()
    assert main(["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--out", str(tmp_path / "run")]) == 2
    assert "run/.lock: No space left on device; free some disk space" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_each_torchrun_launch_gets_its_own_folder_that_its_restarts_find():
    assert torchrun_launch_id({"TORCHELASTIC_RUN_ID": "exp 1"}) == "exp_1"  # --rdzv-id: shared by all machines
    here = torchrun_launch_id({"TORCHELASTIC_RUN_ID": "none"})
    assert here == torchrun_launch_id({}) and str(os.getppid()) in here  # the same agent: the same folder
    code = "from cnnlab.runs import torchrun_launch_id; print(torchrun_launch_id({}))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip()
    assert other and other != here  # another launch (another agent process): another folder


# ----------------------------------------------------------------------------- divergence


def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_finite_checkpoint(tiny_idx, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--model", "resnet", "--dataset", f"idx:{tiny_idx}", "--lr", "1e6", "--epochs", "3",
                 "--batch-size", "32", "--device", "cpu", "--save-every", "2", "--out", str(run), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "diverged" in err and "at step" in err and "lower --lr" in err
    if (run / "last.pt").exists():  # saved before the loss went bad: finite
        assert "last finite checkpoint" in err
        assert all(torch.isfinite(v).all() for v in weights(run).values())
    for f in run.glob("*.json"):
        json.loads(f.read_text())  # strict JSON everywhere (no bare NaN)


def test_divergence_is_found_without_a_host_sync_per_step(tiny_idx, monkeypatch):
    """The running loss is read every 100 steps and before saves and evaluations, never each step."""
    from cnnlab.trainer import Trainer

    reads, real = [], Trainer.check_finite
    monkeypatch.setattr(Trainer, "check_finite", lambda self: reads.append(self.state.step) or real(self))
    res = train(cfg_for(tiny_idx, epochs=4), write=False, **QUIET)
    assert res.history[-1]["step"] == 32
    assert len(reads) <= 3 * 4 + 1  # per epoch: its evaluation, its row, its (unwritten) save; the final test


# ----------------------------------------------------------------------------- resume


def test_resume_refuses_changed_run_defining_flags_and_takes_process_flags(tiny_idx, tmp_path, capsys):
    run = tmp_path / "run"
    train(cfg_for(tiny_idx, epochs=1, max_steps=3), out=run, **QUIET)
    code = main(["train", "--resume", str(run), "--lr", "0.01", "--model", "resnet", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--lr 0.01" in err and "--model resnet" in err
    assert main(["train", "--resume", str(run), "--threads", "1", "--quiet", "--lr", "0.05"]) == 0  # same value: fine


def test_a_resume_at_or_past_its_step_limit_trains_nothing(tiny_idx, tmp_path, capsys):
    """``--resume RUN --max-steps 3`` of a run already at step 3 (or 5) took one more step each time."""
    run = tmp_path / "run"
    train(cfg_for(tiny_idx, epochs=2, max_steps=5), out=run, **QUIET)
    before = load_checkpoint(run / "last.pt")
    for limit in ("5", "3"):
        capsys.readouterr()
        assert main(["train", "--resume", str(run), "--max-steps", limit, "--quiet"]) == 0
        assert f"is already at step 5 (--max-steps {limit}); nothing to train" in capsys.readouterr().out
        after = load_checkpoint(run / "last.pt")
        assert after["train_state"]["step"] == 5
        assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    assert main(["train", "--resume", str(run), "--max-steps", "7", "--quiet"]) == 0
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 7


def test_resume_with_more_epochs_extends_a_finished_constant_schedule_run(tiny_idx, tmp_path, capsys):
    run = tmp_path / "run"
    train(cfg_for(tiny_idx, epochs=1), out=run, **QUIET)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")] == [1, 2]
    straight = train(cfg_for(tiny_idx, epochs=2), out=tmp_path / "straight", **QUIET)
    assert_same_weights(straight.model.state_dict(), weights(run))
    capsys.readouterr()
    onecycle = tmp_path / "onecycle"
    train(cfg_for(tiny_idx, epochs=1, schedule="onecycle"), out=onecycle, **QUIET)
    assert main(["train", "--resume", str(onecycle), "--epochs", "2", "--quiet"]) == 2
    assert "cannot be extended" in capsys.readouterr().err
    clean = tmp_path / "clean"  # its last epoch was trained without augmentation: a longer run would augment it
    train(cfg_for(tiny_idx, epochs=2, augment="shift", clean_epochs=1), out=clean, **QUIET)
    assert main(["train", "--resume", str(clean), "--epochs", "3", "--quiet"]) == 2
    assert "without augmentation" in capsys.readouterr().err


def test_a_run_that_stopped_on_its_target_keeps_its_record(tiny_idx, tmp_path):
    run = tmp_path / "run"
    first = train(cfg_for(tiny_idx, epochs=30, target_accuracy=60.0, evals_per_epoch=2), out=run, **QUIET)
    assert first.target is not None
    again = train(TrainConfig(), resume=run, **QUIET)
    assert again.target == first.target and again.stopped == "nothing to train"
    assert json.loads((run / "summary.json").read_text())["target"] == json.loads(json.dumps(first.target))
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == first.target["step"]


# ----------------------------------------------------------------------------- signals


def test_a_signal_saves_the_position_and_says_how_to_resume(tiny_idx, tmp_path):
    """No --save-every: SIGINT (130) or SIGTERM (143) saves the partial epoch itself; the resume ends bitwise
    like a run that was never interrupted. (The signal comes after the first of 12 epochs: 11 are left to
    interrupt. The uninterrupted run and the resumes run in this process, at the same one thread.)"""
    args = ["train", "--dataset", f"idx:{tiny_idx}", *ARGS[:2], "--epochs", "12", *ARGS[4:]]
    straight = tmp_path / "straight"
    train(cfg_for(tiny_idx, epochs=12, threads=1), out=straight, **QUIET)
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        _interrupt_and_resume(args, tmp_path / f"run-{code}", sig, code)
        assert_same_weights(weights(straight), weights(tmp_path / f"run-{code}"))


def _interrupt_and_resume(args: list[str], run: Path, sig: int, code: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", *args, "--out", str(run)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "metrics.csv").exists():  # the first epoch is over
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err[-2000:]
    assert f"cnnlab train --resume {run}" in err and "position saved" in err
    assert load_checkpoint(run / "last.pt")["train_state"]["batch"] > 0  # the partial epoch was kept
    assert train(TrainConfig(threads=1), resume=run, **QUIET).stopped == "finished"  # at the straight run's threads


def _ignores_sigint(pid: int) -> bool:
    mask = next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("SigIgn:"))
    return bool(int(mask, 16) & (1 << (signal.SIGINT - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads a process's ignored signals in /proc")
def test_kill_int_to_a_background_run_before_its_loop_ends_it(tiny_idx, tmp_path):
    """A shell starts a background job (``cnnlab train ... &`` in a script) with SIGINT ignored; the training
    loop takes it, but ``kill -INT`` in the first ~1.3 s (torch's import, the data) was ignored and the run
    trained on. Now taken before torch's import: the process ends at once (130), nothing trained."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", "--dataset", f"idx:{tiny_idx}", *ARGS,
                             "--out", str(run)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and _ignores_sigint(proc.pid):
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "position saved" not in err and not (run / "last.pt").exists()


def test_a_closed_terminal_saves_the_position_but_nohup_is_obeyed():
    """SIGHUP (the terminal closed) stops a run as SIGTERM does; under ``nohup`` (SIGHUP ignored) it stays ignored."""
    from cnnlab.observers import SignalStop

    saved = signal.getsignal(signal.SIGHUP)
    try:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        stop = SignalStop()
        assert signal.getsignal(signal.SIGHUP) == stop._handle
        stop.close()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        stop = SignalStop()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN and signal.SIGPIPE in stop._saved
        stop.close()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, saved)


@pytest.mark.parametrize("when", ["before", "during"])
def test_a_closed_output_stops_the_run_like_a_signal_and_loses_nothing(tiny_idx, tmp_path, when):
    """``cnnlab train ... | head -1``: a line printed after the reader has gone fails (EPIPE, SIGPIPE). The run
    saves its position, says how to resume on stderr and exits 141 (as for SIGPIPE); the resume ends bitwise
    like a run whose output was never closed. (Before: a BrokenPipeError traceback, the epoch unsaved.) The
    reader goes before the run's first line, or after it (then the run may be at any step when it notices)."""
    args = ["train", "--dataset", f"idx:{tiny_idx}", *ARGS[:2], "--epochs", "6", *ARGS[4:-1]]  # not --quiet
    straight, run = tmp_path / "straight", tmp_path / "run"
    train(cfg_for(tiny_idx, epochs=6, threads=1), out=straight, **QUIET)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    read_end, write_end = os.pipe()
    if when == "before":
        os.close(read_end)
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", *args, "--out", str(run)], env=env,
                            stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    try:
        if when == "during":
            with os.fdopen(read_end) as reader:
                assert "parameters" in reader.readline()  # the first line; then the reader goes, as head -1 does
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    status = json.loads((run / "status.json").read_text())["status"]
    assert "Traceback" not in err
    if when == "during" and proc.returncode == 0:  # the 6 short epochs were over before the reader went
        assert status == "finished"
        return
    assert proc.returncode == 141 and status == "stopped", err[-2000:]
    assert "output was closed" in err and f"cnnlab train --resume {run}" in err
    assert train(TrainConfig(threads=1), resume=run, **QUIET).stopped == "finished"  # at the straight run's threads
    assert_same_weights(weights(straight), weights(run))


# ----------------------------------------------------------------------------- the disk


def _fail_writes_under(monkeypatch, folder: Path, err: int) -> None:
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise OSError(err, os.strerror(err))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_a_read_only_out_folder_is_one_line(tiny_idx, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _fail_writes_under(monkeypatch, run, errno.EROFS)
    code = main(["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"cannot write {run}" in err and "writable" in err


def test_a_read_only_disk_under_a_new_nested_folder_names_the_folder_that_exists(tmp_path, monkeypatch):
    """``mkdir -p`` of ``ro/a/b`` on a read-only mount fails at ``ro/a``: the message said to make ``ro/a/b``
    writable, a folder that is not there; it names ``ro``, the one to change."""
    from cnnlab.errors import WriteError
    from cnnlab.fileio import atomic_write_bytes

    ro = tmp_path / "ro"
    ro.mkdir()

    def mkdir(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(WriteError) as caught:
        atomic_write_bytes(ro / "a" / "b" / "x.json", b"{}")
    assert f"make {ro} writable" in str(caught.value)


def test_a_figure_that_cannot_be_written_is_a_warning_not_a_failed_run(tiny_idx, tmp_path, monkeypatch, capsys):
    """A disk that fills up as the figures are written (a 2 MB tmpfs, tried by hand): the run was marked failed
    with exit 2 after its checkpoint and summary.json had been written."""
    import cnnlab.plots
    from cnnlab.errors import WriteError

    def full(*args, **kwargs):
        raise WriteError("cannot write confusion.png: No space left on device; free some disk space", errno.ENOSPC)

    monkeypatch.setattr(cnnlab.plots, "plot_confusion", full)
    run = tmp_path / "run"
    assert main(["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "cnnlab: warning: report incomplete: wrote summary.json" in err and "not confusion.png" in err
    assert "cannot write confusion.png: No space left on device" in err
    assert f"'cnnlab evaluate {run}' draws the figures again" in err
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert (run / "summary.json").is_file() and (run / "last.pt").is_file()
    import cnnlab  # the API's quiet prints nothing at all, this warning neither

    cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", epochs=1, batch_size=32, lr=0.05, device="cpu", threads=1,
                 out=tmp_path / "quiet", quiet=True)
    assert capsys.readouterr() == ("", "")


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tiny_idx, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(cfg_for(tiny_idx, epochs=1), out=run, **QUIET)
    before = weights(run)
    _fail_writes_under(monkeypatch, run, errno.ENOSPC)
    with pytest.raises(WriteError, match="No space left on device; free some disk space"):
        train(TrainConfig(), resume=run, changes={"epochs": 2}, **QUIET)
    monkeypatch.undo()
    assert_same_weights(before, weights(run))  # still the epoch-1 checkpoint, and it loads
    assert leftovers(run) == []



def test_evaluate_in_a_read_only_run_folder_still_gives_its_accuracy(tiny_idx, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    train(cfg_for(tiny_idx, epochs=1), out=run, **QUIET)
    _fail_writes_under(monkeypatch, run, errno.EACCES)
    assert main(["evaluate", str(run)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[-1].startswith(f"idx:{tiny_idx} test set (64 images)") and "accuracy" in out
    assert err.count("\n") == 1 and "no report written: cannot write" in err
    code = main(["export-weights", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot write" in err and "writable" in err


def test_a_device_fifo_or_folder_is_never_replaced_by_a_file(tmp_path):
    """``cnnlab export --out /dev/full`` as root replaced the device with a plain file (the temp file was renamed
    over it), and ``/dev/stdout`` is a link to such a thing. Now refused in one line, the thing untouched. (Shown
    here on a FIFO, a folder and a link to the FIFO: a test must not risk a real device.)"""
    fifo, folder = tmp_path / "fifo", tmp_path / "folder"
    os.mkfifo(fifo)
    folder.mkdir()
    (tmp_path / "link").symlink_to(fifo)
    named_pipe = r"a FIFO \(named pipe\)"
    for path, kind in ((fifo, named_pipe), (folder, "a directory"), (tmp_path / "link", named_pipe)):
        with pytest.raises(WriteError, match=f"cannot write .*: it is {kind}, not a file; give the path of a file"):
            cnnlab.fileio.atomic_write_bytes(path, b"x")
    assert fifo.is_fifo() and folder.is_dir() and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder", "link"]  # no temp file left
    code = main(["export", "--pretrained", "resnet", "--out", str(fifo)])
    assert code == 2 and fifo.is_fifo()
    with pytest.raises(CheckpointError, match="folder: a directory, not a weights file; give the .pt"):
        load_state_dict_file(folder)  # was "no such weights file"
    with pytest.raises(CheckpointError, match="fifo: a FIFO .named pipe., not a checkpoint"):
        load_checkpoint(fifo)


def test_resuming_after_the_image_folder_gained_a_class_is_one_line(tmp_path, capsys):
    """A class folder added to ``folder:DIR`` after the run trained: resume was load_state_dict's size mismatch."""
    from test_datasets_more import make_folder

    root = make_folder(tmp_path / "pics", per_class={"cat": 6, "dog": 6})
    run = tmp_path / "run"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"folder:{root}", "--epochs", "1", "--max-steps", "1",
                 "--device", "cpu", "--out", str(run), "--quiet"]) == 0
    make_folder(root, per_class={"cat": 6, "dog": 6, "eel": 6})
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has other classes than when the run trained (cat, dog, eel now, cat, dog then)" in err


def test_resuming_on_rewritten_data_is_refused_and_on_the_same_data_goes_on(tmp_path, capsys):
    """Found by probing: an ``idx:`` dataset rewritten with other images of the same classes between a run's
    first part and its resume: the resume trained on them without a word. A resume with other threads (whose
    float64 sums give the mean and std other last bits) must still go on."""
    from conftest import write_idx_dataset

    data, run = tmp_path / "data", tmp_path / "run"
    write_idx_dataset(data)
    base = ["train", "--model", "basic_cnn", "--dataset", f"idx:{data}", "--epochs", "2", "--device", "cpu", "--quiet"]
    assert main([*base, "--max-steps", "1", "--out", str(run), "--threads", "1"]) == 0
    write_idx_dataset(data, seed=5)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"idx:{data} is not the data the run trained on (the train images' mean, their spread and the test images or labels differ); put the data" in err
    write_idx_dataset(data)  # put back as it was
    assert main(["train", "--resume", str(run), "--quiet", "--threads", "2"]) == 0


def test_a_run_whose_data_folder_moved_resumes_from_its_new_place_bitwise(tmp_path, capsys):
    """Found by probing: an ``idx:`` folder moved after the run's first part: ``--resume`` said only "no such
    directory" and refused ``--dataset`` at the new place (a change to what the run is), so the run could not go on;
    ``evaluate`` said the same without naming the flag that fixes it."""
    import shutil

    from conftest import write_idx_dataset

    from cnnlab.checkpoint import load_checkpoint

    first, moved, other = tmp_path / "first", tmp_path / "moved", tmp_path / "other"
    write_idx_dataset(first)
    write_idx_dataset(other, seed=5)
    base = ["train", "--model", "basic_cnn", "--epochs", "2", "--device", "cpu", "--threads", "1", "--quiet"]
    assert main([*base, "--dataset", f"idx:{first}", "--out", str(tmp_path / "whole")]) == 0
    run = tmp_path / "run"
    assert main([*base, "--dataset", f"idx:{first}", "--max-steps", "3", "--out", str(run)]) == 0
    shutil.move(first, moved)
    capsys.readouterr()
    for argv, fix in ((["train", "--resume", str(run)], f"cnnlab train --resume {run} --dataset idx:NEW_DIR"),
                      (["evaluate", str(run)], f"cnnlab evaluate {run} --dataset idx:NEW_DIR")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"its dataset idx:{first} is not there (moved or deleted?); if it moved, give its new place: {fix}" in err
    assert main(["train", "--resume", str(run), "--dataset", f"idx:{other}", "--quiet"]) == 2  # not the same data
    assert "is not the data the run trained on" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--dataset", "mnist", "--quiet"]) == 2  # another kind: another run
    assert "would change it" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--dataset", f"idx:{moved}", "--threads", "1", "--quiet"]) == 0
    a, b = (load_checkpoint(tmp_path / name / "last.pt") for name in ("whole", "run"))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert b["config"]["dataset"] == f"idx:{moved}"


def test_a_refused_resume_leaves_the_runs_status_as_it_was(tiny_idx, tmp_path, capsys):
    """A resume refused before it restored anything (here: a flag that would change the run) wrote status.json
    'failed' over a finished run: `cnnlab runs` then listed a run that had finished as failed."""
    run = tmp_path / "r"
    assert main(["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--out", str(run)]) == 0
    status = (run / "status.json").read_bytes()
    assert json.loads(status)["status"] == "finished"
    assert main(["train", "--resume", str(run), "--lr", "0.5"]) == 2
    assert "would change it" in capsys.readouterr().err
    assert (run / "status.json").read_bytes() == status


def test_resuming_another_runs_checkpoint_inside_a_run_folder_is_refused(tiny_idx, tmp_path, capsys):
    """`--resume STUDENT/teacher.pt` (the copy a distilled run keeps of its teacher) trained the teacher on inside
    the student's folder and wrote it over the student's checkpoint, config and summary; a checkpoint of another
    run copied into a run folder did the same."""
    teacher, student = tmp_path / "t", tmp_path / "s"
    assert main(["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--epochs", "3", "--max-steps", "4",
                 "--out", str(teacher)]) == 0
    assert main(["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--model", "resnet", "--teacher", str(teacher),
                 "--out", str(student)]) == 0
    before = {p.name: p.read_bytes() for p in student.iterdir() if p.is_file() and p.name != ".lock"}
    (student / "other.pt").write_bytes((teacher / "last.pt").read_bytes())
    capsys.readouterr()
    assert main(["train", "--resume", str(student / "teacher.pt")]) == 2
    err = capsys.readouterr().err
    assert "the copy of this run's teacher, not the run's own checkpoint" in err and err.count("\n") == 1
    assert main(["train", "--resume", str(student / "other.pt")]) == 2
    err = capsys.readouterr().err
    assert "a checkpoint of another run (model 'basic_cnn', teacher None)" in err and err.count("\n") == 1
    (student / "other.pt").unlink()
    assert {p.name: p.read_bytes() for p in student.iterdir() if p.is_file() and p.name != ".lock"} == before
    assert main(["train", "--resume", str(student / "best.pt")]) == 0  # the run's own file still resumes


def test_a_step_limit_at_the_runs_own_last_step_finishes_it(tiny_idx, tmp_path):
    """--max-steps equal to the run's steps (2 epochs of 8) listed the run as stopped, 'resume to go on', after
    every epoch had trained; one step fewer is stopped, as before."""
    for limit, status in ((16, "finished"), (15, "stopped")):
        run = tmp_path / f"r{limit}"
        assert main(["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--max-steps", str(limit), "--out", str(run)]) == 0
        assert json.loads((run / "status.json").read_text())["status"] == status
