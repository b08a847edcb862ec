"""The Python API's arguments as the caller wrote them: devices, refusals, the caller's RNG, damaged runs,
config files, recipes, and a net evaluated with its own input normalisation."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

import cnnlab
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError

from test_api import weights_equal

TINY = dict(epochs=1, batch_size=32, device="cpu", lr=0.05)


@pytest.fixture
def run(tiny_idx, tmp_path):
    res = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", out=tmp_path / "run", quiet=True, **TINY)
    return cnnlab.load_run(res.run_dir)


def test_a_torch_device_is_taken_wherever_a_device_is_and_anything_else_is_one_line(run, tiny_idx, tmp_path):
    assert run.evaluate(device=torch.device("cpu")).accuracy == run.evaluate(device="cpu").accuracy
    run.predictor(device=torch.device("cpu"))
    for bad in (None, 0, b"cpu"):
        with pytest.raises(CnnlabError, match=r"device=\.\.\.\) must be a device name .* or a torch.device"):
            run.evaluate(device=bad)
    with pytest.raises(CnnlabError, match="or a torch.device"):
        cnnlab.predictor(run.path, device=1)
    res = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", out=tmp_path / "dev", quiet=True,
                       **{**TINY, "device": torch.device("cpu"), "max_steps": 2})
    assert cnnlab.load_run(res.run_dir).config["device"] == "cpu"


@pytest.mark.parametrize("content", ["null", "3"])
def test_a_config_json_holding_no_mapping_is_damaged_whatever_it_holds(run, content):
    (run.path / "config.json").write_text(content)
    with pytest.raises(CnnlabError, match=r"config.json: not the file cnnlab writes there \((null|a int)\)"):
        cnnlab.load_run(run.path)
    [row] = cnnlab.list_runs(run.path.parent)
    assert row["status"] == "damaged"


def test_api_refusals_name_the_arguments_the_caller_gave_not_flags(run, capsys):
    with pytest.raises(CnnlabError) as err:
        run.evaluate(split="val")
    assert "split='val'" in str(err.value) and "val_split" in str(err.value) and "--" not in str(err.value)
    if not torch.cuda.is_available():
        with pytest.raises(CnnlabError) as err:
            run.evaluate(device="cuda")
        assert str(err.value).startswith("device='cuda':") and "--" not in str(err.value)
    assert main(["evaluate", str(run.path), "--split", "val"]) != 0  # the command line's wording is unchanged
    assert "without --val-split" in capsys.readouterr().err


def test_loading_and_evaluating_leave_the_callers_rng_alone(run):
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    run.evaluate(device="cpu")
    run.predictor()
    run.model()
    cnnlab.predictor(run.path)
    assert torch.equal(torch.rand(2), expected)


def test_a_seeded_run_draws_the_same_weights_while_other_threads_load_and_build_nets(run, tiny_idx, tmp_path):
    """A seeded run drew its weights from torch's global generator, and so did every net built to load weights: a
    web app or notebook loading predictors in one thread while ``cnnlab.train(seed=...)`` started in another changed
    that run's weights (8 runs in 8), and the API's save-and-restore of the generator rewound other threads' draws.
    Loading draws nothing now, and builds by name wait for a seeded one."""
    import threading

    data = dict(dataset=f"idx:{tiny_idx}", quiet=True, threads=1, max_steps=1, **TINY)
    alone = cnnlab.train("resnet", out=tmp_path / "alone", seed=5, **data).model.state_dict()
    done = threading.Event()

    def load_and_build():
        while not done.is_set():
            cnnlab.create_model("inception", pretrained=True)
            run.model()
            cnnlab.create_model("resnet")

    helper = threading.Thread(target=load_and_build)
    helper.start()
    try:
        runs = [cnnlab.train("resnet", out=tmp_path / f"beside{i}", seed=5, **data) for i in range(6)]
    finally:
        done.set()
        helper.join()
    assert all(weights_equal(r.model.state_dict(), alone) for r in runs)


def test_loading_a_net_draws_nothing_from_the_global_generator(run):
    """(Through the API the generator was saved and put back around a load; the library's own loads drew.)"""
    from cnnlab.checkpoint import load_checkpoint, model_from_checkpoint

    state = torch.get_rng_state()
    model_from_checkpoint(load_checkpoint(run.path / "last.pt"))
    assert torch.equal(torch.get_rng_state(), state)


def test_the_error_classes_are_reachable_without_the_api():
    code = ("import sys, cnnlab; print(cnnlab.errors.Interrupted.__name__, cnnlab.DataError is cnnlab.errors.DataError,"
            " 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["Interrupted", "True", "False"]


def test_a_yaml_error_keeps_pyyamls_problem_and_where(tmp_path):
    path = tmp_path / "tab.yaml"
    path.write_text("epochs:\t1\n")
    with pytest.raises(CnnlabError) as err:
        TrainConfig.from_file(path)
    said = str(err.value)
    assert "cannot start any token" in said and "line 1, column 8" in said and "\n" not in said


def test_a_recipe_value_that_does_not_fit_the_typed_epochs_is_said_as_the_recipes(capsys):
    code = main(["train", "--model", "resnet", "--dataset", "fashion-mnist", "--recipe", "best", "--epochs", "5",
                 "--dry-run"])
    err = capsys.readouterr().err
    assert code != 0 and "--recipe best sets clean_epochs 10" in err and "--clean-epochs N below 5" in err
    assert "--epochs 11 or more" in err


def test_a_run_is_evaluated_with_its_own_normalisation_on_other_data(run, tiny_idx, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_idx, other)
    images = bytearray((other / "train-images-idx3-ubyte").read_bytes())
    images[16:] = bytes(b // 3 for b in images[16:])  # the same test images beside another train split
    (other / "train-images-idx3-ubyte").write_bytes(bytes(images))
    own = run.evaluate(device="cpu")
    from cnnlab.evaluation import evaluate_run

    elsewhere = evaluate_run(run.path, dataset=f"idx:{other}", device="cpu")[0]
    assert (elsewhere.loss, elsewhere.accuracy) == (own.loss, own.accuracy)


def test_a_command_quoted_in_a_refusal_keeps_its_flags():
    from cnnlab.api import as_arguments

    said = as_arguments("--device cuda: no GPU; use --device cpu, or run: cnnlab evaluate RUN --dataset idx:/new",
                        {"device": "cuda", "dataset": "mnist"})
    assert said == "device='cuda': no GPU; use device cpu, or run: cnnlab evaluate RUN --dataset idx:/new"
