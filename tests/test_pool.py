"""The models' max-pool: nn.MaxPool2d's numbers, by a quicker route where no gradient is wanted."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.models import _layers, create_model
from cnnlab.models._layers import MaxPool2d, max_of_2x2_corners


def _inputs():
    g = torch.Generator().manual_seed(0)
    yield torch.randn(600, 16, 24, 24, generator=g)  # the residual net's first pool at a test batch of 600
    yield torch.randn(300, 20, 9, 7, generator=g)  # odd sides: the last row and column are dropped
    ties = torch.randint(0, 3, (400, 8, 12, 12), generator=g).float()  # ties everywhere, as on saturated digits
    ties[0, 0, 0, 0] = float("nan")
    ties[1, 1, :2, :2] = float("-inf")
    yield ties


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_quick_pool_is_max_pool2d(fmt):
    pool = MaxPool2d(2)
    for x in _inputs():
        x = x.contiguous(memory_format=fmt)
        assert x.numel() >= _layers.QUICK_POOL_MIN_ELEMENTS
        assert pool._quick(x)
        want = F.max_pool2d(x, 2)
        with torch.inference_mode():
            got = pool(x)
        assert got.shape == want.shape and got.stride() == want.stride()  # the memory format is kept
        assert torch.equal(got.isnan(), want.isnan())
        assert torch.equal(got.nan_to_num(), want.nan_to_num())
        assert torch.equal(max_of_2x2_corners(x).nan_to_num(), got.nan_to_num())


def test_gradients_and_other_pools_take_torchs_path():
    x = torch.randn(600, 16, 24, 24, requires_grad=True)
    assert not MaxPool2d(2)._quick(x)  # autograd needs the argmax: PyTorch's own op
    with torch.no_grad():
        assert MaxPool2d(2)._quick(x)
        assert not MaxPool2d(3)._quick(x) and not MaxPool2d(2, stride=1)._quick(x)
        assert not MaxPool2d(2, padding=1)._quick(x) and not MaxPool2d(2, ceil_mode=True)._quick(x)
        assert not MaxPool2d(2)._quick(x[:1])  # small: PyTorch's one op is quicker than three
    ours, theirs = MaxPool2d(2), nn.MaxPool2d(2)
    y = torch.randint(0, 3, (600, 16, 24, 24)).float()  # ties: all the gradient goes to the first maximum
    a, b = y.clone().requires_grad_(), y.clone().requires_grad_()
    g = torch.randn(600, 16, 12, 12)
    ours(a).backward(g)
    theirs(b).backward(g)
    assert torch.equal(a.grad, b.grad)


def test_models_give_the_same_logits_and_still_trace_and_script():
    torch.manual_seed(0)
    x = torch.randn(500, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    for name in ("resnet", "inception", "basic_cnn"):
        model = create_model(name).to(memory_format=torch.channels_last).eval()
        with torch.inference_mode():
            quick = model(x)
        saved = _layers.QUICK_POOL_MIN_ELEMENTS
        try:
            _layers.QUICK_POOL_MIN_ELEMENTS = 1 << 62
            with torch.inference_mode():
                plain = model(x)
        finally:
            _layers.QUICK_POOL_MIN_ELEMENTS = saved
        assert torch.equal(quick, plain), name
    model = create_model("resnet").eval()
    with torch.no_grad():
        graph = str(torch.jit.trace(model, x[:300]).inlined_graph)  # what ONNX and TorchScript export record
    assert "max_pool2d" in graph and "maximum" not in graph
    scripted = torch.jit.script(model)
    with torch.inference_mode():
        assert torch.equal(scripted(x), model(x))
