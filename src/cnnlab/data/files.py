"""Finding a dataset's four IDX files in a directory: the one place that knows their names and layouts.

:func:`find_in_dir` looks for the official names (raw or ``.gz``) in the layouts other tools leave
behind; the catalog's sources and ``cnnlab data info`` use only it, since a catalog dataset always
has the official names. :func:`find_loose` also accepts names that merely contain the role's words
(KMNIST's, EMNIST's), which only ``idx:DIR`` uses; :func:`find_idx_file` tries both, in that order.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.data.catalog import ROLES
from cnnlab.data.safefs import entry_kind, list_dir
from cnnlab.errors import DataError

#: Where the files sit below a directory: itself, torchvision's ``MNIST/raw``/``FashionMNIST/raw``
#: (and their parents' ``raw``), Zalando's repository ``data/fashion``. Tried in this order.
LAYOUTS = ("", "raw", "MNIST/raw", "mnist", "FashionMNIST/raw", "fashion", "data/fashion")


def _odd(path: Path, kind: str) -> DataError:
    return DataError(f"{path}: is {kind}, not an IDX file; replace it with the file (raw or .gz) or remove it")


def find_in_dir(directory: Path, role: str) -> Path | None:
    """The IDX file for ``role`` in ``directory``: raw or ``.gz`` (as Debian's dataset-fashion-mnist
    ships them), also in torchvision's ``MNIST/raw``/``FashionMNIST/raw`` and Zalando's ``data/fashion``.

    Only regular files count; when the only candidate is something else (a folder named like the file,
    a FIFO, a broken link), that is an error naming it rather than a silent miss. A folder that cannot
    be looked into (permission denied) is an error too.
    """
    base = ROLES[role][0]
    odd = None
    for sub in LAYOUTS:
        for name in (base, base + ".gz", base.replace("-idx", ".idx"), base.replace("-idx", ".idx") + ".gz"):
            path = directory / sub / name if sub else directory / name
            kind = entry_kind(path)
            if kind == "file":
                return path
            odd = odd or (kind and (path, kind))
    if odd:
        raise _odd(*odd)
    return None


def find_loose(directory: Path, role: str) -> Path | None:
    """Files named like KMNIST's or EMNIST's (``*train*images*``, ``*test*labels*``...).

    A raw file is preferred to its ``.gz`` twin; two different candidates are an error that names them.
    """
    split, kind = role.split("_")
    kinds = ("images", "imgs") if kind == "images" else ("labels",)
    splits = ("train",) if split == "train" else ("t10k", "test")
    hits, odd = [], None
    for entry in list_dir(directory):
        name = entry.name
        if not (any(s in name for s in splits) and any(k in name for k in kinds) and "ubyte" in name):
            continue
        path = directory / name
        what = entry_kind(path)
        if what == "file":
            hits.append(path)
        odd = odd or (what and (path, what))
    if not hits and odd:
        raise _odd(*odd)
    stems = {p.name[:-3] if p.name.endswith(".gz") else p.name for p in hits}
    if len(stems) > 1:
        raise DataError(
            f"idx:{directory}: several candidates for the {split} {kind} ({', '.join(sorted(stems))}); "
            "put one dataset's four IDX files in a directory of their own"
        )
    raw = [p for p in hits if not p.name.endswith(".gz")]
    return (raw or hits or [None])[0]


def find_idx_file(directory: Path, role: str) -> Path | None:
    """The file for ``role`` under an official name and layout, else under a KMNIST/EMNIST-like name."""
    return find_in_dir(directory, role) or find_loose(directory, role)
