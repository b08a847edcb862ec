"""Ranks: the one module that knows whether this process is part of a torchrun group.

``Dist.from_env()`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) once; without
it the process is a group of one and every call here is a cheap no-op.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cnnlab.errors import CnnlabError, Interrupted, first_line


#: How long a process waits for the rest of its group to join, in seconds (CNNLAB_JOIN_TIMEOUT overrides it): torch's
#: own wait is 30 minutes, silent, and deaf to Ctrl-C (a hand-started WORLD_SIZE=3 with two processes hung).
JOIN_TIMEOUT_S = 300.0
#: The longest wait CNNLAB_JOIN_TIMEOUT may set (1e9 s, about 30 years: "for ever").
MAX_JOIN_TIMEOUT_S = 1e9
#: The joining thread's own store waits outlast the process's by this much, so that the process gives up first.
JOIN_GRACE_S = 60.0
#: After this many seconds of waiting a process says what it waits for.
JOIN_SAY_AFTER_S = 10.0
#: The longest a reduction waits for gloo's worker thread to let go of its tensor (:func:`_let_go`; microseconds as a
#: rule, seconds only on a machine so loaded that the thread is not scheduled).
LET_GO_WAIT_S = 5.0


#: How many groups this process has joined (:meth:`Dist.init`): each join's keys go under a prefix of their own.
_joins = itertools.count()
#: Holds the :class:`Dist` whose group this process joined and has not closed: a training that ended in an error after
#: its join leaves it open, and the next join closes it first (torch refused a second: "trying to initialize the
#: default process group twice!").
_left_open: list = []


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

    def init(self, device: torch.device, say: Callable[[str], None] = print) -> None:
        """Join the process group: NCCL for CUDA, gloo for the CPU. The join runs in a thread of its own, so that
        Ctrl-C stops a wait for processes that never come, and a wait longer than :data:`JOIN_TIMEOUT_S` ends in one
        line; ``say`` gets a line when the wait has lasted :data:`JOIN_SAY_AFTER_S`."""
        if not self.enabled or self.initialised:
            return
        _check_master_port()
        for earlier in list(_left_open):
            earlier.close()
        limit = _join_timeout()
        done: dict = {}
        # the thread's own waits outlast this one (JOIN_GRACE_S): a store that timed out in it printed c10's C++ trace
        joiner = threading.Thread(target=self._join, name="cnnlab-join", daemon=True,
                                  args=("nccl" if device.type == "cuda" else "gloo", limit + JOIN_GRACE_S, done,
                                        next(_joins)))
        joiner.start()
        with _signals_stop_the_wait():
            self._wait_for(joiner, limit, say)
        if "error" in done:
            raise _join_error(done["error"], self.rank)
        self.initialised = True
        _left_open.append(self)

    def _wait_for(self, joiner: threading.Thread, limit: float, say: Callable[[str], None]) -> None:
        """Wait for the joining thread: a line after :data:`JOIN_SAY_AFTER_S`, a refusal after ``limit``."""
        start, said = time.monotonic(), False
        while joiner.is_alive():  # a timed join: a KeyboardInterrupt reaches this thread between waits
            joiner.join(0.2)
            waited = time.monotonic() - start
            if not said and waited > JOIN_SAY_AFTER_S and joiner.is_alive():
                said = True
                say(f"rank {self.rank}: waiting for the group's other processes ({self.world_size} in all, at "
                    f"{_master()}); Ctrl-C stops")
            if waited > limit and joiner.is_alive():
                raise CnnlabError(f"rank {self.rank}: the group's other processes did not join within {limit:g} s "
                                  f"({self.world_size} processes at {_master()}); start all {self.world_size} (RANK 0 to "
                                  f"{self.world_size - 1}, the same MASTER_ADDR and MASTER_PORT), or launch with "
                                  "torchrun; CNNLAB_JOIN_TIMEOUT sets the wait in seconds")

    def _join(self, backend: str, limit: float, done: dict, join: int = 0) -> None:
        """Rendezvous and init_process_group (in the joining thread); an error is left in ``done`` for init.
        ``join``: how many groups this process joined before (a script that calls ``cnnlab.train`` twice)."""
        try:
            try:
                store, rank, world = next(dist.rendezvous("env://", timeout=datetime.timedelta(seconds=limit)))
            except ValueError as err:  # WORLD_SIZE set by hand, without torchrun's other variables
                missing = re.search(r"environment variable (\w+) expected", str(err))
                why = f"{missing.group(1)} is not set" if missing else _first_sentence(err)
                raise CnnlabError(f"WORLD_SIZE={self.world_size} asks for a group of processes, but {why}; launch "
                                  f"with torchrun (torchrun --nproc_per_node={self.world_size} -m cnnlab train ...), "
                                  "or unset WORLD_SIZE to train in one process") from None
            # torchrun's store can outlive a restart of the worker group; if the new workers shared
            # keys with the dead ones, a rank could read a dead peer's address (seen here: gloo
            # "connectFullMesh ... Connection refused" after a restart). A prefix per attempt keeps
            # every attempt's keys apart, and within one a prefix per join of the process: a second training in
            # one worker met the first one's keys (gloo's "Connection refused", or a wait until the join's timeout)
            prefix = f"cnnlab/attempt_{self.restart_count}" + (f"/join_{join}" if join else "")
            store = dist.PrefixStore(prefix, store)
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world)
        except BaseException as err:  # noqa: BLE001 - handed to init, which raises it in the main thread
            done["error"] = err

    def all_reduce_sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum floats over ranks (one collective for the whole list)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        _let_go(t)
        return t.tolist()

    def all_reduce_max(self, value: float, device: torch.device) -> float:
        """The largest of each rank's ``value``."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        _let_go(t)
        return float(t.item())

    def all_gather(self, value) -> list:
        """Every rank's ``value`` (a small picklable object), in rank order; a process alone gets ``[value]`` back
        without a collective."""
        if not self.enabled:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.initialised:
            dist.destroy_process_group()
            self.initialised = False
            _left_open.remove(self)

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


def _let_go(t: torch.Tensor) -> None:
    """Wait, the GIL released, until gloo's worker thread has let go of ``t``, the tensor of a reduction that has
    ended (at most :data:`LET_GO_WAIT_S`). The thread lets go of it after the caller has the result, and takes the GIL
    to do so (a tensor Python made); when the run's end freed its DDP wrapper in the meantime (the group's last
    reference: its destructor joins that thread, the GIL held), the two waited for each other for ever: a script that
    trained three times under torchrun hung at the end of a training in 5 of 16 launches."""
    holders = getattr(t, "_use_count", None)  # (torch's count of the tensor's C++ references)
    if t.device.type != "cpu" or holders is None:
        return
    deadline = time.monotonic() + LET_GO_WAIT_S
    while holders() > 1 and time.monotonic() < deadline:
        time.sleep(0.0001)


def _env_int(name: str, default: int) -> int:
    """One of torchrun's variables; a value that is not a whole number >= 0 is one line, not a ValueError."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise CnnlabError(f"{name}={text!r} is not a whole number; torchrun sets {name} itself: unset it to train "
                          "in one process, or launch with torchrun")
    return int(text)


def _check_master_port() -> None:
    """MASTER_PORT set by hand to what is no port: one line naming it (it read as a WORLD_SIZE problem)."""
    port = os.environ.get("MASTER_PORT", "").strip()
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise CnnlabError(f"MASTER_PORT={port!r} is not a port number (1 to 65535); set it to a free port, the same "
                          "for every process of the group (e.g. 29500), or launch with torchrun, which sets it")


def _join_timeout() -> float:
    text = os.environ.get("CNNLAB_JOIN_TIMEOUT", "").strip()
    if not text:
        return JOIN_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_JOIN_TIMEOUT_S:
        raise CnnlabError(f"CNNLAB_JOIN_TIMEOUT={text!r} is not a number of seconds from above 0 to "
                          f"{MAX_JOIN_TIMEOUT_S:.0e} (about 30 years); unset it for {JOIN_TIMEOUT_S:g} s")
    return value


@contextlib.contextmanager
def _signals_stop_the_wait() -> Iterator[None]:
    """SIGTERM and SIGHUP (their default: the process killed on the spot, its fresh run folder left holding only its
    lock) end the wait as an interruption, which removes what the start made; an ignored one (nohup) stays ignored."""
    saved = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
                saved[sig] = signal.signal(sig, _stop_waiting)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _stop_waiting(signum: int, frame) -> None:
    raise Interrupted(f"{signal.Signals(signum).name} while waiting for the group's other processes; nothing was "
                      "saved: start it again", 128 + signum)


def _join_error(err: BaseException, rank: int) -> BaseException:
    """A join that failed: a port this rank cannot listen on, named (torch's words blamed the other ranks); any
    other error as it is."""
    if "failed to listen" in str(err):
        return CnnlabError(f"rank {rank}: cannot listen on MASTER_PORT at {_master()}: the port is in use (or "
                           "MASTER_ADDR is not this machine's address); pick a free port, the same for every process "
                           "of the group")
    return err


def _master() -> str:
    return f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"


def is_communication_error(err: BaseException) -> bool:
    """torch's own distributed errors, and the RuntimeErrors that gloo raises with its source path."""
    return isinstance(err, dist.DistError) or "/gloo/" in str(err)


def _first_sentence(err: BaseException) -> str:
    """``[.../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:9607. This is ...``
    becomes ``Connection closed by peer [127.0.0.1]:9607``."""
    line = re.sub(r"^\[[^\]]*\]\s*", "", first_line(err))
    return line.split(". ")[0].rstrip(".")[:200]
