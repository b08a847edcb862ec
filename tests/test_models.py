"""Registry-driven model tests, and compatibility with the lecture's own classes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.models import InceptionModule, count_parameters, create_model, list_models

EXPECTED_PARAMS = {"inception": 97_298, "resnet": 41_514, "basic_cnn": 8_490}


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


# --- The lecture's own classes, copied from the seed (with the one stride fix) --------------------


class LectureInceptionModule(torch.nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch_pool = torch.nn.Conv2d(in_channels, 24, kernel_size=1)
        self.branch1x1 = torch.nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_1 = torch.nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_2 = torch.nn.Conv2d(16, 24, kernel_size=5, padding=2)
        self.branch3x3_1 = torch.nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch3x3_2 = torch.nn.Conv2d(16, 24, kernel_size=3, padding=1)
        self.branch3x3_3 = torch.nn.Conv2d(24, 24, kernel_size=3, padding=1)

    def forward(self, x):
        y1 = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)  # the lecture says stride=3: a bug
        y1 = self.branch_pool(y1)
        y2 = self.branch1x1(x)
        y3 = self.branch5x5_1(x)
        y3 = self.branch5x5_2(y3)
        y4 = self.branch3x3_1(x)
        y4 = self.branch3x3_2(y4)
        y4 = self.branch3x3_3(y4)
        return torch.cat([y1, y2, y3, y4], dim=1)


class LectureInceptionNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = torch.nn.Conv2d(88, 20, kernel_size=5)
        self.incept1 = LectureInceptionModule(in_channels=10)
        self.incept2 = LectureInceptionModule(in_channels=20)
        self.mp = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(1408, 10)

    def forward(self, x):
        in_size = x.size(0)
        x = F.relu(self.mp(self.conv1(x)))
        x = self.incept1(x)
        x = F.relu(self.mp(self.conv2(x)))
        x = self.incept2(x)
        x = x.view(in_size, -1)
        return self.fc(x)


class LectureResidualBlock(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.channels = channels
        self.conv1 = torch.nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = torch.nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = self.conv2(y)
        return F.relu(x + y)


class LectureResNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, kernel_size=5)
        self.conv2 = torch.nn.Conv2d(16, 32, kernel_size=5)
        self.mp = torch.nn.MaxPool2d(2)
        self.rblock1 = LectureResidualBlock(16)
        self.rblock2 = LectureResidualBlock(32)
        self.fc = torch.nn.Linear(512, 10)

    def forward(self, x):
        in_size = x.size(0)
        x = self.mp(F.relu(self.conv1(x)))
        x = self.rblock1(x)
        x = self.mp(F.relu(self.conv2(x)))
        x = self.rblock2(x)
        x = x.view(in_size, -1)
        return self.fc(x)


class LectureBasicNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = torch.nn.Conv2d(10, 20, kernel_size=5)
        self.pooling = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(320, 10)

    def forward(self, x):
        batch_size = x.size(0)
        x = F.relu(self.pooling(self.conv1(x)))
        x = F.relu(self.pooling(self.conv2(x)))
        x = x.view(batch_size, -1)
        return self.fc(x)


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
