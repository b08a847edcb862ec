"""Finding a dataset's four IDX files in a directory: the one place that knows their names and layouts.

:func:`idx_files` looks for the official names (raw or ``.gz``) in the layouts other tools leave behind, and takes all
four files from one of them (:class:`IdxFiles`): the first that holds any (for a catalog dataset, passing over a layout
named for another one: torchvision's ``FashionMNIST/raw`` for ``mnist``), never each file from wherever it is found
first (MNIST's images were scored against Fashion-MNIST's test labels, 9.66%, where one MNIST file was missing). The
catalog's sources and ``cnnlab data info`` use only the official names, since a catalog dataset always has them.
With ``loose``, the directory itself also takes names that merely contain the role's words (KMNIST's, EMNIST's,
:func:`find_loose`), which only ``idx:DIR`` uses: all four from one naming family (:func:`family_key`), never a file of
one filled in from the other (MNIST's test images were paired with another set's ``emnist-*`` test labels). :func:`find_in_dir` and :func:`find_idx_file` give one role's file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.data.catalog import ROLES
from cnnlab.data.safefs import entry_kind, list_dir
from cnnlab.errors import DataError

#: Where the files sit below a directory: itself, torchvision's ``MNIST/raw``/``FashionMNIST/raw``
#: (and their parents' ``raw``), Zalando's repository ``data/fashion``. Tried in this order.
LAYOUTS = ("", "raw", "MNIST/raw", "mnist", "FashionMNIST/raw", "fashion", "data/fashion")
#: The catalog dataset a layout's name says it holds: a catalog dataset passes over the layouts of another one.
LAYOUT_DATASETS = {"MNIST/raw": "mnist", "mnist": "mnist", "FashionMNIST/raw": "fashion-mnist",
                   "fashion": "fashion-mnist", "data/fashion": "fashion-mnist"}


@dataclass
class IdxFiles:
    """The four files of one layout of a directory: ``folder`` (the directory itself or a layout's sub-folder;
    ``None`` when no layout holds any), each role's file there (``None`` where it lacks it), and ``others``: the
    other layouts' folders that hold all four files (another dataset, or another copy)."""

    folder: Path | None
    paths: dict[str, Path | None]
    others: list[Path] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """The names of the files ``folder`` lacks (all four when there is no ``folder``)."""
        return [ROLES[role][0] for role, path in self.paths.items() if path is None]


def _odd(path: Path, kind: str) -> DataError:
    return DataError(f"{path}: is {kind}, not an IDX file; replace it with the file (raw or .gz) or remove it")


def _official_names(role: str) -> tuple[str, ...]:
    """The official names of ``role``'s file, in the order they are tried: raw, ``.gz``, the dotted names some
    mirrors use (``t10k-labels.idx1-ubyte``) raw and ``.gz``."""
    base = ROLES[role][0]
    dotted = base.replace("-idx", ".idx")
    return base, base + ".gz", dotted, dotted + ".gz"


def _official(folder: Path, role: str) -> tuple[Path | None, tuple[Path, str] | None]:
    """The regular file of ``role`` under an official name in ``folder`` (raw first, then ``.gz``, then the dotted
    names some mirrors use), else None and what else is there under such a name (a folder, a FIFO, a broken link)."""
    odd = None
    for name in _official_names(role):
        kind = entry_kind(folder / name)
        if kind == "file":
            return folder / name, None
        odd = odd or (kind and (folder / name, kind))
    return None, odd


def idx_files(directory: Path, dataset: str | None = None, loose: bool = False) -> IdxFiles:
    """The four IDX files of ``directory``, all from one layout (see the module docstring): raw or ``.gz`` (as
    Debian's dataset-fashion-mnist ships them), also in torchvision's ``MNIST/raw``/``FashionMNIST/raw`` and
    Zalando's ``data/fashion``; ``dataset``: the catalog dataset looked for (None: any, as ``idx:DIR``).

    Only regular files count; when a role's only candidate in the layout is something else (a folder named like the
    file, a FIFO, a broken link), that is an error naming it rather than a silent miss. A folder that cannot be looked
    into (permission denied) is an error too.
    """
    held = []
    for sub in LAYOUTS:
        folder = directory / sub if sub else directory
        found = {role: _official(folder, role) for role in ROLES}
        paths = {role: path for role, (path, _) in found.items()}
        if loose and not sub:  # KMNIST's and EMNIST's names, in the directory itself
            paths = _one_family(directory, paths)
        if any(paths.values()) or any(odd for _, odd in found.values()):
            held.append((sub, folder, paths, found))
    if not held:
        return IdxFiles(None, dict.fromkeys(ROLES))
    held = [h for h in held if any(h[2].values())] or held  # one of mere odd entries: only to name what is there
    own = [h for h in held if LAYOUT_DATASETS.get(h[0], dataset) == dataset] if dataset else held
    sub, folder, paths, found = (own or held)[0]
    odd = next((found[role][1] for role, path in paths.items() if path is None and found[role][1]), None)
    if odd:
        raise _odd(*odd)
    return IdxFiles(folder, paths, [f for s, f, p, _ in held if s != sub and all(p.values())])


def _split_words(role: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The words a name of ``role``'s file holds for its split and for its role (what :func:`find_loose` looks
    for)."""
    split, kind = role.split("_")
    return ("train",) if split == "train" else ("t10k", "test"), ("images", "imgs") if kind == "images" else ("labels",)


def family_key(name: str, role: str) -> str:
    """The naming family of ``role``'s file ``name``: the name without ``.gz``, its split word (train/t10k/test) and
    its role word (images/imgs/labels) each shown as ``*``, and its IDX dimension too (``idx*``, after whatever
    separator: ``-``, ``_``, ``.``): ``*-*-idx*-ubyte`` for every official name (``t10k-labels.idx1-ubyte`` too, the
    mirrors' dot read as the official ``-``) and for ``test-images-idx3-ubyte``, ``*_*_idx*_ubyte`` for
    ``train_images_idx3_ubyte``' four, ``emnist-digits-*-*-idx*-ubyte`` for EMNIST Digits' four."""
    base = name[:-3] if name.endswith(".gz") else name
    for words in _split_words(role):
        word = next((w for w in words if w in base), None)
        if word:
            base = base.replace(word, "*", 1)
    base = re.sub(r"\.idx(?=\d)", "-idx", base)
    return re.sub(r"(?<![A-Za-z0-9])idx\d", "idx*", base)


def _one_family(directory: Path, official: dict[str, Path | None]) -> dict[str, Path | None]:
    """The files of ``directory`` itself for ``idx:DIR``: the four official ones when all are there, whatever else
    lies beside them (an ``old-t10k-labels-*`` kept as a backup), as before; else each role's official file or one of
    a loose name (:func:`find_loose`), all four of one naming family (:func:`family_key`): ``test-images-idx3-ubyte``
    beside the official ``train-*`` files is one dataset, three official files and an ``emnist-*`` one, or
    ``emnist-digits-*`` train files and ``emnist-mnist-*`` test ones, are two datasets' files, refused in one line
    naming each family. Names that begin with an official one (``train-images-idx3-ubyte.gz.md5``, ``.part``) are
    that file's companions, no family of their own."""
    if all(official.values()):  # one whole dataset: nothing of another family is taken
        return official
    prefixes = tuple(name for role in ROLES for name in _official_names(role))
    loose = {role: find_loose(directory, role, skip=prefixes) for role in ROLES}
    families: dict[str, list[str]] = {}
    for role in ROLES:
        for path in filter(None, (official[role], loose[role])):
            families.setdefault(family_key(path.name, role), []).append(path.name)
    if len(families) > 1:
        official_key = family_key(ROLES["train_images"][0], "train_images")
        shown = [f"{'official' if key == official_key else key} ({', '.join(sorted(names))})"
                 for key, names in sorted(families.items(), key=lambda kv: kv[0] != official_key)]
        raise DataError(
            f"idx:{directory}: holds IDX files of {_COUNTS.get(len(shown), len(shown))} naming families, "
            f"{', '.join(shown[:-1])} and {shown[-1]}, so the four would not be one dataset; "
            "put one dataset's four IDX files in a directory of their own"
        )
    for role, path in official.items():
        if path and loose[role]:
            raise DataError(f"idx:{directory}: several candidates for the {role.replace('_', ' ')} ({path.name}, "
                            f"{loose[role].name}); put one dataset's four IDX files in a directory of their own")
    return {role: official[role] or loose[role] for role in ROLES}


_COUNTS = {2: "two", 3: "three", 4: "four"}


def find_in_dir(directory: Path, role: str) -> Path | None:
    """The official file for ``role`` in ``directory``, from the layout :func:`idx_files` takes all four from."""
    return idx_files(directory).paths[role]


def find_loose(directory: Path, role: str, skip: tuple[str, ...] = ()) -> Path | None:
    """Files named like KMNIST's or EMNIST's (``*train*images*``, ``*test*labels*``...), passing over names that
    begin with one of ``skip``.

    A raw file is preferred to its ``.gz`` twin; two different candidates are an error that names them.
    """
    split, kind = role.split("_")
    splits, kinds = _split_words(role)
    hits, odd = [], None
    for entry in list_dir(directory):
        name = entry.name
        if name.startswith(skip) or "ubyte" not in name:
            continue
        if not (any(s in name for s in splits) and any(k in name for k in kinds)):
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
    """The file for ``role`` under an official name and layout, else under a KMNIST/EMNIST-like name in the
    directory itself: from the layout :func:`idx_files` takes all four from."""
    return idx_files(directory, loose=True).paths[role]
