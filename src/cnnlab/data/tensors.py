"""IDX arrays as the tensors a Dataset holds: (N, 1, H, W) uint8 images and (N,) int64 labels.

Apart from :mod:`cnnlab.data.idx` (numpy only) so that what reads and checks files (``cnnlab data info``)
never imports torch.
"""

from __future__ import annotations

import numpy as np
import torch

from cnnlab.data.catalog import ROLES
from cnnlab.data.idx import decode_idx
from cnnlab.errors import DataError


def images_labels_to_tensors(images: np.ndarray, labels: np.ndarray, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) uint8 and (N,) uint8 arrays -> (N, 1, H, W) uint8 and (N,) int64 tensors."""
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{name}: {images.shape[0]} images but {labels.shape[0]} labels; the image and label files do not belong together"
        )
    if not images.flags.writeable:  # torch wants memory it may write; the readers' arrays already are
        images = images.copy()
    x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, H, W) uint8
    y = torch.from_numpy(labels.astype(np.int64))  # (N,)
    return x, y


def arrays_to_tensors(arrays: dict[str, np.ndarray], where: str) -> tuple[torch.Tensor, ...]:
    """The four IDX arrays, by role -> train images, train labels, test images, test labels.

    ``where`` names the source in messages; both splits must hold images of one shape.
    """
    train = images_labels_to_tensors(arrays["train_images"], arrays["train_labels"], f"{where} train split")
    test = images_labels_to_tensors(arrays["test_images"], arrays["test_labels"], f"{where} test split")
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(f"{where}: train images are {tuple(train[0].shape[2:])} but test images "
                        f"{tuple(test[0].shape[2:])}; both splits need images of one size")
    return (*train, *test)


def decode_splits(files: dict[str, bytes], where: str) -> tuple[torch.Tensor, ...]:
    """The four IDX files' uncompressed bytes, by role -> train images, train labels, test images, test labels."""
    arrays = {role: decode_idx(data, f"{where} {ROLES[role][0]}", ROLES[role][1]) for role, data in files.items()}
    return arrays_to_tensors(arrays, where)
