"""Checking and preparing clouds: validate, up axis, robust outlier cut, normalise, resample (docs/method.md §1).

The order is fixed: validate -> rotate the file's up axis onto +y -> (robust) drop far
outliers -> centre and scale into the unit ball -> canonical point order -> farthest
point sampling. Rotation comes first so the canonical order, and so the FPS subset, is
that of the rotated cloud: a cloud stored z-up gives bit-for-bit the points of the same
cloud stored y-up.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Tuple

import numpy as np

from pointcalip.clouds._errors import empty, error
from pointcalip.errors import ConfigError, DegenerateCloudError, NonFiniteError, PointCloudError

__all__ = [
    "UP_AXES",
    "ROBUST_QUANTILE",
    "ROBUST_FACTOR",
    "PreparedCloud",
    "canonical_order",
    "check_num_points",
    "check_up_axis",
    "normalize_cloud",
    "prepare_cloud",
    "prepare_cloud_info",
    "resample_cloud",
    "robust_inliers",
    "rotate_up",
    "up_axis_matrix",
    "validate_cloud",
]

# The file's up axis -> ((source column, sign) for new x, new y, new z). Each is a proper
# rotation (determinant +1) that maps the named axis onto +y.
_UP_TABLE: Dict[str, Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]] = {
    "y": ((0, 1), (1, 1), (2, 1)),     # identity
    "z": ((0, 1), (2, 1), (1, -1)),    # (x, y, z) -> (x, z, -y): -90 deg about x
    "x": ((1, -1), (0, 1), (2, 1)),    # (x, y, z) -> (-y, x, z): +90 deg about z
    "-y": ((0, 1), (1, -1), (2, -1)),  # (x, y, z) -> (x, -y, -z): 180 deg about x
    "-z": ((0, 1), (2, -1), (1, 1)),   # (x, y, z) -> (x, -z, y): +90 deg about x
    "-x": ((1, 1), (0, -1), (2, 1)),   # (x, y, z) -> (y, -x, z): -90 deg about z
}
UP_AXES = ("y", "z", "x", "-y", "-z", "-x")
ROBUST_QUANTILE = 0.95
ROBUST_FACTOR = 3.0


class PreparedCloud(NamedTuple):
    """A prepared cloud and what happened to it.

    Attributes:
        points: ``float32 (M, 3)``.
        num_read: points before outlier removal and resampling (``N``).
        num_outliers: points dropped by the robust cut (0 unless ``robust=True``).
    """

    points: np.ndarray
    num_read: int
    num_outliers: int


# ------------------------------------------------------------------- checks on arrays


def validate_cloud(points: Any, source: str = "points") -> np.ndarray:
    """Check a cloud and return its x y z columns.

    Args:
        points: ``(N, 3)`` or ``(N, >3)`` numbers (numpy array, list, CPU tensor).
        source: name used in error messages (file name or ``"points"``).

    Returns:
        ``float32 (N, 3)``, a new contiguous array.

    Raises:
        PointCloudError: not an ``(N, >=3)`` array of numbers.
        EmptyCloudError: no points.
        NonFiniteError: NaN/Inf coordinates (or values beyond float32).
        DegenerateCloudError: one point, or all points identical.
    """
    try:
        arr = np.asarray(points)
    except (ValueError, TypeError) as exc:
        problem = f"cannot be read as an array ({exc})"
        raise error(PointCloudError, source, problem, "pass an (N, 3) array") from None
    if arr.dtype.kind not in "biuf":
        problem = f"holds {arr.dtype} values, not numbers"
        raise error(PointCloudError, source, problem, "pass an (N, 3) array of floats")
    if arr.size == 0 and (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] >= 3)):
        raise empty(source)
    if arr.ndim != 2 or arr.shape[1] < 3:
        problem = f"has shape {arr.shape}, expected (N, 3)"
        raise error(PointCloudError, source, problem, "pass one x y z row per point")
    xyz = arr[:, :3].astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(xyz, dtype=np.float32)
    _check_finite(out, xyz, source)
    _check_not_degenerate(out, source)
    return out


def _check_finite(xyz32: np.ndarray, xyz64: np.ndarray, source: str) -> None:
    """Raise :class:`NonFiniteError` when a coordinate is NaN/Inf (before or after float32)."""
    bad = ~np.isfinite(xyz32).all(axis=1)
    if not bad.any():
        return
    rows = np.flatnonzero(bad)
    overflow = np.isfinite(xyz64[rows[0]]).all()
    what = "coordinates too large for float32" if overflow else "NaN or Inf coordinates"
    problem = f"{len(rows)} of {len(xyz32)} points have {what} (first at row {rows[0]})"
    raise error(NonFiniteError, source, problem, "remove those points or fix the export")


def _check_not_degenerate(xyz: np.ndarray, source: str) -> None:
    """Raise :class:`DegenerateCloudError` when all points of ``xyz: (N, 3)`` coincide."""
    if (xyz == xyz[0]).all():
        x, y, z = (float(v) for v in xyz[0])
        what = "has a single point" if len(xyz) == 1 else f"has {len(xyz)} points, all identical"
        problem = f"{what} ({x:g}, {y:g}, {z:g})"
        raise error(DegenerateCloudError, source, problem, "a cloud needs at least two distinct points")


def check_num_points(num_points: Any) -> int:
    """``num_points`` as a positive int, else :class:`ConfigError`."""
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise ConfigError(f"num_points must be a positive integer, got {num_points!r}")
    return int(num_points)


# -------------------------------------------------------------------------- up axis


def check_up_axis(up_axis: Any) -> str:
    """``up_axis`` if it is one of :data:`UP_AXES`, else ``ValueError`` listing them."""
    if isinstance(up_axis, str) and up_axis in _UP_TABLE:
        return up_axis
    choices = ", ".join(UP_AXES)
    if up_axis in ("auto", "auto3"):
        raise ValueError(f"up_axis {up_axis!r} is chosen by the classifier (it tries several axes), "
                         f"not by rotate_up; give one of {choices}")
    raise ValueError(f"up_axis must be one of {choices}; got {up_axis!r}")


def up_axis_matrix(up_axis: str) -> np.ndarray:
    """``int64 (3, 3)`` signed permutation ``R`` with ``new = R @ old`` for ``up_axis``."""
    matrix = np.zeros((3, 3), dtype=np.int64)
    for row, (col, sign) in enumerate(_UP_TABLE[check_up_axis(up_axis)]):
        matrix[row, col] = sign
    return matrix


def rotate_up(points: Any, up_axis: str) -> Any:
    """Rotate clouds so that the file's up axis becomes +y (exact: columns permuted and negated).

    Args:
        points: ``(N, 3)`` or ``(B, N, 3)`` numpy array or torch tensor.
        up_axis: one of :data:`UP_AXES` (the axis that points up in the file).

    Returns:
        A new array/tensor of the same shape and dtype. No arithmetic beyond sign flips,
        so the result is exact.
    """
    spec = _UP_TABLE[check_up_axis(up_axis)]
    shape = tuple(points.shape)
    if len(shape) not in (2, 3) or shape[-1] != 3:
        raise ValueError(f"points must have shape (N, 3) or (B, N, 3), got {shape}")
    cols = [points[..., c] if s > 0 else -points[..., c] for c, s in spec]
    if isinstance(points, np.ndarray):
        return np.stack(cols, axis=-1)
    import torch

    return torch.stack(cols, dim=-1)


# ------------------------------------------------------------------ robust, normalise


def robust_inliers(points: np.ndarray) -> np.ndarray:
    """Points that are not far outliers, by a rule that does not depend on the cloud's scale.

    With ``c`` the coordinate-wise median and ``d_i = ||p_i - c||``, point ``i`` is kept when
    ``d_i <= ROBUST_FACTOR * quantile(d, ROBUST_QUANTILE)`` (3 x the 95th percentile). A
    cloud where that percentile is 0 keeps everything.

    Args:
        points: ``(N, 3)`` finite coordinates.

    Returns:
        ``bool (N,)`` mask of the points to keep.
    """
    p = np.asarray(points, dtype=np.float64)
    d = np.sqrt(((p - np.median(p, axis=0)) ** 2).sum(axis=1))
    radius = float(np.quantile(d, ROBUST_QUANTILE))
    if not radius > 0.0:
        return np.ones(len(p), dtype=bool)
    return d <= ROBUST_FACTOR * radius


def normalize_cloud(points: np.ndarray, source: str = "points") -> np.ndarray:
    """Centre on the centroid and scale so the farthest point has norm 1.

    Args:
        points: ``(N, 3)`` finite coordinates.
        source: name used in error messages.

    Returns:
        ``float32 (N, 3)`` with centroid 0 and maximum norm 1 (to float32 precision).
    """
    p = np.asarray(points, dtype=np.float64)[:, :3]
    centred = p - p.mean(axis=0)
    scale = float(np.sqrt((centred * centred).sum(axis=1)).max())
    if not (scale > 0.0 and np.isfinite(scale)):
        fix = "a cloud needs at least two distinct points"
        raise error(DegenerateCloudError, source, "all points are identical", fix)
    return (centred / scale).astype(np.float32)


# ---------------------------------------------------------------------- resampling


def canonical_order(points: np.ndarray) -> np.ndarray:
    """``points: (N, 3)`` sorted by x, then y, then z."""
    return points[np.lexsort((points[:, 2], points[:, 1], points[:, 0]))]


def resample_cloud(points: np.ndarray, num_points: int) -> np.ndarray:
    """Reduce a cloud to ``num_points`` by farthest point sampling when it has more.

    FPS starts from the first point, so the points are first put in a canonical order
    (:func:`canonical_order`): the subset, and so every prediction, does not depend on the
    order of the points in the input.

    Args:
        points: ``(N, 3)``.
        num_points: target count ``M >= 1``.

    Returns:
        ``(min(N, M), 3)``: the FPS subset (in canonical order) when ``N > M``, otherwise
        ``points`` itself.
    """
    from pointcalip.clouds.sampling import farthest_point_sample

    num_points = check_num_points(num_points)
    if len(points) <= num_points:
        return points
    ordered = canonical_order(points)
    return ordered[np.sort(farthest_point_sample(ordered, num_points))]


def prepare_cloud_info(
    points: Any,
    num_points: int | None = None,
    normalize: bool = True,
    source: str = "points",
    *,
    up_axis: str = "y",
    robust: bool = False,
) -> PreparedCloud:
    """Validate, rotate, (robustly) normalise and FPS-resample an in-memory cloud.

    Args:
        points: ``(N, 3)`` or ``(N, >3)`` numbers.
        num_points: keep at most this many points (FPS); ``None`` keeps all.
        normalize: centre and scale into the unit ball.
        source: name used in error messages.
        up_axis: the cloud's up axis (:data:`UP_AXES`), rotated onto +y first.
        robust: drop far outliers (:func:`robust_inliers`) before normalising.

    Returns:
        :class:`PreparedCloud` with ``float32 (M, 3)`` points, ``M = min(N - outliers, num_points)``.
    """
    up_axis = check_up_axis(up_axis)
    if num_points is not None:
        num_points = check_num_points(num_points)
    cloud = validate_cloud(points, source)
    num_read = len(cloud)
    if up_axis != "y":
        cloud = rotate_up(cloud, up_axis)
    outliers = 0
    if robust:
        keep = robust_inliers(cloud)
        outliers = int(len(keep) - keep.sum())
        if outliers:
            cloud = cloud[keep]
            _check_not_degenerate(cloud, source)
    if normalize:
        cloud = normalize_cloud(cloud, source)
    if num_points is not None:
        cloud = resample_cloud(cloud, num_points)
    return PreparedCloud(np.ascontiguousarray(cloud, dtype=np.float32), num_read, outliers)


def prepare_cloud(
    points: Any,
    num_points: int | None = None,
    normalize: bool = True,
    source: str = "points",
    *,
    up_axis: str = "y",
    robust: bool = False,
) -> np.ndarray:
    """:func:`prepare_cloud_info` returning just the ``float32 (M, 3)`` points."""
    return prepare_cloud_info(points, num_points, normalize, source, up_axis=up_axis, robust=robust).points
