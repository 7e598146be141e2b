"""Deprecated location: datasets now live in :mod:`pointcalip.datasets` (one module per dataset).

Kept as a thin re-export until every importer uses :mod:`pointcalip.datasets`.
"""

from pointcalip.datasets import build_dataset, class_names, dataset_names  # noqa: F401
from pointcalip.datasets.base import InMemoryDataset, PointCloudDataset  # noqa: F401
from pointcalip.datasets.modelnet import (  # noqa: F401
    MODELNET10_CLASSES,
    MODELNET10_SOURCE_LABELS,
    MODELNET40_CLASSES,
    MODELNET40_DIR,
    ModelNet10,
    ModelNet40,
    find_modelnet40_dir,
    scan_modelnet40,
)
from pointcalip.datasets.objaverse_lvis import ObjaverseLVIS  # noqa: F401
from pointcalip.datasets.registry import DEFAULT_NUM_POINTS, DEFAULT_ROOT  # noqa: F401
from pointcalip.datasets.scanobjectnn import (  # noqa: F401
    DEFAULT_SCANOBJECTNN_VARIANT,
    SCANOBJECTNN_CLASSES,
    SCANOBJECTNN_DIR,
    SCANOBJECTNN_VARIANTS,
    ScanObjectNN,
    find_scanobjectnn_dir,
    scan_scanobjectnn,
)

SPLITS = ("train", "test")
DATASET_NAMES = dataset_names()  # a snapshot; call dataset_names() for datasets registered later
