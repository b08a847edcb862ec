"""Run ``cnnlab`` with one fault injected: this process SIGKILLs itself at a chosen write boundary.

    python tests/fault_worker.py NAME:POINT:N [NAME:POINT:N ...] -- ARGS...

At the N-th time (counted in this process) that a write of the file named NAME (e.g. ``last.pt``,
``last.pt.sha256``) reaches POINT, the process is killed with SIGKILL, as the OOM killer or torchrun's
restarts do: nothing after that point runs, no ``finally`` and no cleanup.

POINT is ``mid-write`` (half of the bytes are in the temp file), ``before-rename`` (the temp file is
complete and fsynced, not yet renamed into place) or ``after-rename`` (the new file is in place).
Under torchrun, ``FAULT_ATTEMPTS`` (e.g. ``0,1``) limits the faults to those restart attempts, and only
rank 0 (the one that writes) is killed.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

import cnnlab.checkpoint
import cnnlab.fileio
from cnnlab.cli import console


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(faults: list[tuple[str, str, int]]) -> None:
    counts: dict[tuple[str, str], int] = {}

    def hit(name: str, point: str) -> bool:
        key = (name, point)
        counts[key] = counts.get(key, 0) + 1
        return (name, point, counts[key]) in faults

    real_replace, real_write = os.replace, cnnlab.fileio.atomic_write_bytes

    def replace(src, dst):
        name = Path(dst).name
        if hit(name, "before-rename"):
            _die()
        real_replace(src, dst)
        if hit(name, "after-rename"):
            _die()

    def atomic_write_bytes(path, data, **options):  # (mode_of, just_before)
        path = Path(path)
        if hit(path.name, "mid-write"):
            fd, _ = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.write(fd, data[: len(data) // 2])
            _die()
        real_write(path, data, **options)

    os.replace = replace
    for module in (cnnlab.fileio, cnnlab.checkpoint):
        module.atomic_write_bytes = atomic_write_bytes


if __name__ == "__main__":
    split = sys.argv.index("--")
    specs = [s.split(":") for s in sys.argv[1:split]]
    attempts = os.environ.get("FAULT_ATTEMPTS")
    active = (attempts is None or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") in attempts.split(",")) \
        and os.environ.get("RANK", "0") == "0"
    if active:
        install([(name, point, int(n)) for name, point, n in specs])
    raise SystemExit(console(sys.argv[split + 1:]))
