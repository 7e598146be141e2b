"""Projections: point clouds ``(B, N, 3)`` -> per-view encoder images ``(B, V, 3, S, S)``.

Each kind lives in its own module and registers its presets on import: ``scatter``
(PointCLIP: ``pointclip``, ``pointclip10``) and ``realistic`` (PointCLIP V2: ``realistic``).
docs/method.md §2 and §9 describe them, §11 how to add one.
"""

from pointcalip.projection.base import Projection, check_points, maps_to_images
from pointcalip.projection.registry import (
    get_projection,
    projection_from_dict,
    projection_names,
    register_projection,
    unregister_projection,
)
from pointcalip.projection.realistic import RealisticProjection, grid_cells, realistic_maps, realistic_maps_naive
from pointcalip.projection.scatter import (
    ProjectionConfig,
    ScatterProjection,
    depth_to_images,
    euler_to_matrix,
    project_depth,
    project_depth_naive,
    project_images,
    view_matrices,
)

get_preset = get_projection

__all__ = [
    "Projection", "ProjectionConfig", "ScatterProjection", "check_points", "depth_to_images", "euler_to_matrix",
    "get_preset", "get_projection", "maps_to_images", "project_depth", "project_depth_naive", "project_images",
    "projection_from_dict", "projection_names", "register_projection", "unregister_projection", "view_matrices",
    "RealisticProjection", "grid_cells", "realistic_maps", "realistic_maps_naive",
]
