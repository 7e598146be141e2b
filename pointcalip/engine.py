"""The zero-shot engine: clouds -> images -> dense CLIP features -> CALIP components.

Symbols: ``B`` clouds, ``N`` points, ``V`` views, ``L`` tokens, ``D`` width, ``K`` classes.
``forward_features`` (projection + image encoder) and ``forward_head`` (attention against
class text features) are split so few-shot heads can reuse the features.
:func:`build_engine` is the one factory that every command, the API and the benchmarks
use to put an encoder, a projection and the text side together (docs/method.md §3-§4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from pointcalip.attention import DEFAULT_ALPHA, calip_components
from pointcalip.projection import Projection, get_projection

if TYPE_CHECKING:  # pragma: no cover
    from pointcalip.encoders import CLIPEncoder, DenseFeatures


class ZeroShotEngine:
    """Frozen PointCLIP/CALIP zero-shot pipeline around a :class:`CLIPEncoder`."""

    def __init__(
        self,
        encoder: "CLIPEncoder",
        projection: Projection,
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

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def cache_parts(self) -> Dict[str, Any]:
        """Everything about this engine that decides its components (for cache keys)."""
        return {"weights": self.encoder.info.fingerprint, "projection": self.projection.to_dict(),
                "normalize_images": self.normalize_images, "alpha": self.alpha}

    def text_features(
        self,
        classes: Sequence[str],
        templates: Sequence[str],
        *,
        cache_dir: Optional[str] = None,
        use_cache: bool = True,
        progress: bool = False,
    ) -> torch.Tensor:
        """Class text features ``(K, D)``: each class's templates averaged (docs/method.md §3.3),
        computed once per (weights, sentences, classes) and kept in the text cache."""
        from pointcalip.text import cached_text_features

        return cached_text_features(self.encoder, list(classes), list(templates), cache_dir=cache_dir,
                                    use_cache=use_cache, progress=progress)

    def images(self, points: torch.Tensor) -> torch.Tensor:
        """Encoder inputs ``(B, V, 3, S, S)`` of ``points: (B, N, 3)``."""
        mean, std = (self.encoder.mean, self.encoder.std) if self.normalize_images else (None, None)
        return self.projection.images(points.to(self.encoder.device), self.encoder.image_size, mean, std)

    @torch.no_grad()
    def forward_features(self, points: torch.Tensor) -> "DenseFeatures":
        """Per-view features of ``points: (B, N, 3)``.

        Returns ``DenseFeatures`` with ``global_: (B, V, D)``, ``spatial: (B, V, L, D)``,
        ``global_raw: (B, V, D)``.
        """
        from pointcalip.encoders import DenseFeatures

        imgs = self.images(points)
        b, v = imgs.shape[:2]
        feats = self.encoder.encode_image_dense(imgs.flatten(0, 1))
        return DenseFeatures(
            feats.global_.view(b, v, -1),
            feats.spatial.view(b, v, feats.spatial.shape[1], -1),
            feats.global_raw.view(b, v, -1),
        )

    def forward_head(self, features: "DenseFeatures", text: torch.Tensor) -> torch.Tensor:
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


def point_batches(
    points: np.ndarray, batch_size: int, progress: bool = False, desc: str = "encoding"
) -> Iterator[torch.Tensor]:
    """Consecutive ``(b, N, 3)`` tensors of ``points: (B, N, 3)``, with a progress bar (ETA)."""
    n = len(points)
    with tqdm(total=n, desc=desc, unit="cloud", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            batch = points[start : start + batch_size]
            yield torch.from_numpy(np.ascontiguousarray(batch))
            bar.update(len(batch))


def build_engine(
    backbone: str,
    pretrained: str,
    projection: Union[str, Projection],
    device: str = "auto",
    *,
    normalize_images: bool = False,
    alpha: float = DEFAULT_ALPHA,
    runtime: str = "auto",
    precision: str = "fp32",
    encoder: Optional["CLIPEncoder"] = None,
) -> ZeroShotEngine:
    """The one factory for encoder + projection (+ text side via :meth:`ZeroShotEngine.text_features`).

    Args:
        backbone: open_clip model name or model-config ``.json``.
        pretrained: open_clip tag, local checkpoint, or ``"random"``.
        projection: a registered preset name or a :class:`Projection`.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        normalize_images: apply CLIP mean/std to the images.
        alpha: CALIP attention scale.
        runtime, precision: how the image encoder runs (docs/method.md §3.4).
        encoder: an already loaded encoder (then backbone/pretrained/device/runtime are unused).
    """
    proj = get_projection(projection) if isinstance(projection, str) else projection
    if encoder is None:
        from pointcalip.encoders import load_encoder

        encoder = load_encoder(backbone, pretrained, device, runtime=runtime, precision=precision)
    return ZeroShotEngine(encoder, proj, normalize_images, alpha)


def engine_from_config(cfg: Any, encoder: Optional["CLIPEncoder"] = None) -> ZeroShotEngine:
    """:func:`build_engine` with the model fields of a config (eval, classify, few-shot)."""
    return build_engine(cfg.backbone, cfg.pretrained, cfg.projection, cfg.device,
                        normalize_images=cfg.normalize_images, alpha=cfg.alpha,
                        runtime=cfg.runtime, precision=cfg.precision,
                        encoder=encoder)
