"""What every loader returns: a :class:`Dataset` (both splits as uint8/int64 tensors, with what a run
records about them), and :func:`train_statistics`, the normalisation statistics of a train split."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Dataset:
    """Both splits of a dataset as tensors: images (N, C, H, W) uint8, labels (N,) int64."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    mean: float
    std: float
    source: str

    @property
    def in_channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_images.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def info(self) -> dict:
        """What a run records about its data (enough for predict/serve to normalise the same way)."""
        return {
            "name": self.name,
            "classes": list(self.classes),
            "mean": self.mean,
            "std": self.std,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "train_size": len(self.train_labels),
            "test_size": len(self.test_labels),
            "source": self.source,
        }


def train_statistics(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of a uint8 image tensor's pixels scaled to [0, 1]."""
    x = images.to(torch.float64).div_(255.0)
    return float(x.mean()), float(x.std())
