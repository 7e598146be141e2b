"""Point clouds in: safe file readers, checks, up axis, normalisation, sampling, reader pool (docs/method.md §1).

Public API (re-exported here):

* reading: :func:`load_point_cloud`, :func:`read_point_cloud`, :func:`load_prepared`,
  :class:`ReadLimits`, :data:`SUPPORTED_EXTENSIONS` (and the table :data:`READERS`);
* preparing arrays: :func:`validate_cloud`, :func:`normalize_cloud`, :func:`resample_cloud`,
  :func:`prepare_cloud`, :func:`prepare_cloud_info`, :class:`PreparedCloud`,
  :func:`rotate_up`, :data:`UP_AXES`, :func:`robust_inliers`;
* sampling: :func:`farthest_point_sample` and friends;
* isolation: :class:`ReaderPool`, :class:`ReadOutcome` (imported lazily from
  :mod:`pointcalip.clouds.pool`).
"""

from __future__ import annotations

from typing import Any

from pointcalip.clouds.files import DEFAULT_LIMITS, ReadLimits
from pointcalip.clouds.load import PathLike, load_point_cloud, load_prepared, read_point_cloud, read_raw
from pointcalip.clouds.prepare import (
    ROBUST_FACTOR,
    ROBUST_QUANTILE,
    UP_AXES,
    PreparedCloud,
    canonical_order,
    check_up_axis,
    normalize_cloud,
    prepare_cloud,
    prepare_cloud_info,
    resample_cloud,
    robust_inliers,
    rotate_up,
    up_axis_matrix,
    validate_cloud,
)
from pointcalip.clouds.readers import MESH_EXTENSIONS, POINT_EXTENSIONS, READERS, SUPPORTED_EXTENSIONS
from pointcalip.clouds.readers.mesh import MESH_SEED, mesh_sample_count
from pointcalip.clouds.sampling import (
    farthest_point_sample,
    farthest_point_sample_numpy,
    farthest_point_sample_torch,
)

__all__ = [
    "DEFAULT_LIMITS", "MESH_EXTENSIONS", "MESH_SEED", "POINT_EXTENSIONS", "READERS", "ROBUST_FACTOR",
    "ROBUST_QUANTILE", "SUPPORTED_EXTENSIONS", "UP_AXES", "PathLike", "PreparedCloud", "ReadLimits",
    "ReadOutcome", "ReaderPool", "canonical_order", "check_up_axis", "farthest_point_sample",
    "farthest_point_sample_numpy", "farthest_point_sample_torch", "load_point_cloud", "load_prepared",
    "mesh_sample_count", "normalize_cloud", "prepare_cloud", "prepare_cloud_info", "read_point_cloud",
    "read_raw", "resample_cloud", "robust_inliers", "rotate_up", "up_axis_matrix", "validate_cloud",
]


def __getattr__(name: str) -> Any:
    """``ReaderPool`` / ``ReadOutcome`` on first use (keeps ``import pointcalip.clouds`` light)."""
    if name in ("ReaderPool", "ReadOutcome"):
        from pointcalip.clouds import pool

        return getattr(pool, name)
    raise AttributeError(f"module 'pointcalip.clouds' has no attribute {name!r}")
