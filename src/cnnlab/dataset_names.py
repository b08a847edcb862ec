"""What a dataset name means, without loading anything: a catalog entry (``mnist``, ``fashion-mnist``) or
a directory (``idx:DIR``, ``folder:DIR``). The one place that parses names, for the loaders, run folders and
the CLI (which parses arguments without importing torch, so this module imports nothing heavy)."""

from __future__ import annotations

from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.fileio import expand_user, resolved

#: The kinds of dataset read from a directory, named ``KIND:DIR``.
DIRECTORY_KINDS = ("idx", "folder")


def dataset_kind(name: str) -> str:
    """``mnist`` -> ``mnist``, ``idx:/some/dir`` -> ``idx``, ``folder:pics`` -> ``folder``: what a run
    folder is named after (never a path)."""
    return name.split(":", 1)[0]


#: A dataset's images are light marks on dark paper (MNIST's, white ink on black: mean 0.13) when the mean of their
#: pixels (0..1, recorded by every run) is below this, dark marks on light paper (a scan of black letters) above it.
PAPER_SPLIT = 0.5


def paper_of(mean: float) -> str:
    """``"dark"`` or ``"light"``: the paper of a dataset's images, by the mean of their pixels (:data:`PAPER_SPLIT`)."""
    return "dark" if float(mean) < PAPER_SPLIT else "light"


def directory_of(name: str) -> tuple[str, Path] | None:
    """``(kind, directory)`` for ``idx:DIR``/``folder:DIR`` names, ``None`` for any other name."""
    for kind in DIRECTORY_KINDS:
        prefix = kind + ":"
        if name.startswith(prefix):
            return kind, Path(name[len(prefix):])
    return None


def canonical_dataset_name(name: str) -> str:
    """The name with an ``idx:``/``folder:`` path made absolute (``~`` expanded, links resolved), so
    that a run recorded under it can be evaluated from any directory; other names unchanged. An empty or blank path
    (``folder:$DIR`` with DIR unset) is refused: it read as the current folder (``folder:.`` names that)."""
    got = directory_of(name)
    if got is None:
        return name
    kind, directory = got
    if not name[len(kind) + 1:].strip():
        raise CnnlabError(f"{kind}: with an empty path (an unset shell variable?); give {kind}:DIR, or {kind}:. for "
                          "the current folder")
    return f"{kind}:{resolved(expand_user(directory))}"  # a loop of links: one line


def moved_away(name: str, where: str, how: str) -> str | None:
    """For an ``idx:``/``folder:`` name whose directory is gone: one line saying so, and how to give its new place
    (``how``: the command with ``{new}`` where the new name goes); None when it is there, or for other names."""
    got = directory_of(name)
    if got is None or got[1].exists():
        return None
    return (f"{where}: its dataset {name} is not there (moved or deleted?); if it moved, give its new place: "
            + how.format(new=f"--dataset {got[0]}:NEW_DIR"))
