"""Ranks: the one module that knows whether this process is part of a torchrun group.

``Dist.from_env()`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) once; without
it the process is a group of one and every call here is a cheap no-op.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cnnlab.errors import CnnlabError, first_line


class PeerLost(CnnlabError):
    """A collective failed because another rank of the torchrun group stopped (or never came). ``restarting``:
    torchrun restarts the group (``--max-restarts`` allows another attempt)."""

    def __init__(self, message: str, restarting: bool = False):
        super().__init__(message)
        self.restarting = restarting


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: How many times torchrun has restarted this worker group (0 on the first attempt).
    restart_count: int = 0
    #: How many restarts torchrun allows (its --max-restarts; 0 without torchrun).
    max_restarts: int = 0
    initialised: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        return cls(
            rank=_env_int("RANK", 0),
            world_size=_env_int("WORLD_SIZE", 1),
            local_rank=_env_int("LOCAL_RANK", 0),
            restart_count=_env_int("TORCHELASTIC_RESTART_COUNT", 0),
            max_restarts=_env_int("TORCHELASTIC_MAX_RESTARTS", 0),
        )

    def device_for(self, device: torch.device) -> torch.device:
        """Under torchrun each process on a machine takes its own GPU (LOCAL_RANK)."""
        if self.enabled and device.type == "cuda":
            if torch.cuda.device_count() <= self.local_rank:
                raise CnnlabError(
                    f"rank {self.rank} wants GPU {self.local_rank} but {torch.cuda.device_count()} are visible; "
                    "use --nproc_per_node at most the number of GPUs"
                )
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def init(self, device: torch.device) -> None:
        """Join the process group: NCCL for CUDA, gloo for the CPU."""
        if not self.enabled or self.initialised:
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        # torchrun's store can outlive a restart of the worker group; if the new workers shared
        # keys with the dead ones, a rank could read a dead peer's address (seen here: gloo
        # "connectFullMesh ... Connection refused" after a restart). A prefix per attempt keeps
        # every attempt's keys apart.
        try:
            store, rank, world = next(dist.rendezvous("env://"))
        except ValueError as err:  # WORLD_SIZE set by hand, without torchrun's other variables
            missing = re.search(r"environment variable (\w+) expected", str(err))
            why = f"{missing.group(1)} is not set" if missing else _first_sentence(err)
            raise CnnlabError(f"WORLD_SIZE={self.world_size} asks for a group of processes, but {why}; "
                              f"launch with torchrun (torchrun --nproc_per_node={self.world_size} -m cnnlab train ...), "
                              "or unset WORLD_SIZE to train in one process") from None
        store = dist.PrefixStore(f"cnnlab/attempt_{self.restart_count}", store)
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world)
        self.initialised = True

    def all_reduce_sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum floats over ranks (one collective for the whole list)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def all_reduce_max(self, value: float, device: torch.device) -> float:
        """The largest of each rank's ``value``."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.initialised:
            dist.destroy_process_group()
            self.initialised = False

    @contextlib.contextmanager
    def errors_explained(self) -> Iterator[None]:
        """Say in one line why a collective failed, instead of gloo's or NCCL's traceback.

        When one rank dies (killed, out of memory), every other rank's next collective raises a
        RuntimeError whose text starts with a C++ source path; under ``--max-restarts`` that is an
        expected event, and the run resumes from its checkpoint. The line says which it is: whether torchrun
        restarts the group (it said so also when it would not). Other errors pass through unchanged.
        """
        try:
            yield
        except RuntimeError as err:
            if not self.enabled or not is_communication_error(err):
                raise
            what = "lost contact with another rank of the group" if self.initialised else "could not join the group"
            left = self.max_restarts - self.restart_count
            then = (f"torchrun restarts the group (--max-restarts {self.max_restarts}: {left} restart"
                    f"{'s' if left != 1 else ''} left), and the run resumes from its last checkpoint, or starts again "
                    "if it saved none" if left > 0 else
                    f"torchrun does not restart the group (--max-restarts {self.max_restarts}"
                    f"{', all used' if self.max_restarts else ''})")
            raise PeerLost(f"rank {self.rank}: {what} ({_first_sentence(err)}); see the other ranks' lines for the "
                           f"cause; {then}", restarting=left > 0) from err


def _env_int(name: str, default: int) -> int:
    """One of torchrun's variables; a value that is not a whole number >= 0 is one line, not a ValueError."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise CnnlabError(f"{name}={text!r} is not a whole number; torchrun sets {name} itself: unset it to train "
                          "in one process, or launch with torchrun")
    return int(text)


def is_communication_error(err: BaseException) -> bool:
    """torch's own distributed errors, and the RuntimeErrors that gloo raises with its source path."""
    return isinstance(err, dist.DistError) or "/gloo/" in str(err)


def _first_sentence(err: BaseException) -> str:
    """``[.../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:9607. This is ...``
    becomes ``Connection closed by peer [127.0.0.1]:9607``."""
    line = re.sub(r"^\[[^\]]*\]\s*", "", first_line(err))
    return line.split(". ")[0].rstrip(".")[:200]
