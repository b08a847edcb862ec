"""The learning-rate schedules: one table, without torch.

:data:`SCHEDULES` is the one list of them: ``config`` checks ``--schedule`` against it and refuses a
``--warmup-epochs`` that a schedule does not take from it, the CLI's help lists it, and
:func:`cnnlab.engine.build_scheduler` builds a run's scheduler from it (the engine owns torch; this module only
says what each schedule does to the rate). A new schedule is one entry here (docs/architecture.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from cnnlab.errors import CnnlabError

#: The step schedule's factors of the peak rate: before half of the run, before three quarters, after.
STEP_FACTORS = (1.0, 0.1, 0.01)


def cosine_decay(step: int, warm: int, total: int) -> float:
    """Half a cosine from 1 to 0 over the steps after the warm-up."""
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def step_decay(step: int, warm: int, total: int) -> float:
    """1, then 0.1 from half of the run's steps, 0.01 from three quarters (the warm-up counted in the run)."""
    return STEP_FACTORS[(step >= total // 2) + (step >= 3 * total // 4)]


@dataclass(frozen=True)
class Schedule:
    """What one schedule does to the learning rate over a run's steps."""

    #: What it does, in ``--schedule``'s help.
    what: str
    #: The rate as a factor of the peak (``--lr``) at each step after the warm-up: ``factor(step, warm, total)``,
    #: ``step`` 0-based of the run's ``total`` steps, its first ``warm`` the warm-up's (torch's ``LambdaLR``).
    #: None: no scheduler, the rate is ``--lr`` at every step (or torch's one-cycle, with ``one_cycle``).
    factor: Callable[[int, int, int], float] | None = None
    #: Whether it takes ``--warmup-epochs``: a linear warm-up to the peak rate before ``factor`` takes over.
    warmup: bool = False
    #: torch's ``OneCycleLR`` sets the rate (and an SGD momentum) itself.
    one_cycle: bool = False


#: Every ``--schedule``, by name, in the order the help lists them.
SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule("--lr at every step (the lecture's)"),
    "onecycle": Schedule("torch's one-cycle, up to the peak --lr over the first 30% of the steps and down again",
                         one_cycle=True),
    "cosine": Schedule("after a linear warm-up, half a cosine from --lr down to 0", cosine_decay, warmup=True),
    "step": Schedule("after a linear warm-up, divided by 10 at half and again at three quarters of the run",
                     step_decay, warmup=True),
}
#: The schedules that take ``--warmup-epochs``.
WARMUP_SCHEDULES = tuple(name for name, s in SCHEDULES.items() if s.warmup)


def schedule_named(name: str) -> Schedule:
    """The schedule called ``name``; one line for a name the table does not hold."""
    if name not in SCHEDULES:
        raise CnnlabError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    return SCHEDULES[name]
