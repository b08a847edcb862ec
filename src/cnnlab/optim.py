"""torch's optimisers, without loading torch.compile's machinery into a process that never compiles.

torch.optim marks its optimisers for ``torch.compile``: ``zero_grad``, ``state_dict``, ``load_state_dict`` and
``add_param_group`` are wrapped by ``torch._disable_dynamo`` (compiled code must not trace them), and ``step``
by a wrapper that calls ``torch._dynamo.graph_break()`` around the update under ``set_grad_enabled(False)``.
Outside a compiled region both are no-ops, but the first call of each imports ``torch._dynamo`` (its tracer,
sympy, ...): 2.8-3.5 s on a 2-core CPU, as long as ``import torch`` itself, paid by every ``cnnlab train``.

The classes made here are subclasses of torch's (``isinstance`` holds, the names are the same) whose methods
call torch's own undecorated functions: the same code, the same numbers, the same hooks (``step`` is still
wrapped by torch's profiling and step-hook wrapper, and by an LR scheduler's). The engine uses them only
without ``--compile``; with it, torch's classes are used unchanged. Should a torch release change the
wrappers, :func:`undecorated` finds nothing to unwrap and torch's methods are used as they are (slower to
start, never wrong); ``tests/test_optim.py`` says so by checking that a run leaves ``torch._dynamo`` unloaded.
"""

from __future__ import annotations

import functools

import torch

#: torch's wrappers to look through: ``torch._disable_dynamo``'s and the step's ``_use_grad_for_differentiable``
_WRAPPERS = ("_disable_dynamo.<locals>.inner", "_use_grad_for_differentiable.<locals>._use_grad")
_METHODS = ("zero_grad", "state_dict", "load_state_dict", "add_param_group")


def undecorated(method):
    """The function torch's dynamo wrappers wrap (looking through torch's step hooks), or None."""
    chain = [method]
    while hasattr(chain[-1], "__wrapped__"):
        chain.append(chain[-1].__wrapped__)
    by_torch = any(getattr(getattr(f, "__code__", None), "co_qualname", "") in _WRAPPERS for f in chain)
    return chain[-1] if by_torch else None


def _eager_class(base: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    namespace = {"__module__": __name__, "__qualname__": base.__qualname__,
                 "__doc__": f"torch.optim.{base.__name__}, calling torch's undecorated methods (see cnnlab.optim)."}
    for name in _METHODS:
        raw = undecorated(getattr(base, name))
        if raw is not None:
            namespace[name] = raw
    raw_step = undecorated(base.step)
    if raw_step is not None:
        namespace["step"] = _step_calling(raw_step)
    return type(base.__name__, (base,), namespace)


def _step_calling(raw_step):
    def step(self, closure=None):
        # torch's wrapper, but for its two graph breaks (no-ops outside torch.compile)
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return raw_step(self, closure)

    return step


@functools.cache
def eager(base: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """``base``'s subclass that never imports ``torch._dynamo`` (made once per class)."""
    return _eager_class(base)
