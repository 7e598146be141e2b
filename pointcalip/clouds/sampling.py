"""Farthest point sampling (FPS) (docs/method.md §1).

FPS starts from point index 0 and repeatedly adds the point whose distance to the points
chosen so far is largest; when several points are equally far, the one with the lowest
index wins. This is the rule of the PointNet++ reference sampler and of ``numpy.argmax``
/ ``torch.argmax``.

Two entry points:

* :func:`farthest_point_sample` for one numpy cloud on the CPU. It uses open3d's
  ``farthest_point_down_sample`` (C++, float64), which picks exactly the same points as the
  reference rule (measured faster than ``fpsample.fps_sampling``; see
  ``scripts/benchmark_fps.py``). open3d returns the chosen points in their original order,
  so the indices come back **sorted ascending**, not in the order FPS picked them.
* :func:`farthest_point_sample_torch` for a batch ``(B, N, 3)`` of tensors. It returns
  indices in pick order. On CUDA it uses ``pointnet2_ops`` when that package is installed,
  otherwise a vectorised torch loop (one step per sampled point, batched over ``B``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "farthest_point_sample",
    "farthest_point_sample_numpy",
    "farthest_point_sample_torch",
]


def _check_k(k: int, n: int) -> int:
    """Validate the sample count ``k`` for a cloud of ``n`` points."""
    k = int(k)
    if k < 1:
        raise ValueError(f"farthest point sampling needs k >= 1, got {k}")
    if k > n:
        raise ValueError(f"cannot sample {k} points from a cloud of {n} points")
    return k


def _as_points(points: np.ndarray) -> np.ndarray:
    """Check ``points: (N, 3)`` (or ``(N, >=3)``) and return its xyz columns as float64."""
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ValueError(f"points must have shape (N, 3), got {arr.shape}")
    return np.ascontiguousarray(arr[:, :3], dtype=np.float64)


def farthest_point_sample_numpy(points: np.ndarray, k: int) -> np.ndarray:
    """Reference-rule FPS in numpy, vectorised over points, one step per sample.

    Args:
        points: ``(N, 3)`` coordinates.
        k: number of points to pick, ``1 <= k <= N``.

    Returns:
        ``int64 (k,)`` indices in pick order, starting with 0. Ties go to the lowest index;
        once every remaining point is a duplicate of a chosen one, index 0 repeats (as in
        the PointNet++ sampler).
    """
    p = _as_points(points)
    k = _check_k(k, len(p))
    chosen = np.zeros(k, dtype=np.int64)
    dist = np.full(len(p), np.inf)
    for i in range(1, k):
        delta = p - p[chosen[i - 1]]
        dist = np.minimum(dist, np.einsum("ij,ij->i", delta, delta))
        chosen[i] = int(np.argmax(dist))
    return chosen


def _open3d_fps(p: np.ndarray, k: int) -> np.ndarray:
    """open3d FPS on ``p: (N, 3) float64``; returns sorted ``int64`` indices (may be < k)."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
    # open3d returns a point cloud, not indices: carry each point's index in its normal.
    tags = np.repeat(np.arange(len(p), dtype=np.float64)[:, None], 3, axis=1)
    cloud.normals = o3d.utility.Vector3dVector(tags)
    picked = cloud.farthest_point_down_sample(k, 0)
    return np.asarray(picked.normals)[:, 0].astype(np.int64)


def farthest_point_sample(points: np.ndarray, k: int) -> np.ndarray:
    """Pick ``k`` well-spread points of one cloud by farthest point sampling (CPU).

    Args:
        points: ``(N, 3)`` coordinates (extra columns are ignored).
        k: number of points to pick, ``1 <= k <= N``.

    Returns:
        ``int64 (k,)`` indices into ``points``, **sorted ascending**. They are the set that
        FPS from index 0 with the lowest-index tie rule picks (the same set as
        :func:`farthest_point_sample_numpy`, in a different order).
    """
    p = _as_points(points)
    k = _check_k(k, len(p))
    idx = _open3d_fps(p, k)
    if len(idx) != k:
        # Fewer than k distinct points: open3d drops repeated picks. Use the numpy loop,
        # which repeats index 0 like the reference.
        idx = np.sort(farthest_point_sample_numpy(p, k))
    return idx


def _torch_fps(points: "torch.Tensor", k: int) -> "torch.Tensor":
    """Vectorised FPS on ``points: (B, N, 3)``; returns ``int64 (B, k)`` in pick order."""
    import torch

    b, n, _ = points.shape
    xyz = points[..., :3]
    rows = torch.arange(b, device=points.device)
    chosen = torch.zeros(b, k, dtype=torch.long, device=points.device)
    dist = torch.full((b, n), float("inf"), dtype=xyz.dtype, device=points.device)
    last = torch.zeros(b, dtype=torch.long, device=points.device)
    for i in range(1, k):
        delta = xyz - xyz[rows, last].unsqueeze(1)
        dist = torch.minimum(dist, (delta * delta).sum(-1))
        last = torch.argmax(dist, dim=1)  # first maximum on ties
        chosen[:, i] = last
    return chosen


def _pointnet2_fps(points: "torch.Tensor", k: int) -> "torch.Tensor | None":
    """``pointnet2_ops`` CUDA FPS when that package is importable, else ``None``."""
    try:
        from pointnet2_ops import pointnet2_utils
    except ImportError:
        return None
    xyz = points[..., :3].float().contiguous()
    return pointnet2_utils.furthest_point_sample(xyz, k).long()


def farthest_point_sample_torch(points: "torch.Tensor", k: int) -> "torch.Tensor":
    """Farthest point sampling for a batch of clouds (CPU or CUDA).

    Args:
        points: ``(B, N, 3)`` float tensor.
        k: number of points to pick per cloud, ``1 <= k <= N``.

    Returns:
        ``int64 (B, k)`` indices in pick order, each row starting with 0, ties to the
        lowest index. On CUDA with ``pointnet2_ops`` installed its kernel is used; note that
        kernel ignores points within ``sqrt(1e-3)`` of the origin as candidates, so its
        picks can differ from the torch loop for such points.
    """
    if points.dim() != 3 or points.shape[-1] < 3:
        raise ValueError(f"points must have shape (B, N, 3), got {tuple(points.shape)}")
    k = _check_k(k, points.shape[1])
    if points.is_cuda:
        fast = _pointnet2_fps(points, k)
        if fast is not None:
            return fast
    return _torch_fps(points, k)
