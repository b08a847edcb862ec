"""Defects a tester (apiA) found in the Python API: ``preprocess=`` values that only compare equal to True or False,
``(N, H, W)`` tensors at the net's size, command-line flags in the API's refusals, docstrings and reprs of what the
API returns, ``dir(cnnlab)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab import CnnlabError


def test_dir_of_the_package_names_each_name_once():
    """``dir(cnnlab)`` listed each error class twice (``__dir__`` joined globals and ``__all__``)."""
    names = dir(cnnlab)
    assert len(names) == len(set(names)) and names == sorted(names)
    assert set(cnnlab.__all__) <= set(names) and "CnnlabError" in names


@pytest.fixture(scope="module")
def shipped():
    return cnnlab.predictor(model="resnet")


def _inverted_seven() -> np.ndarray:
    """A 7 drawn dark on light, 28x28: taken as it is (``preprocess=False``) the net misreads it; preprocessed, a 7."""
    img = np.full((28, 28), 255, np.uint8)
    img[6:9, 7:21] = 0
    for row in range(9, 23):
        col = 20 - (row - 9) // 2
        img[row, col - 1:col + 2] = 0
    return img


def test_preprocess_takes_a_bool_and_numpys_and_refuses_what_only_compares_equal(shipped):
    """``preprocess=0``, ``0.0`` and ``np.False_`` ran the whole preprocessing, the opposite of ``False``
    (``preprocess not in (None, True, False)`` let them through, then ``preprocess is False`` took them for True)."""
    img = _inverted_seven()
    off, on = shipped(img, preprocess=False), shipped(img, preprocess=True)
    assert not np.array_equal(off.input_image, on.input_image)
    for value, same in ((np.False_, off), (np.True_, on), (np.bool_(False), off)):
        got = shipped(img, preprocess=value)
        assert np.array_equal(got.input_image, same.input_image) and got.probabilities == same.probabilities, value
        assert np.array_equal(shipped.prepare(img, preprocess=value), same.input_image), value
    with pytest.raises(CnnlabError, match="must be 28x28"):
        shipped(np.zeros((40, 30), np.uint8), preprocess=np.False_)  # as False: taken as is, refused as False is
    for value in (0, 1, 0.0, 1.0, "yes", "", [], np.int64(0), torch.tensor(False)):
        for call in (lambda v: shipped(img, preprocess=v), lambda v: shipped.prepare(img, preprocess=v),
                     lambda v: shipped.prepared(img, preprocess=v)):
            with pytest.raises(CnnlabError) as err:
                call(value)
            said = str(err.value)
            assert said.startswith("preprocess must be None (automatic), True or False, got ") and "\n" not in said


def test_the_apis_other_yes_no_arguments_share_the_rule():
    assert isinstance(cnnlab.create_model("basic_cnn", pretrained=np.False_), torch.nn.Module)
    for value in (0, 1, "no"):
        with pytest.raises(CnnlabError, match=r"^pretrained must be True or False, got "):
            cnnlab.create_model("basic_cnn", pretrained=value)
        with pytest.raises(CnnlabError, match=r"^quiet must be True or False, got "):
            cnnlab.train("basic_cnn", quiet=value)
