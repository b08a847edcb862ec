"""Catalog names: which datasets the catalog knows, and the spec of one. (What any name means, catalog
or ``idx:``/``folder:`` directory, is :mod:`cnnlab.dataset_names`, re-exported here.)"""

from __future__ import annotations

from cnnlab.data.catalog import CATALOG, DatasetSpec
from cnnlab.dataset_names import DIRECTORY_KINDS, canonical_dataset_name, dataset_kind, directory_of  # noqa: F401
from cnnlab.errors import DataError, did_you_mean, short_repr

def dataset_names() -> list[str]:
    return sorted(CATALOG)


def get_spec(name: str) -> DatasetSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {short_repr(name)}{did_you_mean(name, dataset_names())}; choose one of: "
            f"{', '.join(dataset_names())}, idx:DIR or folder:DIR"
        ) from None
