"""Datasets (docs/method.md §7): one module per dataset, all reached through the registry.

Importing this package registers the built-in datasets, in this order: ``modelnet40``,
``modelnet10``, ``scanobjectnn``, ``objaverse_lvis``. A new dataset is one new module that
calls :func:`register_dataset` with a :class:`DatasetInfo` (docs/method.md §11).
"""

from pointcalip.datasets.base import InMemoryDataset, PointCloudDataset, SubsetDataset
from pointcalip.datasets.fetch import ArchiveSpec, Checks
from pointcalip.datasets.registry import (
    DEFAULT_NUM_POINTS,
    DEFAULT_ROOT,
    DatasetInfo,
    build_dataset,
    class_names,
    dataset_names,
    download_dataset,
    get_dataset_info,
    manual_instructions,
    register_dataset,
    resolve_variant,
    unregister_dataset,
)

# Built-in datasets register themselves on import (order = dataset_names() order).
from pointcalip.datasets import modelnet as _modelnet  # noqa: E402,F401  isort: skip
from pointcalip.datasets import scanobjectnn as _scanobjectnn  # noqa: E402,F401  isort: skip
from pointcalip.datasets import objaverse_lvis as _objaverse_lvis  # noqa: E402,F401  isort: skip

__all__ = [
    "ArchiveSpec", "Checks", "DEFAULT_NUM_POINTS", "DEFAULT_ROOT", "DatasetInfo", "InMemoryDataset",
    "PointCloudDataset", "SubsetDataset", "build_dataset", "class_names", "dataset_names", "download_dataset",
    "get_dataset_info", "manual_instructions", "register_dataset", "resolve_variant", "unregister_dataset",
]  # fmt: skip
