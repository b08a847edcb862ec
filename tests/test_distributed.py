"""torchrun on CPU with gloo, loopback only, bounded in time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from cnnlab.checkpoint import load_checkpoint
from cnnlab.distributed import Dist, PeerLost
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


def test_an_augmented_group_trains_on_the_images_one_process_trains_on(tiny_idx, tmp_path):
    """Each rank drew its own augmentation (seed + rank): a 2-process --augment run trained on other images than
    1 process at the same global batch (a tester: 62.89% against 62.11%, weights 0.0057 apart)."""
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    spec = "shift+affine:rotate=10+erase:p=0.5"
    finish(torchrun(2, [str(HERE / "dist_worker.py"), f"idx:{tiny_idx}", str(two), "8", "32", spec]))
    finish(torchrun(1, [str(HERE / "dist_worker.py"), f"idx:{tiny_idx}", str(one), "8", "32", spec]))
    r0, single = torch.load(two / "rank0.pt"), torch.load(one / "rank0.pt")
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
    # the rank that outlived its killed peer says so in a line; no rank dies in gloo's threads at exit
    assert "Traceback" not in out and "terminate called" not in out and "SIGABRT" not in out, out[-6000:]
    (victim,) = set((tmp_path / "runs").iterdir()) - {ref}  # one more folder, however often it restarted
    assert "torchrun" in ref.name and "torchrun" in victim.name
    assert out.count(f"resuming {Path('runs', victim.name)}") == 2, out[-3000:]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]  # noqa: E731
    assert strip(read_metrics(victim / "metrics.csv")) == strip(read_metrics(ref / "metrics.csv"))
    a, b = load_checkpoint(ref / "last.pt")["state_dict"], load_checkpoint(victim / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(victim.glob(".*.tmp"))


GLOO_PEER_DIED = RuntimeError(
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
    "[127.0.0.1]:9607. This is typically caused by a remote worker crashing. Check the logs of the remote worker "
    "before reporting an error. GLHF!")


def test_a_dead_peer_is_one_line_that_names_it_not_glooss_traceback():
    with pytest.raises(PeerLost) as info, Dist(rank=1, world_size=2, initialised=True).errors_explained():
        raise GLOO_PEER_DIED
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("rank 1: lost contact with another rank of the group")
    assert "(Connection closed by peer [127.0.0.1]:9607)" in msg and "pair.cc" not in msg and "--max-restarts" in msg
    assert info.value.__cause__ is GLOO_PEER_DIED
    with pytest.raises(PeerLost, match="rank 0: could not join the group"), Dist(world_size=2).errors_explained():
        raise torch.distributed.DistNetworkError("Connection refused")
    # any other error, and any error of a process alone, passes through as it was
    for ranks, err in ((Dist(rank=1, world_size=2, initialised=True), RuntimeError("shapes differ")),
                       (Dist(), GLOO_PEER_DIED)):
        with pytest.raises(RuntimeError) as info, ranks.errors_explained():
            raise err
        assert info.value is err


def test_under_torchruns_environment_the_program_exits_without_shutdown_and_loses_no_output(tmp_path):
    """cnnlab.cli.console ends a torchrun worker with os._exit: what it printed still arrives (through a pipe,
    where stdout is block-buffered), and its exit code is main's."""
    run = lambda *args, **env: subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True,  # noqa: E731
                                              text=True, cwd=tmp_path, env={**os.environ, **env}, timeout=120)
    alone, ranked = run("models"), run("models", WORLD_SIZE="2")
    assert alone.returncode == ranked.returncode == 0 and ranked.stdout == alone.stdout and "resnet" in ranked.stdout
    bad = run("evaluate", str(tmp_path / "nope"), WORLD_SIZE="2")
    assert bad.returncode == 2 and bad.stderr.startswith("cnnlab: error:") and bad.stderr.count("\n") == 1, bad.stderr


def test_torchruns_variables_set_by_hand_are_one_line_and_leave_no_run_folder(tiny_idx, tmp_path, monkeypatch, capsys):
    from cnnlab.cli import main

    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    args = ["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--max-steps", "1", "--device", "cpu"]
    for world, message in (("2", "WORLD_SIZE=2 asks for a group of processes, but RANK is not set; launch with "
                                  "torchrun (torchrun --nproc_per_node=2 -m cnnlab train ...), or unset WORLD_SIZE"),
                           ("two", "WORLD_SIZE='two' is not a whole number; torchrun sets WORLD_SIZE itself")):
        monkeypatch.setenv("WORLD_SIZE", world)
        assert main([*args, "--out", str(tmp_path / f"run-{world}")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not (tmp_path / f"run-{world}").exists()


def test_a_process_whose_group_never_comes_says_so_stops_on_ctrl_c_and_waits_no_longer_than_its_limit(tiny_idx, tmp_path):
    """WORLD_SIZE=2 started by hand with one process: torch's rendezvous waited 30 minutes, silent, deaf to Ctrl-C."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "CNNLAB_JOIN_TIMEOUT": "3"}
    args = [sys.executable, "-m", "cnnlab", "train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}",
            "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "run")]
    start = time.monotonic()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and time.monotonic() - start < 60
    assert done.stderr.count("\n") == 1 and "rank 0: the group's other processes did not join within 3 s" in done.stderr
    assert not (tmp_path / "run").exists()
    env["CNNLAB_JOIN_TIMEOUT"] = "600"
    env["MASTER_PORT"] = str(free_port())
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(120, proc.kill)
    guard.start()
    try:
        said = proc.stdout.readline()  # after 10 s of waiting in the join: Ctrl-C now reaches a process inside it
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        guard.cancel()
        proc.kill()
    assert "rank 0: waiting for the group's other processes (2 in all" in said, said
    assert proc.returncode == 130 and err.strip().endswith("cnnlab: interrupted"), err
    assert not (tmp_path / "run").exists()


def test_a_master_port_that_is_no_port_is_named(tiny_idx, tmp_path, monkeypatch, capsys):
    from cnnlab.cli import main

    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1")):
        monkeypatch.setenv(name, value)
    for port in ("abc", "99999"):
        monkeypatch.setenv("MASTER_PORT", port)
        assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"MASTER_PORT='{port}' is not a port number (1 to 65535)" in err, err


def test_a_rerun_of_a_group_run_in_one_process_says_how_to_repeat_it(tiny_idx, tmp_path, capsys):
    """--config RUN of a 2-process run re-ran it in one process without a word (its figures then differ)."""
    import json

    from cnnlab.cli import main

    run = tmp_path / "run"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--max-steps", "2", "--device",
                 "cpu", "--quiet", "--out", str(run)]) == 0
    record = json.loads((run / "config.json").read_text())
    assert record["world_size"] == 1
    capsys.readouterr()
    assert main(["train", "--config", str(run), "--dry-run"]) == 0
    assert "process" not in capsys.readouterr().out  # the same number of processes: nothing to say
    (run / "config.json").write_text(json.dumps({**record, "world_size": 2}))  # as a 2-process run records it
    assert main(["train", "--config", str(run), "--dry-run"]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "processes" in line]
    assert said == [f"warning: --config {run / 'config.json'}: that run trained in 2 processes and this one in 1, so its "
                    "figures may differ from that run's (the gradients are summed in another order); to repeat it as "
                    f"it ran: torchrun --nproc_per_node=2 -m cnnlab train --config {run / 'config.json'}"], said


def test_a_ranks_error_line_says_which_rank_it_is(tmp_path, monkeypatch, capsys):
    """Every rank meets the same refusal: two identical lines under torchrun read as one error said twice."""
    from cnnlab.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, prefix in (("1", "cnnlab: error: rank 1: "), ("0", "cnnlab: error: --epochs")):
        monkeypatch.setenv("RANK", rank)
        assert main(["train", "--model", "basic_cnn", "--epochs", "0", "--out", str(tmp_path / "r")]) == 2
        assert capsys.readouterr().err.startswith(prefix)


def _hand_started(tiny_idx, tmp_path, rank: str, port: int, **env) -> tuple[list[str], dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), **env}
    return [sys.executable, "-m", "cnnlab", "train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--epochs",
            "1", "--threads", "1", "--out", str(tmp_path / "run")], env


def test_a_join_ends_in_one_line_whatever_stops_it(tiny_idx, tmp_path):
    """Rank 1 alone (its store client timed out first: c10's 35-line C++ trace before cnnlab's line); a port in use
    ("could not join the group ... see the other ranks' lines"); SIGTERM while waiting (killed, its run folder left
    holding only .lock); CNNLAB_JOIN_TIMEOUT=1e9 refused as "not above 0"."""
    args, env = _hand_started(tiny_idx, tmp_path, "1", free_port(), CNNLAB_JOIN_TIMEOUT="3")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("cnnlab: error: rank 1: the group's other processes did not join within 3 s")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args, env = _hand_started(tiny_idx, tmp_path, "0", taken.getsockname()[1])
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "rank 0: cannot listen on MASTER_PORT at 127.0.0.1:" in done.stderr and "the port is in use" in done.stderr
    assert not (tmp_path / "run").exists()
    args, env = _hand_started(tiny_idx, tmp_path, "0", free_port(), CNNLAB_JOIN_TIMEOUT="1e9")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(120, proc.kill)
    guard.start()
    try:
        assert "waiting for the group's other processes" in proc.stdout.readline()  # 1e9 s taken: it waits
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        guard.cancel()
        proc.kill()
    assert proc.returncode == 143 and err == ("cnnlab: SIGTERM while waiting for the group's other processes; nothing "
                                              "was saved: start it again\n"), err
    assert not (tmp_path / "run").exists()
