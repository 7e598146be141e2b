"""Deprecated location: point-cloud reading now lives in :mod:`pointcalip.clouds`.

Kept as a thin re-export until every importer uses :mod:`pointcalip.clouds`.
"""

from pointcalip.clouds import (  # noqa: F401
    MESH_EXTENSIONS,
    MESH_SEED,
    POINT_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    PreparedCloud,
    ReadLimits,
    canonical_order,
    load_point_cloud,
    load_prepared,
    mesh_sample_count,
    normalize_cloud,
    prepare_cloud,
    prepare_cloud_info,
    read_point_cloud,
    resample_cloud,
    validate_cloud,
)

__all__ = [
    "MESH_EXTENSIONS", "MESH_SEED", "POINT_EXTENSIONS", "SUPPORTED_EXTENSIONS", "PreparedCloud", "ReadLimits",
    "canonical_order", "load_point_cloud", "load_prepared", "mesh_sample_count", "normalize_cloud",
    "prepare_cloud", "prepare_cloud_info", "read_point_cloud", "resample_cloud", "validate_cloud",
]
