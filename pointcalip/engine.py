"""The zero-shot engine: clouds -> depth maps -> dense CLIP features -> CALIP components.

Symbols: ``B`` clouds, ``N`` points, ``V`` views, ``L`` tokens, ``D`` width, ``K`` classes.
``forward_features`` (projection + image encoder) and ``forward_head`` (attention against
class text features) are split so few-shot heads can reuse the features.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from pointcalip.attention import DEFAULT_ALPHA, calip_components
from pointcalip.encoders import CLIPEncoder, DenseFeatures
from pointcalip.projection import ProjectionConfig, project_images


class ZeroShotEngine:
    """Frozen PointCLIP/CALIP zero-shot pipeline around a :class:`CLIPEncoder`."""

    def __init__(
        self,
        encoder: CLIPEncoder,
        projection: ProjectionConfig,
        normalize_images: bool = False,
        alpha: float = DEFAULT_ALPHA,
    ) -> None:
        self.encoder = encoder
        self.projection = projection
        self.normalize_images = normalize_images
        self.alpha = alpha

    @property
    def num_views(self) -> int:
        return self.projection.num_views

    def images(self, points: torch.Tensor) -> torch.Tensor:
        """Encoder inputs ``(B, V, 3, S, S)`` of ``points: (B, N, 3)``."""
        mean, std = (self.encoder.mean, self.encoder.std) if self.normalize_images else (None, None)
        return project_images(points.to(self.encoder.device), self.projection, self.encoder.image_size, mean, std)

    @torch.no_grad()
    def forward_features(self, points: torch.Tensor) -> DenseFeatures:
        """Per-view features of ``points: (B, N, 3)``.

        Returns ``DenseFeatures`` with ``global_: (B, V, D)``, ``spatial: (B, V, L, D)``,
        ``global_raw: (B, V, D)``.
        """
        imgs = self.images(points)
        b, v = imgs.shape[:2]
        feats = self.encoder.encode_image_dense(imgs.flatten(0, 1))
        return DenseFeatures(
            feats.global_.view(b, v, -1),
            feats.spatial.view(b, v, feats.spatial.shape[1], -1),
            feats.global_raw.view(b, v, -1),
        )

    def forward_head(self, features: DenseFeatures, text: torch.Tensor) -> torch.Tensor:
        """CALIP components ``(B, V, 3, K)`` of per-view features against ``text: (K, D)``."""
        b, v, d = features.global_.shape
        comps = calip_components(
            features.global_.reshape(b * v, d),
            features.spatial.reshape(b * v, -1, d),
            text.to(features.global_.device),
            self.encoder.logit_scale,
            self.alpha,
        )
        return comps.view(b, v, 3, -1)

    def components(self, points: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``forward_head(forward_features(points), text)``: ``(B, N, 3)`` -> ``(B, V, 3, K)``."""
        return self.forward_head(self.forward_features(points), text)

    def components_of_array(
        self,
        points: np.ndarray,
        text: torch.Tensor,
        batch_size: int = 32,
        progress: bool = True,
        desc: str = "encoding",
    ) -> torch.Tensor:
        """Components of many clouds ``points: (B, N, 3)`` in batches -> CPU ``(B, V, 3, K)``."""
        out = [self.components(batch, text).cpu() for batch in point_batches(points, batch_size, progress, desc)]
        if not out:
            return torch.zeros(0, self.num_views, 3, text.shape[0])
        return torch.cat(out)


def point_batches(
    points: np.ndarray, batch_size: int, progress: bool = False, desc: str = "encoding"
) -> Iterator[torch.Tensor]:
    """Consecutive ``(b, N, 3)`` tensors of ``points: (B, N, 3)``, with a progress bar."""
    for start in tqdm(range(0, len(points), batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        yield torch.from_numpy(np.ascontiguousarray(points[start : start + batch_size]))
