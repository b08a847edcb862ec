"""Defects a tester (apiA) found in the Python API: ``preprocess=`` values that only compare equal to True or False,
``(N, H, W)`` tensors at the net's size, command-line flags in the API's refusals, docstrings and reprs of what the
API returns, ``dir(cnnlab)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab import CnnlabError
from cnnlab.predict import Prediction


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


def _digits(n: int) -> np.ndarray:
    """``n`` different MNIST-like 28x28 uint8 fields (white strokes on black)."""
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        out[i, 5:23, 8 + 3 * i:11 + 3 * i] = 255
        out[i, 5:8, 8:20 - i] = 255
    return out


def test_a_tensor_of_two_to_four_fields_at_the_nets_size_is_refused_as_ambiguous(shipped):
    """``torch.from_numpy(imgs[:3])`` (what ``torchvision.datasets.MNIST(...).data[:3]`` is) gave ONE prediction,
    the three digits read as an RGB image, where the same numpy array gives three; 5 was refused."""
    for n in (2, 3, 4):
        imgs = _digits(n)
        t = torch.from_numpy(imgs)
        for call in (shipped, shipped.read_number, shipped.read_lines, lambda x: shipped([x])):
            with pytest.raises(CnnlabError) as err:
                call(t)
            said = str(err.value)
            assert "\n" not in said and f"either {n} gray images or one image of {n} channels" in said, said
            assert f"t.unsqueeze(1), shape ({n}, 1, 28, 28)" in said and f"t.unsqueeze(0), shape (1, {n}, 28, 28)" in said
        # the two unambiguous forms: N images, as numpy's (N, H, W) is read; one colour image
        as_images = shipped(t.unsqueeze(1))
        assert [p.probabilities for p in as_images] == [p.probabilities for p in shipped(imgs)]
        assert len(shipped(t.unsqueeze(0))) == 1
    with pytest.raises(CnnlabError, match=r"for N gray images \(N, H, W\) give t.unsqueeze\(1\)"):
        shipped(torch.from_numpy(_digits(5)))
    # a colour tensor of another size is one colour image, as before; one gray (1, 28, 28) is one image
    big = torch.from_numpy(np.repeat(_digits(1), 2, axis=1).repeat(2, axis=2)).expand(3, -1, -1)
    assert big.shape == (3, 56, 56) and isinstance(shipped(big), Prediction)
    assert isinstance(shipped(torch.from_numpy(_digits(1))), Prediction)
