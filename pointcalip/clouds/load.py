"""Reading a file into a prepared cloud (docs/method.md §1).

:func:`load_point_cloud` = check the path (regular file, supported extension, size within
:class:`ReadLimits`) -> the format's reader from :data:`READERS` -> :func:`prepare_cloud`.
Every problem with the file is a :class:`~pointcalip.errors.PointCloudError` with one
line that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

import numpy as np

from pointcalip.clouds._errors import corrupt, empty, error
from pointcalip.clouds.files import DEFAULT_LIMITS, ReadLimits, check_regular_file
from pointcalip.clouds.prepare import PreparedCloud, check_num_points, check_up_axis, prepare_cloud_info
from pointcalip.clouds.readers import HEADERLESS, READERS, SUPPORTED_EXTENSIONS
from pointcalip.errors import ConfigError, UnsupportedFormatError
from pointcalip._types import PathLike

__all__ = ["load_point_cloud", "read_point_cloud", "read_raw", "load_prepared", "PathLike"]


def _limits(limits: ReadLimits | None) -> ReadLimits:
    if limits is None:
        return DEFAULT_LIMITS
    if not isinstance(limits, ReadLimits):
        raise ConfigError(f"limits must be a ReadLimits, got {type(limits).__name__}")
    return limits


def read_raw(path: PathLike, num_points: int | None = None, limits: ReadLimits | None = None) -> np.ndarray:
    """The raw points of a file, ``float64 (N, >=3)``, before any validation.

    Args:
        path: a file with one of :data:`SUPPORTED_EXTENSIONS`.
        num_points: the count that will be requested (meshes sample for it).
        limits: read limits (default :class:`ReadLimits()`).
    """
    limits = _limits(limits)
    file = Path(os.fspath(path)).expanduser()
    source = str(file)
    ext = file.suffix.lower()
    size = check_regular_file(file, source)  # before the extension: a FIFO named x.las is still a FIFO
    reader = READERS.get(ext)
    if reader is None:
        kind = f"'{file.suffix}'" if file.suffix else "(no extension)"
        raise error(UnsupportedFormatError, source, f"unsupported file type {kind}",
                    f"supported: {' '.join(SUPPORTED_EXTENSIONS)}; convert the cloud to one of these "
                    "(e.g. .ply or .npy)")
    limits.check_bytes(size, source)
    if size == 0:
        if ext in HEADERLESS:
            raise empty(source, "the file is empty (0 bytes)")
        raise corrupt(source, "the file is empty (0 bytes)")
    return reader(file, source, size, limits, num_points)


def read_point_cloud(
    path: PathLike,
    num_points: int | None = None,
    normalize: bool = True,
    *,
    up_axis: str = "y",
    robust: bool = False,
    limits: ReadLimits | None = None,
) -> Tuple[np.ndarray, int]:
    """:func:`load_point_cloud` that also says how many points the file gave.

    Returns:
        ``(points, n)``: ``float32 (M, 3)`` points with ``M = min(n, num_points)`` (fewer
        when ``robust`` drops outliers), and ``n`` the points read before resampling (for a
        mesh: its surface samples).
    """
    prepared = _prepare_file(path, num_points, normalize, up_axis, robust, limits)
    return prepared.points, prepared.num_read


def load_point_cloud(
    path: PathLike,
    num_points: int | None = None,
    normalize: bool = True,
    *,
    up_axis: str = "y",
    robust: bool = False,
    limits: ReadLimits | None = None,
) -> np.ndarray:
    """Read, check, rotate, normalise and resample a point-cloud or mesh file.

    Args:
        path: a file with one of :data:`SUPPORTED_EXTENSIONS`.
        num_points: keep at most this many points by farthest point sampling; ``None``
            keeps all (meshes then give :func:`mesh_sample_count` points).
        normalize: centre on the centroid and scale the farthest point to norm 1.
        up_axis: the file's up axis (see :data:`~pointcalip.clouds.prepare.UP_AXES`).
        robust: drop far outliers before normalising (``--robust-normalize``).
        limits: :class:`ReadLimits` (``--max-points``, ``--max-bytes``).

    Returns:
        ``float32 (N, 3)`` points.

    Raises:
        MissingFileError, UnsupportedFormatError, UnreadableFileError, EmptyCloudError,
        NonFiniteError, DegenerateCloudError, ReadLimitError: one line naming the file.
    """
    return _prepare_file(path, num_points, normalize, up_axis, robust, limits).points


def load_prepared(
    path: PathLike,
    num_points: int | None,
    up_axis: str = "y",
    robust: bool = False,
    limits: ReadLimits | None = None,
) -> PreparedCloud:
    """Read and prepare one file (normalised) -> :class:`PreparedCloud`.

    A top-level function, so ``functools.partial(load_prepared, num_points=..., up_axis=...,
    robust=..., limits=...)`` is a picklable :class:`~pointcalip.clouds.pool.ReaderPool` task.
    """
    return _prepare_file(path, num_points, True, up_axis, robust, limits)


def _prepare_file(path: PathLike, num_points: int | None, normalize: bool, up_axis: str, robust: bool,
                  limits: ReadLimits | None) -> PreparedCloud:
    if num_points is not None:
        num_points = check_num_points(num_points)
    check_up_axis(up_axis)
    raw = read_raw(path, num_points, limits)
    source = str(Path(os.fspath(path)).expanduser())
    return prepare_cloud_info(raw, num_points, normalize, source, up_axis=up_axis, robust=robust)
