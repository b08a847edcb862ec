"""A restricted unpickler for the numpy arrays inside ``mnist.pkl.gz``.

Pickle runs code: any global it names is called while loading. This unpickler resolves only the
exact numpy globals needed to rebuild arrays (under numpy 1 and numpy 2 module names) and
refuses everything else before it is imported or called.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from cnnlab.errors import DataError


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as fn  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import _reconstruct as fn
    return fn


ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 1
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 2
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        resolve = ALLOWED.get((module, name))
        if resolve is None:
            raise DataError(
                f"refused to unpickle global {module}.{name}: only numpy array globals are allowed; "
                "the file is not a plain array pickle, do not use it"
            )
        return resolve()


def restricted_loads(data: bytes, encoding: str = "latin1"):
    """Unpickle ``data`` allowing only numpy arrays; ``latin1`` reads Python-2 pickles of arrays."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except DataError:
        raise
    except Exception as err:  # malformed stream: EOFError, UnpicklingError, ValueError...
        raise DataError(f"corrupt pickle ({type(err).__name__}: {err}); fetch the file again") from None
