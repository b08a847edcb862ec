"""The atkV tester's defects in the path, OS and memory fixes of s43: an empty or ``0`` ``OPENBLAS_NUM_THREADS`` under
a memory limit, and the memory floor counting the machine's cores rather than the CPUs the process may run on
(:func:`cnnlab.cli.check_torch_can_load`); a symbolic link to nowhere and a long chain of links that is no loop,
each named for what it is (:func:`cnnlab.fileio.link_trouble`); ``train --resume LINK.pt`` resuming the run the link
points to (:func:`cnnlab.runs.run_dir_of`). docs/reliability.md lists them."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

import cnnlab.cli


def _environment(**changes: str) -> dict:
    """This process's environment for a ``python -m cnnlab`` of this source, without a thread count of OpenBLAS or
    OpenMP (OpenBLAS takes ``OMP_NUM_THREADS`` where its own asks for none), with ``changes``."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    return {**env, "PYTHONPATH": os.pathsep.join(sys.path), **changes}


def _models_under(limit_kb: int, cpus: int, **env: str) -> subprocess.CompletedProcess:
    """``cnnlab models`` under ``ulimit -v limit_kb`` on the first ``cpus`` CPUs this process may use (as ``taskset``:
    the tester's 2 cores, whatever this machine has; torch's and OpenBLAS's threads count them), printing the
    ``OPENBLAS_NUM_THREADS`` numpy's OpenBLAS was started with."""
    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit_kb * 1024, resource.getrlimit(resource.RLIMIT_AS)[1]))
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])

    code = ("import os, sys; from cnnlab.cli import main; code = main(['models']); "
            "print(os.environ['OPENBLAS_NUM_THREADS']); sys.exit(code)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          preexec_fn=limited, env=_environment(**env))


# ----------------------------------------------------------------------------- 1, 2: OpenBLAS's threads under a limit


@pytest.mark.parametrize("asked", ["", "0", " ", "two", "-2", "+2", "٢"])
def test_an_openblas_thread_count_that_asks_for_no_number_is_one_thread_under_a_limit(monkeypatch, asked):
    """atkV 1. ``OPENBLAS_NUM_THREADS=`` (or ``0``) is OpenBLAS's "a thread on each core": it was kept, while the floor
    counted one thread (``int("")`` failed: 1), and numpy's import ended the process in C code between the two
    (SystemError, a segmentation fault, ``FATAL: Internal consistency check failed``). Set to 1 under a limit, as an
    unset one is; the floor is one thread's."""
    if not cnnlab.cli._torch_floor():
        pytest.skip("no floor for this torch build")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    one = cnnlab.cli._torch_floor()
    monkeypatch.setattr(cnnlab.cli, "_memory_limit", lambda: 10_000_000)
    monkeypatch.delitem(sys.modules, "numpy")  # as before numpy loads (put back by monkeypatch)
    monkeypatch.setattr(cnnlab.cli, "usable_cpus", lambda: 64, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", asked)
    cnnlab.cli.check_torch_can_load()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1" and cnnlab.cli._torch_floor() == one
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", " 3 ")  # a number asked for is kept, and counted
    cnnlab.cli.check_torch_can_load()
    assert os.environ["OPENBLAS_NUM_THREADS"] == " 3 "
    assert cnnlab.cli._torch_floor() == one + 2 * cnnlab.cli.OPENBLAS_THREAD_KB


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="OpenBLAS starts one thread on one CPU: nothing between the two floors")
def test_an_empty_openblas_thread_count_loads_under_a_limit_its_threads_would_not_fit(tmp_path):
    """atkV 1, the tester's: ``(ulimit -v 630000; OPENBLAS_NUM_THREADS= cnnlab models)``, above the one-thread floor
    (600,000 KB) and under what two threads need (646,000): a traceback or a segmentation fault from torch's import."""
    floor = cnnlab.cli._torch_floor()
    if not floor:
        pytest.skip("no floor for this torch build")
    for asked in ("", "0"):
        proc = _models_under(floor + 30_000, 2, OPENBLAS_NUM_THREADS=asked)
        assert proc.returncode == 0 and "inception" in proc.stdout, (asked, proc.returncode, proc.stderr[-3000:])
        assert proc.stdout.splitlines()[-1] == "1"


def test_the_floor_counts_the_cpus_the_process_may_run_on(monkeypatch):
    """atkV 2. OpenBLAS starts no more threads than the CPUs it may run on (its affinity: ``taskset``, a cpuset); the
    floor counted ``os.cpu_count()``, the machine's: ``OPENBLAS_NUM_THREADS=64`` on 4 CPUs of 64 asked for 3.2 GB."""
    if not cnnlab.cli._torch_floor():
        pytest.skip("no floor for this torch build")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    one = cnnlab.cli._torch_floor()
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cnnlab.cli, "usable_cpus", lambda: 4, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "64")
    assert cnnlab.cli._torch_floor() == one + 3 * cnnlab.cli.OPENBLAS_THREAD_KB
    monkeypatch.setattr(cnnlab.cli, "usable_cpus", lambda: None)  # not to be told: one
    assert cnnlab.cli._torch_floor() == one


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="one CPU: the machine's cores and the usable ones agree")
def test_a_limit_that_works_on_one_cpu_is_not_refused(tmp_path):
    """atkV 2, the tester's: ``(ulimit -v 620000; OPENBLAS_NUM_THREADS=2 taskset -c 0 cnnlab models)`` was refused
    (`need at least 642,000 KB`), though it runs there (OpenBLAS starts one thread on one CPU)."""
    floor = cnnlab.cli._torch_floor()
    if not floor:
        pytest.skip("no floor for this torch build")
    proc = _models_under(floor + 20_000, 1, OPENBLAS_NUM_THREADS="2")
    assert proc.returncode == 0 and "inception" in proc.stdout, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "2"  # what the user asked for, kept
