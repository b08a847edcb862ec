"""What every loader returns: a :class:`Dataset` (both splits as uint8/int64 tensors, with what a run
records about them), :func:`train_statistics`, the normalisation statistics of a train split, and
:func:`validate_dataset`, what every loaded dataset must satisfy to be trained on."""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass

import torch

from cnnlab.errors import DataError

#: The smallest image side the lecture's nets take: two stages of an unpadded 5x5 convolution and a 2x2
#: max-pool turn 16 pixels into (16 - 4) // 2 = 6, then (6 - 4) // 2 = 1; 15 would end at 0.
MIN_IMAGE_SIZE = 16
#: The largest: MNIST-like images are 28x28; beyond this a net's first linear layer alone outgrows memory.
MAX_IMAGE_SIZE = 1024
#: What tells one version of a dataset from another in :meth:`Dataset.info` (mean and std: most changed images; the
#: CRC-32s: any changed image or label, or another order of them). A key a run's record lacks (one of an older
#: cnnlab, made before ``test_crc32`` or ``train_crc32``) is not compared: such runs resume and are reused as before.
FINGERPRINT = ("classes", "train_size", "test_size", "mean", "std", "in_channels", "image_size", "test_crc32",
               "train_crc32")
#: How a message names each fingerprint key that changed (the keys themselves are a record's, not a user's words).
_CHANGE_WORDS = {"classes": "the classes", "train_size": "the number of train images",
                 "test_size": "the number of test images", "mean": "the train images' mean",
                 "std": "their spread", "in_channels": "the colour channels", "image_size": "the image size",
                 "test_crc32": "the test images or labels", "train_crc32": "the train images or labels"}
_PLURAL_CHANGES = ("classes", "in_channels", "test_crc32", "train_crc32")
#: A split's CRC-32 is named only where no other change says already that its images differ.
_SAID_BY = {"train_crc32": ("train_size", "mean", "std"), "test_crc32": ("test_size",)}
#: At most this many odd labels or empty classes are named in a message.
_NAMED = 8


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

    def changed_since(self, recorded: dict, keys: tuple[str, ...] = FINGERPRINT) -> list[str]:
        """Which of ``keys`` differ between what a run recorded of its data (:meth:`info`, in its config.json
        or checkpoint) and this dataset now; keys the record lacks (an older run) are not compared."""
        return fingerprint_changes(recorded, self.info(), keys)

    def describe_changes(self, recorded: dict) -> str:
        """:meth:`changed_since` in words for a message ("the test images or labels differ"); empty when nothing
        changed (:func:`describe_fingerprint_changes`)."""
        return describe_fingerprint_changes(recorded, self.info())

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
            "test_crc32": self.test_crc32,
            "train_crc32": self.train_crc32,
            "source": self.source,
        }

    @functools.cached_property
    def test_crc32(self) -> int:
        """CRC-32 of the test split's images and labels: a test set replaced by another of the same size (which
        sizes, mean and std, all of the train split, do not see) is not the one a run was scored on."""
        return _crc32(self.test_images, self.test_labels)

    @functools.cached_property
    def train_crc32(self) -> int:
        """CRC-32 of the train split's images and labels: labels fixed (a misfiled image moved to its class folder,
        a label file corrected) or images reordered leave the size, mean and std as they were, and a run trained on
        the old split is not one of the new (about 40 ms for MNIST's 60,000 images, once per load)."""
        return _crc32(self.train_images, self.train_labels)


def fingerprint_changes(recorded: dict, now: dict, keys: tuple[str, ...] = FINGERPRINT) -> list[str]:
    """Which of ``keys`` differ between two records of data (:meth:`Dataset.info`: a run's and the data now, or two
    torchrun ranks'); a key either record lacks (an older run's) is not compared."""
    return [k for k in keys if k in recorded and k in now and not _same(recorded[k], now[k])]


def same_data(recorded, other) -> bool | None:
    """Whether two runs' records of their data (:meth:`Dataset.info`: a run's config.json's, a checkpoint's) are of
    the same data, wherever it lay (:func:`fingerprint_changes` finds no difference); None where either is no record
    (a file of a very old cnnlab, or edited) or they share no key to compare: it is not known."""
    if not isinstance(recorded, dict) or not isinstance(other, dict) \
            or not any(k in recorded and k in other for k in FINGERPRINT):
        return None
    return not fingerprint_changes(recorded, other)


def describe_fingerprint_changes(recorded: dict, now: dict) -> str:
    """:func:`fingerprint_changes` in words for a message ("the test images or labels differ"); empty when nothing
    changed. A split's CRC-32 is left out beside a change that says its images differ (its size; the train
    split's mean or spread)."""
    changed = fingerprint_changes(recorded, now)
    changed = [k for k in changed if not set(_SAID_BY.get(k, ())) & set(changed)]
    words = [_CHANGE_WORDS.get(k, k) for k in changed]
    if "std" in changed and "mean" not in changed:
        words[changed.index("std")] = "the train images' spread"
    if len(words) > 1:
        return f"{', '.join(words[:-1])} and {words[-1]} differ"
    return f"{words[0]} {'differ' if changed[0] in _PLURAL_CHANGES else 'differs'}" if words else ""


def _crc32(images: torch.Tensor, labels: torch.Tensor) -> int:
    """CRC-32 of a split's image bytes, then of its labels' (int64) bytes."""
    crc = zlib.crc32(images.contiguous().cpu().numpy())
    return zlib.crc32(labels.contiguous().cpu().numpy(), crc)


def split_validation(data: Dataset, fraction: float, seed: int):
    """A seeded hold-out of the train split: ((train images, labels), (val images, labels))."""
    n = len(data.train_labels)
    k = int(round(n * fraction))
    if k < 1 or k >= n:
        raise DataError(f"--val-split {fraction} leaves {n - k} train and {k} validation images; pick a fraction that leaves both non-empty")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7_777_777))
    val, tr = order[:k], order[k:]
    return (data.train_images[tr], data.train_labels[tr]), (data.train_images[val], data.train_labels[val])


#: Mean and std are float64 sums whose last bits follow the number of threads that summed them (MNIST's std
#: differs by about 6e-9 between 1 and 2 threads): recorded and recomputed values are compared within this.
STATISTICS_TOLERANCE = 1e-6


def _same(recorded, now) -> bool:
    if isinstance(recorded, float) and isinstance(now, float):
        return math.isclose(recorded, now, rel_tol=STATISTICS_TOLERANCE)
    return recorded == now


def train_statistics(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of a uint8 image tensor's pixels scaled to [0, 1]."""
    x = images.to(torch.float64).div_(255.0)
    return float(x.mean()), float(x.std())


def check_splits(where: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Both splits hold images, one label each, all of one square size the nets take (see MIN_IMAGE_SIZE)."""
    for split, (x, y) in (("train", train), ("test", test)):
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise DataError(f"{where}: {split} images are a {tuple(x.shape)} {x.dtype} tensor, expected "
                            "(N, C, H, W) uint8; load datasets with cnnlab.data.load_dataset")
        if x.shape[0] != y.shape[0] or y.ndim != 1:
            raise DataError(f"{where}: {x.shape[0]} {split} images but {tuple(y.shape)} labels; "
                            "the image and label files do not belong together")
        if x.shape[0] == 0:
            raise DataError(f"{where}: the {split} split has no images; a dataset needs images in both splits: "
                            f"add {split} images")
    h, w = train[0].shape[2:]
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(f"{where}: train images are {tuple(train[0].shape[1:])} (C, H, W) but test images "
                        f"{tuple(test[0].shape[1:])}; both splits need images of one size")
    if h != w:
        raise DataError(f"{where}: images are {h}x{w} (height x width); the nets take square images: "
                        "resize or pad them to a square, e.g. 28x28")
    if not MIN_IMAGE_SIZE <= h <= MAX_IMAGE_SIZE:
        size = "small" if h < MIN_IMAGE_SIZE else "large"
        raise DataError(f"{where}: images are {h}x{w} pixels, too {size} for the lecture's nets, which take "
                        f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}x{MAX_IMAGE_SIZE} (two 5x5 convolution "
                        "+ 2x2 pool stages); resize the images, e.g. to 28x28 like MNIST")


def _ranges(values: list[int]) -> str:
    """[3, 4, 5, 9] -> '3..5, 9'."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    out = [str(a) if a == b else f"{a}..{b}" for a, b in runs]
    return ", ".join(out[:_NAMED]) + (", ..." if len(out) > _NAMED else "")


def check_labels(where: str, train_labels: torch.Tensor, test_labels: torch.Tensor, classes: tuple[str, ...]) -> None:
    """Labels are class indices, and every class has train images, so that no output of a net is never trained.

    One exception: class 0 may be unused altogether (no train and no test image), as in EMNIST Letters, whose
    labels are 1..26. A single odd label (250 among 0..9) is refused, naming it, instead of silently building
    a 251-class net.
    """
    n = len(classes)
    for split, y in (("train", train_labels), ("test", test_labels)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= n):
            bad = sorted({int(v) for v in y[(y < 0) | (y >= n)].unique()})
            raise DataError(f"{where}: {split} labels {_ranges(bad)} are outside 0..{n - 1}, the dataset's "
                            f"{n} classes; fix or remove those items")
    train_counts = torch.bincount(train_labels, minlength=n)
    test_counts = torch.bincount(test_labels, minlength=n)
    empty = [c for c in range(n) if train_counts[c] == 0 and not (c == 0 and test_counts[0] == 0)]
    if not empty:
        _check_two_classes(where, train_counts, test_counts, classes)
        return
    named = [c for c in range(empty[0] + 1, n) if train_counts[c] + test_counts[c] > 0] or empty
    odd = ", ".join(f"{classes[c]} ({int(train_counts[c])} train, {int(test_counts[c])} test images)"
                    for c in named[:_NAMED]) + (", ..." if len(named) > _NAMED else "")
    missing = _ranges(empty) if all(classes[c] == str(c) for c in range(n)) else ", ".join(
        classes[c] for c in empty[:_NAMED]) + (", ..." if len(empty) > _NAMED else "")
    raise DataError(f"{where}: labels leave classes without train images: class(es) {missing} have none "
                    f"(the labels reach {n - 1}); odd label(s): {odd}; every class 0..K-1 must appear in the train "
                    "split: fix or remove the items with the odd labels, or add train images of the empty classes")


def _check_two_classes(where: str, train_counts: torch.Tensor, test_counts: torch.Tensor,
                       classes: tuple[str, ...]) -> None:
    """At least two classes have train images: a net of one class (or of two, class 0 unused) scores 100% by
    saying the one name it knows (``folder:`` refuses a single class folder the same way)."""
    used = [c for c in range(len(classes)) if train_counts[c] > 0]
    if len(used) < 2:
        c = used[0]
        raise DataError(f"{where}: the labels hold one class ({classes[c]}: {int(train_counts[c])} train, "
                        f"{int(test_counts[c])} test images); a classifier needs at least two: add images of each "
                        "other class")


def validate_dataset(data: Dataset) -> None:
    """Refuse a dataset the nets cannot be trained on (empty split, images too small or not square, labels
    that leave classes empty), with a one-line :class:`DataError`. :func:`cnnlab.data.load_dataset` calls
    it on everything it returns; call it on a :class:`Dataset` built by other means before training."""
    check_splits(data.name, (data.train_images, data.train_labels), (data.test_images, data.test_labels))
    check_labels(data.name, data.train_labels, data.test_labels, data.classes)
