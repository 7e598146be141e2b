"""PointCLIP projection: point clouds -> multi-view "scatter" depth maps (docs/method.md §2).

Symbols: ``B`` clouds, ``N`` points, ``V`` views, ``H x W`` depth-map size.

The kernel :func:`project_depth` is fully vectorised: every point of every cloud in every
view is rotated, projected and scatter-added into one flat buffer in a single pass (no Python
loop over clouds or views). :func:`project_depth_naive` is the slow, obviously-correct
reference (one point at a time, float64) that the tests compare it with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, List, Optional, Sequence, Tuple

import numpy as np
import torch

from pointcalip.projection.base import Projection, check_points, maps_to_images
from pointcalip.projection.registry import register_projection

EPS = 1e-12

View = Tuple[float, float, float]

_PI = math.pi
POINTCLIP_VIEWS: Tuple[View, ...] = (
    (0.0, 0.0, _PI / 2),
    (_PI / 2, 0.0, _PI / 2),
    (_PI, 0.0, _PI / 2),
    (3 * _PI / 2, 0.0, _PI / 2),
    (0.0, -_PI / 2, _PI / 2),
    (0.0, _PI / 2, _PI / 2),
)
POINTCLIP10_VIEWS: Tuple[View, ...] = POINTCLIP_VIEWS[:4] + (
    (5 * _PI / 4, -_PI / 4, _PI / 2),
    (5 * _PI / 4, _PI / 4, _PI / 2),
    (7 * _PI / 4, -_PI / 4, _PI / 2),
    (7 * _PI / 4, _PI / 4, _PI / 2),
) + POINTCLIP_VIEWS[4:]


@dataclass(frozen=True)
class ScatterProjection(Projection):
    """Where the virtual cameras are and how large the depth maps are.

    Attributes:
        name: preset name (``pointclip`` or ``pointclip10``) or ``custom``.
        views: ``V`` Euler triples ``(ax, ay, az)`` in radians; ``M = Rx(ax) Ry(ay) Rz(az)``.
        distance: camera distance ``d`` added to the rotated z coordinate.
        resolution: depth-map size ``H = W``.
    """

    kind: ClassVar[str] = "scatter"
    name: str
    views: Tuple[View, ...]
    distance: float
    resolution: int

    @property
    def num_views(self) -> int:
        return len(self.views)

    def maps(self, points: torch.Tensor) -> torch.Tensor:
        return project_depth(points, self)

    def preview(self, points: torch.Tensor) -> torch.Tensor:
        """Shaded depth: black background, nearer is brighter (see :func:`pointcalip.render.shade_depth`)."""
        from pointcalip.render import shade_depth

        return torch.from_numpy(shade_depth(self.maps(points).cpu().numpy()).astype(np.float32) / 255.0)

    def view_labels(self) -> List[str]:
        """``"view 0 (0, 0, 90)"``: index and Euler angles ``(ax, ay, az)`` in degrees of each view."""
        def deg(a: float) -> str:
            return f"{math.degrees(a):g}"

        return [f"view {i} ({deg(ax)}, {deg(ay)}, {deg(az)})" for i, (ax, ay, az) in enumerate(self.views)]


#: The name the first release used; kept so ``ProjectionConfig(name, views, d, H)`` still works.
ProjectionConfig = ScatterProjection

register_projection(ScatterProjection("pointclip", POINTCLIP_VIEWS, 1.6, 128))
register_projection(ScatterProjection("pointclip10", POINTCLIP10_VIEWS, 1.4, 224))


def euler_to_matrix(ax: float, ay: float, az: float) -> torch.Tensor:
    """``M = Rx(ax) @ Ry(ay) @ Rz(az)`` as a float64 ``(3, 3)`` tensor (right-handed, CCW)."""
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    return rx @ ry @ rz


def view_matrices(views: Sequence[View]) -> torch.Tensor:
    """Rotation matrices of all views, float64 ``(V, 3, 3)``."""
    return torch.stack([euler_to_matrix(*v) for v in views])


def project_depth(points: torch.Tensor, config: ScatterProjection) -> torch.Tensor:
    """Scatter depth maps of a batch of clouds in every view.

    Args:
        points: ``(B, N, 3)`` float tensor.
        config: views, camera distance and resolution.

    Returns:
        depth: ``(B, V, H, W)`` float32; a pixel holds the harmonic mean depth of the points
        that land in it (``sum z*w / sum w`` with ``w = 1/(z+1e-12)``), ``0`` when empty.
    """
    check_points(points)
    b, n, _ = points.shape
    v = config.num_views
    h = w = config.resolution
    dev = points.device
    pts = points.to(torch.float32)
    rot = view_matrices(config.views).to(device=dev, dtype=torch.float32)  # (V, 3, 3)
    q = torch.einsum("vij,bnj->bvni", rot, pts)  # (B, V, N, 3)
    z = q[..., 2] + config.distance
    u = q[..., 0] / (z + EPS)
    vv = q[..., 1] / (z + EPS)
    i = torch.ceil((u + 1.0) * h / 2.0 - 0.5).long()
    j = torch.ceil((vv + 1.0) * w / 2.0 - 0.5).long()
    valid = (i >= 0) & (i < h) & (j >= 0) & (j < w) & (z >= 0)
    view_offset = (torch.arange(b * v, device=dev) * (h * w)).view(b, v, 1)
    flat = (view_offset + i * w + j)[valid]
    zv = z[valid]
    wv = 1.0 / (zv + EPS)
    num = torch.zeros(b * v * h * w, device=dev, dtype=torch.float32).index_add_(0, flat, zv * wv)
    den = torch.zeros(b * v * h * w, device=dev, dtype=torch.float32).index_add_(0, flat, wv)
    depth = torch.where(den > 0, num / den.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(num))
    return depth.view(b, v, h, w)


def _rotation_naive(ax: float, ay: float, az: float) -> np.ndarray:
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rx @ ry @ rz


def project_depth_naive(points: np.ndarray, config: ScatterProjection) -> np.ndarray:
    """Slow, obviously-correct :func:`project_depth`: one point at a time, sums in float64.

    ``points: (B, N, 3)`` -> ``float64 (B, V, H, W)``.
    """
    b = points.shape[0]
    h = w = config.resolution
    out = np.zeros((b, config.num_views, h, w))
    for bi in range(b):
        for vi, view in enumerate(config.views):
            m = _rotation_naive(*view)
            num = np.zeros((h, w))
            den = np.zeros((h, w))
            for p in np.asarray(points[bi], dtype=np.float64):
                q = m @ p
                z = q[2] + config.distance
                u = q[0] / (z + 1e-12)
                v = q[1] / (z + 1e-12)
                i = math.ceil((u + 1) * h / 2 - 0.5)
                j = math.ceil((v + 1) * w / 2 - 0.5)
                if 0 <= i < h and 0 <= j < w and z >= 0:
                    wt = 1.0 / (z + 1e-12)
                    num[i, j] += z * wt
                    den[i, j] += wt
            out[bi, vi] = np.where(den > 0, num / np.where(den > 0, den, 1), 0)
    return out


def depth_to_images(
    depth: torch.Tensor,
    image_size: int = 224,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """Encoder images of scatter depth maps ``(B, V, H, W)`` -> ``(B, V, 3, S, S)``."""
    return maps_to_images(depth, image_size, mean, std, name="depth")


def project_images(
    points: torch.Tensor,
    config: Projection,
    image_size: int = 224,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """``config.images(points)``: ``(B, N, 3)`` -> ``(B, V, 3, S, S)`` for any projection."""
    return config.images(points, image_size, mean, std)
