"""The lecture's GoogLeNet-style Inception module and net.

Attribute names match the lecture's code exactly, so a ``state_dict`` saved from the lecture's
own classes loads here with ``strict=True`` and gives identical outputs.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.models._layers import MaxPool2d, pooled_side
from cnnlab.models._registry import register_model

#: Output channels of each branch, in concatenation order (pool, 1x1, 5x5, 3x3).
BRANCH_CHANNELS = {"pool": 24, "1x1": 16, "5x5": 24, "3x3": 24}


class InceptionModule(nn.Module):
    """Four parallel branches concatenated on channels; 24 + 16 + 24 + 24 = 88 output channels.

    Branches: 3x3 average pool then 1x1 conv (24); 1x1 conv (16); 1x1 (16) then 5x5 (24);
    1x1 (16) then 3x3 (24) then 3x3 (24). Every branch keeps the spatial size.

    Fix against the lecture: the lecture pools with ``avg_pool2d(x, 3, stride=3, padding=1)``,
    which shrinks a 12x12 map to 4x4 while the other branches stay 12x12, so ``torch.cat`` fails.
    The intended stride is 1 (as in GoogLeNet), which keeps the size and is what we use.

    Nonlinearity: the lecture's module has none. Average pooling, convolutions and concatenation are all
    affine, so the module is one affine map of its input, and so is the module followed by the next conv or
    fc. ``relu=True`` puts a ReLU after every convolution, as GoogLeNet does (Szegedy et al. 2014: "all the
    convolutions, including those inside the Inception modules, use rectified linear activation"); it adds
    no parameter.
    """

    out_channels = sum(BRANCH_CHANNELS.values())  # 88

    def __init__(self, in_channels: int, relu: bool = False):
        super().__init__()
        self.relu = relu
        self.branch_pool = nn.Conv2d(in_channels, 24, kernel_size=1)

        self.branch1x1 = nn.Conv2d(in_channels, 16, kernel_size=1)

        self.branch5x5_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_2 = nn.Conv2d(16, 24, kernel_size=5, padding=2)

        self.branch3x3_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch3x3_2 = nn.Conv2d(16, 24, kernel_size=3, padding=1)
        self.branch3x3_3 = nn.Conv2d(24, 24, kernel_size=3, padding=1)

    def branches(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each branch's output, keyed by the stable names of :data:`BRANCH_CHANNELS`."""
        act = F.relu if self.relu else _same  # the lecture's module: no activation at all
        y1 = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)  # stride 1: see class docstring
        y1 = act(self.branch_pool(y1))  # (B, 24, H, W)

        y2 = act(self.branch1x1(x))  # (B, 16, H, W)

        y3 = act(self.branch5x5_2(act(self.branch5x5_1(x))))  # (B, 24, H, W)

        y4 = act(self.branch3x3_3(act(self.branch3x3_2(act(self.branch3x3_1(x))))))  # (B, 24, H, W)
        return {"pool": y1, "1x1": y2, "5x5": y3, "3x3": y4}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(list(self.branches(x).values()), dim=1)  # (B, 88, H, W)


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


class InceptionNet(nn.Module):
    """The lecture's Inception net: conv(1->10, k5), maxpool, relu, Inception(10),
    conv(88->20, k5), maxpool, relu, Inception(20), fc(88*4*4 = 1408 -> 10) for 28x28 inputs.

    Without ``relu_in_modules`` (the lecture) its only nonlinearities are the two max-pool + ReLU stages:
    Inception(10) + conv2 is one affine map, Inception(20) + fc another, so the net computes what a
    two-convolution net of 10 and 20 channels computes (docs/accuracy.md)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 relu_in_modules: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(InceptionModule.out_channels, 20, kernel_size=5)

        self.incept1 = InceptionModule(in_channels=10, relu=relu_in_modules)
        self.incept2 = InceptionModule(in_channels=20, relu=relu_in_modules)

        self.mp = MaxPool2d(2)
        side = pooled_side(image_size, 2)  # 28 -> 12 -> 4
        self.fc = nn.Linear(InceptionModule.out_channels * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.mp(self.conv1(x)))  # (B, 10, 12, 12)
        x = self.incept1(x)  # (B, 88, 12, 12)
        x = F.relu(self.mp(self.conv2(x)))  # (B, 20, 4, 4)
        x = self.incept2(x)  # (B, 88, 4, 4)
        # flatten, not view: view fails on channels-last tensors
        x = torch.flatten(x, 1)  # (B, 1408)
        return self.fc(x)


@register_model
def inception(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> InceptionNet:
    """The lecture's Inception net (97,298 parameters for 1x28x28 inputs, 10 classes)."""
    return InceptionNet(in_channels=in_channels, num_classes=num_classes, image_size=image_size)


@register_model
def inception_relu(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> InceptionNet:
    """The Inception net with GoogLeNet's ReLU after every conv in its modules (97,298 parameters; not the lecture's)."""
    return InceptionNet(in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                        relu_in_modules=True)
