"""cnnlab: train, evaluate and understand the lecture's Inception and residual CNNs on small images.

    import cnnlab
    cnnlab.create_model("resnet", pretrained=True)   # shipped weights
    cnnlab.train("resnet", recipe="fast")            # a run folder under runs/
    cnnlab.load_run("latest").predictor()("digit.png")

The API (:mod:`cnnlab.api`) is loaded on first use: the command line imports this package to parse its
arguments, and torch (~1.3 s) should only be paid for by what needs it.
"""

__version__ = "0.2.0"

from cnnlab import errors as errors  # noqa: E402 (no torch: the error classes, reachable before the API loads)
from cnnlab.errors import (CheckpointError, CnnlabError, DataError, Diverged, Interrupted, RunError,  # noqa: E402
                           WriteError)

#: The names ``import cnnlab`` offers; each resolves to :mod:`cnnlab.api` on first access.
# (not "runs" or "pretrained": those are the names of submodules)
__all__ = ["CheckpointError", "CnnlabError", "DataError", "Diverged", "Interrupted", "Predictor", "Run", "RunError",
           "TrainConfig", "WriteError", "create_model", "list_runs", "load_run", "predictor", "pretrained_weights",
           "train"]


def __getattr__(name: str):
    if name in __all__:
        from cnnlab import api  # torch and the library: paid on first use of the API, not by the CLI's parser

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names and those it offers on first access, each once (the error classes are both)."""
    return sorted({*globals(), *__all__})
