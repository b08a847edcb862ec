"""torchrun on CPU with gloo, loopback only, bounded in time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab.checkpoint import load_checkpoint
from cnnlab.runs import read_metrics

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, args: list[str], extra_env: dict | None = None, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", **(extra_env or {})}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"torchrun timed out:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-12000:]
    return out


def test_two_ranks_agree_and_match_one_process_with_the_same_global_batch(tiny_idx, tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    finish(torchrun(2, [str(HERE / "dist_worker.py"), f"idx:{tiny_idx}", str(two), "10", "32"]))
    r0, r1 = torch.load(two / "rank0.pt"), torch.load(two / "rank1.pt")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
    finish(torchrun(1, [str(HERE / "dist_worker.py"), f"idx:{tiny_idx}", str(one), "10", "32"]))
    single = torch.load(one / "rank0.pt")
    for k in r0:
        torch.testing.assert_close(r0[k], single[k], rtol=1e-4, atol=1e-5)


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def test_worker_killed_mid_run_restarts_and_finishes(tiny_idx, tmp_path):
    """20 epochs of 4 steps a rank: a worker is killed once 40 steps are saved, half way."""
    args = ["-m", "cnnlab", "train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--epochs", "20",
            "--batch-size", "32", "--device", "cpu", "--threads", "1", "--quiet", "--save-every", "4"]
    ref = tmp_path / "ref"
    finish(torchrun(2, [*args, "--out", str(ref)]))
    victim = tmp_path / "victim"
    proc = torchrun(2, ["--max-restarts=1", *args, "--out", str(victim)])
    deadline = time.time() + 120
    killed = None
    while time.time() < deadline and proc.poll() is None and killed is None:
        try:
            if load_checkpoint(victim / "last.pt")["train_state"]["step"] >= 40:
                workers = _children(proc.pid)
                if len(workers) == 2:
                    killed = max(workers)
                    os.kill(killed, signal.SIGKILL)
        except Exception:
            pass
        time.sleep(0.05)
    assert killed, "could not kill a worker mid-run"
    out = finish(proc)
    assert "resuming" in out, out[-2000:]
    a, b = read_metrics(ref / "metrics.csv"), read_metrics(victim / "metrics.csv")
    assert len(a) == len(b) == 20
    assert b[-1]["test_acc"] == pytest.approx(a[-1]["test_acc"], abs=0.5)
    assert b[-1]["test_loss"] == pytest.approx(a[-1]["test_loss"], rel=0.02, abs=1e-3)


def test_killed_twice_inside_checkpoint_saves_still_finishes_like_an_uninterrupted_run(tiny_idx, tmp_path):
    """Rank 0 is SIGKILLed inside a save of last.pt (after the sidecar names the new file, before the file is
    renamed into place) on the first two attempts; torchrun restarts the group each time, it resumes from
    the checkpoint on disk, and the run ends with the metrics of a run that was never killed.

    Neither launch names --out: each launch gets a fresh folder of its own under runs/, and the restarts of
    one launch resume that launch's folder."""
    args = ["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--epochs", "4", "--batch-size", "32",
            "--device", "cpu", "--threads", "1", "--quiet", "--save-every", "3"]
    finish(torchrun(2, ["-m", "cnnlab", *args], cwd=tmp_path))
    (ref,) = (tmp_path / "runs").iterdir()
    out = finish(torchrun(2, ["--max-restarts=2", str(HERE / "fault_worker.py"), "last.pt:before-rename:2", "--",
                              *args], extra_env={"FAULT_ATTEMPTS": "0,1"}, cwd=tmp_path))
    assert out.count("resuming") == 2, out[-3000:]
    (victim,) = set((tmp_path / "runs").iterdir()) - {ref}  # one more folder, however often it restarted
    assert "torchrun" in ref.name and "torchrun" in victim.name
    assert out.count(f"resuming {Path('runs', victim.name)}") == 2, out[-3000:]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]  # noqa: E731
    assert strip(read_metrics(victim / "metrics.csv")) == strip(read_metrics(ref / "metrics.csv"))
    a, b = load_checkpoint(ref / "last.pt")["state_dict"], load_checkpoint(victim / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(victim.glob(".*.tmp"))
