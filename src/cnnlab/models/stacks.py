"""Plain and residual conv stacks of a chosen depth, for measuring the lecture's claim that
residual connections keep gradients alive in deep nets.

Both kinds share the same stem and head, so they differ only in the skip connections::

    stem:  conv(in -> width, k5), maxpool 2, relu         28x28 -> 12x12 (as in the lecture's nets)
    body:  ``depth`` 3x3 convs of ``width`` channels, padding 1, at 12x12
           plain:    (conv, [bn], relu) x depth
           residual: the lecture's ResidualBlock x depth/2 (two convs per block)
    head:  flatten, fc(width * 12 * 12 -> classes)

``depth`` counts the 3x3 convs of the body; the net has ``depth + 2`` weight layers in all.
Weights keep PyTorch's default initialisation, as the lecture's code does. With ``norm="none"``
(the default, as in the lecture) there are no normalisation layers; ``norm="batch"`` puts a
BatchNorm after every conv of both kinds, to show what normalisation alone changes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.models._layers import MaxPool2d, pooled_side
from cnnlab.models._registry import register_model
from cnnlab.models.resnet import ResidualBlock

NORMS = ("none", "batch")
KINDS = ("plain", "residual")


def _norm(norm: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()


class NormResidualBlock(ResidualBlock):
    """The lecture's block with a BatchNorm after each conv: ``relu(x + bn2(conv2(relu(bn1(conv1(x))))))``."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(x + y)


class ConvStack(nn.Module):
    """A stem, ``depth`` 3x3 convs (plain, or in the lecture's residual blocks), and a linear head."""

    def __init__(self, kind: str = "plain", depth: int = 8, width: int = 8, norm: str = "none",
                 in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if depth < 0 or (kind == "residual" and depth % 2):
            raise ValueError(f"depth must be >= 0{' and even (two convs per ResidualBlock)' if kind == 'residual' else ''}, "
                             f"got {depth}")
        if width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        self.kind, self.depth, self.width, self.norm = kind, depth, width, norm

        self.stem = nn.Conv2d(in_channels, width, kernel_size=5)
        self.stem_norm = _norm(norm, width)
        self.pool = MaxPool2d(2)
        if kind == "plain":
            layers: list[nn.Module] = []
            for _ in range(depth):
                layers += [nn.Conv2d(width, width, kernel_size=3, padding=1), _norm(norm, width), nn.ReLU()]
            self.body = nn.Sequential(*layers)
        else:
            block = NormResidualBlock if norm == "batch" else ResidualBlock
            self.body = nn.Sequential(*[block(width) for _ in range(depth // 2)])
        side = pooled_side(image_size, 1)  # 28 -> (28 - 5 + 1) // 2 = 12; the body keeps the size
        self.fc = nn.Linear(width * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.pool(self.stem_norm(self.stem(x))))  # (B, width, 12, 12)
        x = self.body(x)  # (B, width, 12, 12)
        return self.fc(torch.flatten(x, 1))  # (B, width * 144) -> (B, classes)


@register_model
def plain_stack(depth: int = 8, width: int = 8, norm: str = "none", in_channels: int = 1, num_classes: int = 10,
                image_size: int = 28) -> ConvStack:
    """Plain conv stack: stem, depth x (3x3 conv, relu), linear head; no skips (for analyze gradients)."""
    return ConvStack("plain", depth, width, norm, in_channels, num_classes, image_size)


@register_model
def residual_stack(depth: int = 8, width: int = 8, norm: str = "none", in_channels: int = 1, num_classes: int = 10,
                   image_size: int = 28) -> ConvStack:
    """Residual conv stack: stem, depth/2 of the lecture's ResidualBlocks, linear head (for analyze gradients)."""
    return ConvStack("residual", depth, width, norm, in_channels, num_classes, image_size)
