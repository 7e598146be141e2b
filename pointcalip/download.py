"""Deprecated location: downloads now live in :mod:`pointcalip.datasets.fetch` (HTTP, install)
and :func:`pointcalip.datasets.download_dataset` (per-dataset facts come from the registry).
"""

from pointcalip.datasets.fetch import (  # noqa: F401
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    ArchiveSpec,
    TransferInterrupted,
    fetch,
    sha256_of,
)
from pointcalip.datasets.modelnet import MODELNET40, MODELNET40_MIRRORS, MODELNET40_SPLIT_SIZES  # noqa: F401
from pointcalip.datasets.registry import download_dataset  # noqa: F401
from pointcalip.datasets.scanobjectnn import SCANOBJECTNN, SCANOBJECTNN_FORM_URL  # noqa: F401
