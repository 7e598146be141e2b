"""The projection contract: point clouds -> per-view encoder images.

Symbols: ``B`` clouds, ``N`` points, ``V`` views, ``H x W`` map size, ``S`` encoder input size.

A projection is a frozen dataclass with a registered ``kind`` (``scatter``, ``realistic``,
...). Everything downstream (the engine, the cache key, rendering, few-shot heads) sees
only this interface, so a new projection is one module plus one ``register_projection``
call (docs/method.md §9).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F


class Projection:
    """Base class of every projection (subclasses are frozen dataclasses).

    Attributes:
        kind: the registered family (``scatter``, ``realistic``).
        name: the preset name (``pointclip``, ``pointclip10``, ``realistic``, ...).
    """

    kind: ClassVar[str] = "abstract"
    name: str
    #: whether ``images`` follows the CLIP mean/std option (realistic images never do).
    supports_normalization: ClassVar[bool] = True

    @property
    def num_views(self) -> int:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def maps(self, points: torch.Tensor) -> torch.Tensor:
        """Per-view single-channel maps ``(B, V, H, W)`` float32 of ``points: (B, N, 3)``."""
        raise NotImplementedError

    def images(
        self,
        points: torch.Tensor,
        image_size: int = 224,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> torch.Tensor:
        """Encoder inputs ``(B, V, 3, S, S)`` float32 of ``points: (B, N, 3)``.

        ``mean``/``std`` are ignored by kinds whose images are never CLIP-normalised
        (``supports_normalization = False``, e.g. the realistic projection).
        """
        if not self.supports_normalization:
            mean = std = None
        return maps_to_images(self.maps(points), image_size, mean, std)

    def preview(self, points: torch.Tensor) -> torch.Tensor:
        """Grey-level pictures ``(B, V, H, W)`` in ``[0, 1]`` for people to look at."""
        raise NotImplementedError

    def view_labels(self) -> List[str]:
        """One short caption per view (``"view 0"``, ...); kinds with named cameras say more."""
        return [f"view {i}" for i in range(self.num_views)]

    def to_dict(self) -> Dict[str, Any]:
        """Everything that decides the images (used in cache keys and head metadata)."""
        return {"kind": self.kind, **dataclasses.asdict(self)}  # type: ignore[call-overload]


def check_points(points: torch.Tensor) -> None:
    """``ValueError`` naming ``points`` unless it is a floating ``(B, N, 3)`` tensor."""
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (B, N, 3); got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise ValueError(f"points must be a floating-point tensor; got dtype {points.dtype}")


def maps_to_images(
    maps: torch.Tensor,
    image_size: int = 224,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    name: str = "maps",
) -> torch.Tensor:
    """Encoder input images from single-channel maps (docs/method.md §2).

    Args:
        maps: ``(B, V, H, W)``.
        image_size: encoder input size ``S``; maps are resized bilinearly with
            ``align_corners=True`` when ``H != S``.
        mean, std: per-channel normalisation (3 values each); ``None`` means none, which
            is what the reference code does.

    Returns:
        images: ``(B, V, 3, S, S)`` float32, the three channels identical before ``mean/std``.
    """
    if maps.dim() != 4:
        raise ValueError(f"{name} must have shape (B, V, H, W); got {tuple(maps.shape)}")
    b, v, h, w = maps.shape
    x = maps.reshape(b * v, 1, h, w).to(torch.float32)
    if (h, w) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=True)
    x = x.expand(-1, 3, -1, -1)
    if mean is not None and std is not None:
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - m) / s
    return x.reshape(b, v, 3, image_size, image_size).contiguous()
