"""Defects a tester (apiA) found in the Python API: ``preprocess=`` values that only compare equal to True or False,
``(N, H, W)`` tensors at the net's size, command-line flags in the API's refusals, docstrings and reprs of what the
API returns, ``dir(cnnlab)``."""

from __future__ import annotations

import cnnlab


def test_dir_of_the_package_names_each_name_once():
    """``dir(cnnlab)`` listed each error class twice (``__dir__`` joined globals and ``__all__``)."""
    names = dir(cnnlab)
    assert len(names) == len(set(names)) and names == sorted(names)
    assert set(cnnlab.__all__) <= set(names) and "CnnlabError" in names
