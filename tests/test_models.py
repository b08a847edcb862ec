"""Registry-driven model tests, and compatibility with the lecture's own classes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.lecture import LectureBasicNet, LectureInceptionNet, LectureResNet
from cnnlab.errors import CnnlabError
from cnnlab.models import InceptionModule, count_parameters, create_model, list_models

EXPECTED_PARAMS = {"inception": 97_298, "inception_relu": 97_298, "resnet": 41_514, "basic_cnn": 8_490}


def test_registry_names():
    assert set(EXPECTED_PARAMS) <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_forward_shape_nan_and_gradients(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(3, 1, 28, 28)
    out = model(x)
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 1, 2])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name}.{pname} got an all-zero gradient"


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts(name):
    assert count_parameters(create_model(name)) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_channels_classes_and_size_are_arguments(name):
    model = create_model(name, in_channels=3, num_classes=5, image_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_channels_last_input(name):
    model = create_model(name).to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    ref = create_model(name)
    ref.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x), ref(x.contiguous()), rtol=1e-4, atol=1e-5)


def test_unknown_model_lists_valid_names():
    with pytest.raises(CnnlabError) as err:
        create_model("vgg")
    for name in list_models():
        assert name in str(err.value)


def test_inception_module_keeps_size_and_has_88_channels():
    m = InceptionModule(10)
    y = m(torch.randn(2, 10, 12, 12))
    assert y.shape == (2, 88, 12, 12)
    assert [t.shape[1] for t in m.branches(torch.randn(1, 10, 12, 12)).values()] == [24, 16, 24, 24]


def _affine_defect(f, x: torch.Tensor, y: torch.Tensor) -> float:
    """How far ``f`` is from affine along the line through x and y, inside and beyond the segment."""
    worst = 0.0
    for a in (0.3, 2.5, -1.0):
        lhs, rhs = f(a * x + (1 - a) * y), a * f(x) + (1 - a) * f(y)
        worst = max(worst, ((lhs - rhs).abs().max() / rhs.abs().max()).item())
    return worst


def test_the_lectures_inception_module_is_affine_and_googlenets_is_not():
    """docs/accuracy.md rests on this: the lecture's module has no nonlinearity, so the lecture's Inception net
    has only its two max-pool + ReLU stages; inception_relu (a ReLU after every conv, as in GoogLeNet) has more."""
    torch.manual_seed(0)
    x, y = torch.randn(4, 10, 12, 12, dtype=torch.float64), torch.randn(4, 10, 12, 12, dtype=torch.float64)
    lecture = create_model("inception").double()
    assert _affine_defect(lecture.incept1, x, y) < 1e-12
    assert _affine_defect(lambda t: lecture.conv2(lecture.incept1(t)), x, y) < 1e-12
    z, w = torch.randn(4, 20, 4, 4, dtype=torch.float64), torch.randn(4, 20, 4, 4, dtype=torch.float64)
    assert _affine_defect(lambda t: lecture.fc(lecture.incept2(t).flatten(1)), z, w) < 1e-12
    googlenet = create_model("inception_relu").double()
    assert _affine_defect(googlenet.incept1, x, y) > 0.01
    googlenet.load_state_dict(lecture.state_dict())  # the same weights: only the ReLUs differ
    assert not torch.equal(googlenet.incept1(x), lecture.incept1(x))


@pytest.mark.parametrize(
    "name,lecture_cls", [("inception", LectureInceptionNet), ("resnet", LectureResNet), ("basic_cnn", LectureBasicNet)]
)
def test_lecture_state_dict_loads_strict_and_outputs_and_gradients_match(name, lecture_cls):
    """Bitwise equal outputs and gradients: where our code differs from the lecture's text (the residual
    net applies ReLU after the max-pool, which commutes with it exactly), nothing observable changes."""
    torch.manual_seed(1)
    lecture = lecture_cls()
    ours = create_model(name)
    lsd, osd = lecture.state_dict(), ours.state_dict()
    assert list(lsd) == list(osd)
    assert all(lsd[k].shape == osd[k].shape for k in lsd)
    ours.load_state_dict(lsd, strict=True)
    x = torch.randn(16, 1, 28, 28)
    x[:, :, :6] = -1.0  # whole pooling windows below zero and ties, where the two orders could differ
    out_ours, out_lecture = ours(x), lecture(x)
    torch.testing.assert_close(out_ours, out_lecture, rtol=0, atol=0)
    y = torch.arange(16) % 10
    torch.nn.functional.cross_entropy(out_ours, y).backward()
    torch.nn.functional.cross_entropy(out_lecture, y).backward()
    lecture_params = dict(lecture.named_parameters())
    for key, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, lecture_params[key].grad, rtol=0, atol=0, msg=key)
