"""PointCLIP projection: point clouds -> multi-view "scatter" depth maps (SPEC §2).

Symbols: ``B`` clouds, ``N`` points, ``V`` views, ``H x W`` depth-map size.

The kernel is fully vectorised: every point of every cloud in every view is rotated,
projected and scatter-added into one flat buffer in a single pass (no Python loop over
clouds or views). A loop-based reference lives in ``tests/test_projection.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from pointcalip.errors import ConfigError

EPS = 1e-12

View = Tuple[float, float, float]

_PI = math.pi
_POINTCLIP_VIEWS: Tuple[View, ...] = (
    (0.0, 0.0, _PI / 2),
    (_PI / 2, 0.0, _PI / 2),
    (_PI, 0.0, _PI / 2),
    (3 * _PI / 2, 0.0, _PI / 2),
    (0.0, -_PI / 2, _PI / 2),
    (0.0, _PI / 2, _PI / 2),
)
_POINTCLIP10_VIEWS: Tuple[View, ...] = _POINTCLIP_VIEWS[:4] + (
    (5 * _PI / 4, -_PI / 4, _PI / 2),
    (5 * _PI / 4, _PI / 4, _PI / 2),
    (7 * _PI / 4, -_PI / 4, _PI / 2),
    (7 * _PI / 4, _PI / 4, _PI / 2),
) + _POINTCLIP_VIEWS[4:]


@dataclass(frozen=True)
class ProjectionConfig:
    """Where the virtual cameras are and how large the depth maps are.

    Attributes:
        name: preset name (``pointclip`` or ``pointclip10``) or ``custom``.
        views: ``V`` Euler triples ``(ax, ay, az)`` in radians; ``M = Rx(ax) Ry(ay) Rz(az)``.
        distance: camera distance ``d`` added to the rotated z coordinate.
        resolution: depth-map size ``H = W``.
    """

    name: str
    views: Tuple[View, ...]
    distance: float
    resolution: int

    @property
    def num_views(self) -> int:
        return len(self.views)


PRESETS: Dict[str, ProjectionConfig] = {
    "pointclip": ProjectionConfig("pointclip", _POINTCLIP_VIEWS, 1.6, 128),
    "pointclip10": ProjectionConfig("pointclip10", _POINTCLIP10_VIEWS, 1.4, 224),
}


def get_preset(name: str) -> ProjectionConfig:
    """The projection preset called ``name``; ``ConfigError`` lists the valid names."""
    if name not in PRESETS:
        raise ConfigError(f"unknown projection preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]


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


def _check_points(points: torch.Tensor) -> None:
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (B, N, 3); got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise ValueError(f"points must be a floating-point tensor; got dtype {points.dtype}")


def project_depth(points: torch.Tensor, config: ProjectionConfig) -> torch.Tensor:
    """Scatter depth maps of a batch of clouds in every view.

    Args:
        points: ``(B, N, 3)`` float tensor.
        config: views, camera distance and resolution.

    Returns:
        depth: ``(B, V, H, W)`` float32; a pixel holds the harmonic mean depth of the points
        that land in it (``sum z*w / sum w`` with ``w = 1/(z+1e-12)``), ``0`` when empty.
    """
    _check_points(points)
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


def depth_to_images(
    depth: torch.Tensor,
    image_size: int = 224,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """Encoder input images from depth maps.

    Args:
        depth: ``(B, V, H, W)``.
        image_size: encoder input size; maps are resized bilinearly with
            ``align_corners=True`` when ``H != image_size``.
        mean, std: per-channel normalisation (3 values each); ``None`` means none, which
            is what the reference does.

    Returns:
        images: ``(B, V, 3, image_size, image_size)`` float32.
    """
    if depth.dim() != 4:
        raise ValueError(f"depth must have shape (B, V, H, W); got {tuple(depth.shape)}")
    b, v, h, w = depth.shape
    x = depth.reshape(b * v, 1, h, w).to(torch.float32)
    if (h, w) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=True)
    x = x.expand(-1, 3, -1, -1)
    if mean is not None and std is not None:
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - m) / s
    return x.reshape(b, v, 3, image_size, image_size).contiguous()


def project_images(
    points: torch.Tensor,
    config: ProjectionConfig,
    image_size: int = 224,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """``depth_to_images(project_depth(points))``: ``(B, N, 3)`` -> ``(B, V, 3, S, S)``."""
    return depth_to_images(project_depth(points, config), image_size, mean, std)
