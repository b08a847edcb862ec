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


def test_a_refusal_through_train_names_no_flag_and_its_command_is_the_call(tiny_idx, tmp_path, monkeypatch):
    """``cnnlab.train(out='x1')`` twice: ``out x1 already holds a run; continue it with 'cnnlab train --resume x1', or
    pick a fresh --out`` (``api.as_arguments`` kept every flag of a clause that quoted a command)."""
    monkeypatch.chdir(tmp_path)
    settings = dict(dataset=f"idx:{tiny_idx}", epochs=1, batch_size=32, device="cpu", lr=0.05, quiet=True)
    result = cnnlab.train("basic_cnn", out="x1", **settings)
    # (and the reprs of a real run: one line each, apiA's 6)
    assert _short(result).startswith(f"TrainResult(run_dir='x1', model='basic_cnn', dataset='idx:{tiny_idx}', "
                                     f"stopped='finished', accuracy={result.final.accuracy!r}, best_accuracy=")
    assert _short(cnnlab.load_run("x1")) == (f"Run(path='x1', model='basic_cnn', dataset='idx:{tiny_idx}', "
                                             f"status='finished', final_accuracy={result.final.accuracy!r})")
    assert result.config.model == "basic_cnn" and result.config == cnnlab.TrainConfig(**cnnlab.load_run("x1").config)
    with pytest.raises(cnnlab.RunError) as err:
        cnnlab.train("basic_cnn", out="x1", **settings)
    assert str(err.value) == ("out='x1' already holds a run; continue it with cnnlab.train(resume='x1'), or pick a "
                              "fresh out")
    (tmp_path / "x1" / "last.pt").unlink()
    with pytest.raises(cnnlab.RunError) as err:
        cnnlab.train(resume="x1", quiet=True)
    assert str(err.value).endswith("continue from its best epoch: cnnlab.train(resume='x1/best.pt')")
    assert "--" not in str(err.value)


@pytest.mark.parametrize("message, given, said", [
    ("interrupted at step 2; continue with: cnnlab train --resume 'my run' --max-steps 20", {},
     "interrupted at step 2; continue with: cnnlab.train(resume='my run', max_steps=20)"),
    ("r: the run's folder was moved or deleted while its run trained (if it was moved, continue there with: cnnlab "
     "train --resume NEW_PLACE)", {}, "r: the run's folder was moved or deleted while its run trained (if it was "
     "moved, continue there with: cnnlab.train(resume=NEW_PLACE))"),
    ("--resume r: no position to continue from; start it again: cnnlab train --config r --out r", {"resume": "r"},
     "resume='r': no position to continue from; start it again: cnnlab.train(..., out='r')"),
    ("--resume r: its dataset is not there; give its new place: cnnlab train --resume r --dataset idx:NEW_DIR", {},
     "resume r: its dataset is not there; give its new place: cnnlab.train(resume='r', dataset='idx:NEW_DIR')"),
    ("'latest': no runs under runs/ yet; train one with 'cnnlab train', or give a run folder", {},
     "'latest': no runs under runs/ yet; train one with cnnlab.train(), or give a run folder"),
    ("no best.pt: --checkpoint last, or resume the run (cnnlab train --resume $'a\\nb'), which writes best.pt again",
     {"which": "best"}, "no best.pt: which='last', or resume the run (cnnlab.train(resume='a\\nb')), which writes "
     "best.pt again"),
    ("resume the run itself with 'cnnlab train --resume 'it'\\''s'', or copy the file; --out", {},
     "resume the run itself with cnnlab.train(resume=\"it's\"), or copy the file; out"),
    ("r: in use (resume then: cnnlab train --resume r --channels-last --epochs 3 --lr 0.01) and --lr 0.5", {"lr": 0.5},
     "r: in use (resume then: cnnlab.train(resume='r', channels_last=True, epochs=3, lr=0.01)) and lr=0.5"),
    ("--out r holds a run: 'cnnlab train --resume r', or 'cnnlab train --out r2' --lr", {},  # two quoted commands
     "out r holds a run: cnnlab.train(resume='r'), or cnnlab.train(out='r2') lr"),
    # another command, or cnnlab.train's help, is a command to run: its flags stay, the message's others do not
    ("--device cuda: no GPU; use --device cpu, or run: cnnlab evaluate RUN --dataset idx:/new", {"device": "cuda"},
     "device='cuda': no GPU; use device cpu, or run: cnnlab evaluate RUN --dataset idx:/new"),
    ("see 'cnnlab train --help', then --lr", {}, "see 'cnnlab train --help', then lr"),
    ("another cnnlab process holds it (cnnlab writes --out there)", {}, "another cnnlab process holds it (cnnlab "
     "writes out there)"),
])
def test_commands_in_a_refusal_are_said_as_the_apis_calls(message, given, said):
    from cnnlab.api import as_arguments

    assert as_arguments(message, given) == said


def test_the_commands_the_api_knows_are_the_command_lines():
    import argparse

    from cnnlab.api import COMMANDS
    from cnnlab.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(COMMANDS) == sorted(sub.choices)


def test_a_refusal_reworded_keeps_its_class_and_what_it_carries():
    from cnnlab.errors import DataUnreadable, Interrupted, WriteError

    stop = Interrupted("continue with: cnnlab train --resume r", 143).reworded("continue with: cnnlab.train(...)")
    assert type(stop) is Interrupted and stop.exit_code == 143 and str(stop) == "continue with: cnnlab.train(...)"
    full = WriteError("cannot write r/x: full; --out elsewhere", 28, "full").reworded("cannot write r/x: full")
    assert isinstance(full, OSError) and (full.errno, full.reason, str(full)) == (28, "full", "cannot write r/x: full")
    gone = DataUnreadable("--x: cannot be read", "p", OSError(5, "EIO")).reworded("x: cannot be read")
    assert (gone.path, gone.cause.errno, str(gone)) == ("p", 5, "x: cannot be read")


@pytest.mark.parametrize("name", ["runs/r1", "my run", "it's", "a\nb", "x\udcffy", "中文 x", "$HOME", "a\\b", "a'b\nc"])
def test_shell_unquoted_undoes_shell_quoted(name):
    from cnnlab.errors import shell_quoted, shell_unquoted

    assert shell_unquoted(shell_quoted(name)) == name


def _many_classes_summary(n: int = 1000) -> dict:
    """A summary.json of ``n`` classes as :func:`cnnlab.report.summarize` writes one (its size grows with ``n``)."""
    classes = [f"class_{i:04d}_" + "x" * 40 for i in range(n)]
    return {"split": "test", "n": 2 * n, "loss": 1.5, "accuracy": 61.25,
            "per_class": [{"class": c, "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for c in classes],
            "confusion": [[2 if i == j else 0 for j in range(n)] for i in range(n)],
            "mistakes": [{"index": i, "true": classes[i], "predicted": classes[-i], "probability": 0.9}
                         for i in range(36)], "target": None, "train_seconds": 3.5, "parameters": 12345, "ema": None}


def _short(obj) -> str:
    """``repr(obj)``, checked to be one line of a bounded length (TrainConfig's, every setting, is the longest: ~600)."""
    said = repr(obj)
    assert len(said) <= 700 and "\n" not in said, f"{type(obj).__name__}: {len(said)} characters: {said[:300]}"
    return said


def test_the_reprs_of_what_the_api_returns_stay_short_with_a_thousand_classes(tmp_path):
    """``repr(cnnlab.load_run(run))`` was 5.3 KB for a 10-class run and the ``TrainResult``'s about 5 KB (the whole
    summary: the per-class table, the confusion matrix, 36 mistakes); with 1,000 classes, megabytes in a notebook."""
    from cnnlab.api import Run
    from cnnlab.config import TrainConfig
    from cnnlab.engine import TrainResult
    from cnnlab.evaluation import EvalResult
    from cnnlab.predict import Failure, NumberPrediction, Predictor
    from cnnlab.preprocessing import NumberFields

    summary = _many_classes_summary()
    classes = [row["class"] for row in summary["per_class"]]
    config = TrainConfig(model="resnet", dataset="folder:/data/glyphs", epochs=2)
    metrics = [{"epoch": e, "test_acc": 50.0 + e} for e in range(1, 201)]
    run = Run(tmp_path / "runs" / "r1", vars(config), metrics, summary, "finished")
    said = _short(run)
    assert said == (f"Run(path={str(tmp_path / 'runs' / 'r1')!r}, model='resnet', dataset='folder:/data/glyphs', "
                    "status='finished', final_accuracy=61.25)")
    assert "final_accuracy=None" in _short(Run(tmp_path, {}, [], None, "running"))
    final = EvalResult(1.5, 61.25, 2000, 1225, torch.zeros(2000, dtype=torch.long), torch.ones(2000))
    assert _short(final) == "EvalResult(loss=1.5, accuracy=61.25, n=2000, correct=1225)"
    result = TrainResult(tmp_path / "runs" / "r1", metrics, final, 70.5, 12345, 3.5, torch.nn.Linear(1000, 1000),
                         None, summary, "finished", "val", config)
    said = _short(result)
    assert said == (f"TrainResult(run_dir={str(tmp_path / 'runs' / 'r1')!r}, model='resnet', "
                    "dataset='folder:/data/glyphs', stopped='finished', accuracy=61.25, best_accuracy=70.5, "
                    "best_split='val')")
    probabilities = list(np.full(1000, 0.001))
    probabilities[7] = 0.5
    one = Prediction("a.png", probabilities, classes, np.zeros((28, 28), np.float32))
    assert _short(one) == f"Prediction(name='a.png', label={classes[7]!r}, probability=0.5)"
    number = NumberPrediction("n.png", [one] * 12, [(2, ".")], line=3)
    assert _short(number).startswith("NumberPrediction(name='n.png', label=")
    _short(NumberFields([np.zeros((28, 28), np.float32)] * 12, {3: [np.zeros((28, 28))] * 2}, [(2, ".")], 1, {3: 2.5}))
    _short(Failure("b.png", "b.png: not an image; give a PNG"))
    _short(config)
    net = cnnlab.create_model("basic_cnn", num_classes=1000)
    state = {"model": {"name": "basic_cnn", "args": {"num_classes": 1000}}, "state_dict": net.state_dict(),
             "data": {"classes": classes, "mean": 0.5, "std": 0.25, "name": "folder:/data/glyphs"}}
    assert _short(Predictor(state, source="g.pt")).startswith("Predictor(model='basic_cnn', dataset='folder:glyphs'")
