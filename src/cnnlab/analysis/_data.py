"""The loaders both analyses use: a seeded subset of a split, normalised as the net was trained."""

from __future__ import annotations

import torch

from cnnlab.data import BatchLoader


def subset_loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int, normalisation: tuple[float, float],
                  device: torch.device, *, limit: int = 0, subset_seed: int = 0, shuffle: bool = False,
                  seed: int = 0) -> BatchLoader:
    """A loader over the first ``limit`` items of a permutation seeded by ``subset_seed`` (class-mixed
    and the same every time), or over all items when ``limit`` is 0 or not smaller than the split; its images
    normalised with ``normalisation`` (mean, std): a trained net's own (``Subject.normalisation``, what it was trained
    with, as ``evaluate`` uses), or the data's train split's for a net trained here."""
    if 0 < limit < len(labels):
        idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(subset_seed))[:limit]
        images, labels = images[idx], labels[idx]
    mean, std = normalisation
    return BatchLoader(images, labels, batch_size, mean=mean, std=std, shuffle=shuffle, seed=seed, device=device)
