"""The lecture series' previous plain CNN, kept as a baseline."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.models._layers import MaxPool2d, pooled_side
from cnnlab.models._registry import register_model


class BasicCNN(nn.Module):
    """conv(1->10, k5), maxpool, relu, conv(10->20, k5), maxpool, relu, fc(20*4*4 = 320 -> 10)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.pooling = MaxPool2d(2)
        side = pooled_side(image_size, 2)  # 28 -> 12 -> 4
        self.fc = nn.Linear(20 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.pooling(self.conv1(x)))  # (B, 10, 12, 12)
        x = F.relu(self.pooling(self.conv2(x)))  # (B, 20, 4, 4)
        return self.fc(torch.flatten(x, 1))  # (B, 320) -> (B, classes)


@register_model
def basic_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> BasicCNN:
    """The series' plain two-conv net (8,490 parameters for 1x28x28 inputs, 10 classes)."""
    return BasicCNN(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
