"""Batches without a DataLoader: each split is one uint8 tensor on the training device, and a
batch is an index slice of a seeded permutation, converted and normalised as a whole batch."""

from __future__ import annotations

import copy
from typing import Iterator

import torch


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of epoch ``epoch``: a permutation from a ``torch.Generator`` seeded by (seed, epoch).

    Deriving each epoch's order from (seed, epoch) alone makes it reproducible and resumable
    without storing generator state, and identical on every rank.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def batch_beyond(batch_size: int, images: int, split: str = "the train split") -> str | None:
    """The refusal of a batch of more images than the train split it is drawn from holds (``--batch-size 100000``
    typed for 1000): every step would take the whole split, a full-batch step of GBs and minutes, without a word;
    None when it fits. Said by training and by ``analyze gradients`` alike, for a batch the user chose (a recipe's or
    a default batch above a small split takes it whole, as ever)."""
    if batch_size <= images:
        return None
    return (f"--batch-size {batch_size:,} is more than the {images:,} images of {split}: each step would take them "
            f"all; give at most {images:,}")


class BatchLoader:
    """Iterate normalised ``(x, y)`` batches of a uint8 image tensor.

    images: (N, C, H, W) uint8; labels: (N,) int64. Both are moved to ``device`` once.
    ``rank``/``world_size`` select a disjoint, equal-sized shard of each epoch's order, like
    ``DistributedSampler``: the order is padded by wrapping around so that every rank gets
    ``ceil(N / world_size)`` items. Without shuffling (evaluation) shards are not padded, so that
    sums reduced over ranks count every item exactly once. ``batch_size`` is per rank. The last
    partial batch is kept.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        mean: float,
        std: float,
        shuffle: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a (N, C, H, W) uint8 tensor, got {tuple(images.shape)} {images.dtype}")
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.memory_format = memory_format
        # (x / 255 - mean) / std == x * scale + shift, done in one fused pass per batch
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std

    @property
    def num_samples(self) -> int:
        """Items this rank sees per epoch."""
        n = len(self.labels)
        if self.shuffle:
            return -(-n // self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's indices for ``epoch`` (on the CPU)."""
        n = len(self.labels)
        idx = epoch_permutation(n, self.seed, epoch) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            if self.shuffle:
                total = self.num_samples * self.world_size
                if total > n:  # wrap around so that every rank gets the same count
                    idx = torch.cat([idx, idx[: total - n]])
            idx = idx[self.rank :: self.world_size]
        return idx

    def normalise(self, images_u8: torch.Tensor) -> torch.Tensor:
        x = images_u8.to(torch.float32).mul_(self.scale).add_(self.shift)
        return x.contiguous(memory_format=self.memory_format)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``epoch`` from batch number ``start`` on (for resuming mid-epoch)."""
        idx = self.order(epoch).to(self.device)
        for i in range(start * self.batch_size, len(idx), self.batch_size):
            j = idx[i : i + self.batch_size]
            yield self.normalise(self.images[j]), self.labels[j]

    def __iter__(self):
        return self.batches(0)

    def every(self, k: int) -> "BatchLoader":
        """The same loader (normalisation, device, shard, memory format) over every ``k``-th item: a sample
        that follows any ordering of the items, sorted by class included."""
        sub = copy.copy(self)
        sub.images, sub.labels = self.images[::k].contiguous(), self.labels[::k].contiguous()
        return sub
