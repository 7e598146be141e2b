"""Python API: classify and render your own point clouds (SPEC §1-§5).

Symbols: ``B`` clouds, ``N`` points, ``V`` views, ``H x W`` depth-map size, ``K`` classes.

>>> clf = ZeroShotClassifier(classes=["chair", "table", "lamp"])  # doctest: +SKIP
>>> pred = clf.predict("data/samples/chair.ply")                  # doctest: +SKIP
>>> pred.labels, pred.probs.shape                                  # doctest: +SKIP
(['chair'], (1, 3))

Inputs (files or arrays) are prepared the same way: checked (:func:`~pointcalip.clouds.validate_cloud`),
centred and scaled into the unit ball, then reduced to ``num_points`` by farthest point
sampling when larger. Sampling runs on the points in a canonical order
(:func:`pointcalip.clouds.resample_cloud`), so the prediction does not depend on the order of
the points, even when sampling picks a subset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from pointcalip.attention import DEFAULT_ALPHA, DEFAULT_BETA2, DEFAULT_BETA3
from pointcalip.errors import ConfigError, PointCloudError
from pointcalip.clouds import load_point_cloud, prepare_cloud

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from pointcalip.config import EvalConfig
    from pointcalip.encoders import CLIPEncoder

__all__ = ["Prediction", "ZeroShotClassifier", "check_classes", "to_clouds"]

PathLike = Union[str, "os.PathLike[str]"]
CloudInput = Union[PathLike, np.ndarray, "torch.Tensor", Sequence[Any]]


@dataclass(frozen=True)
class Prediction:
    """Result of :meth:`ZeroShotClassifier.predict`.

    Attributes:
        probs: ``float64 (B, K)`` softmax over the whole vocabulary (rows sum to 1).
        labels: ``B`` top-1 class names.
        indices: ``int64 (B,)`` top-1 class indices into the vocabulary.
        classes: the ``K`` class names, in column order of ``probs``.
    """

    probs: np.ndarray
    labels: List[str]
    indices: np.ndarray
    classes: Tuple[str, ...] = ()

    def topk(self, k: int = 5) -> List[List[Tuple[str, float]]]:
        """The ``min(k, K)`` most probable ``(label, prob)`` of every cloud, most probable first."""
        k = max(0, min(int(k), self.probs.shape[1]))
        order = np.argsort(-self.probs, axis=1, kind="stable")[:, :k]
        return [[(self.classes[j], float(row[j])) for j in idx] for row, idx in zip(self.probs, order)]


# ------------------------------------------------------------------ preparing clouds


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _as_numpy(x: Any) -> Any:
    """A torch tensor as a CPU numpy array; anything else unchanged."""
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x


def to_clouds(x: CloudInput, num_points: Optional[int] = 1024) -> List[np.ndarray]:
    """Prepared clouds of any supported input.

    Args:
        x: a path; a list of paths and/or ``(N, 3)`` arrays; a numpy array or torch tensor
            ``(N, 3)`` (one cloud) or ``(B, N, 3)`` (``B`` clouds).
        num_points: keep at most this many points per cloud.

    Returns:
        ``B`` arrays ``float32 (M_b, 3)`` (sizes may differ).
    """
    if _is_path(x):
        return [load_point_cloud(x, num_points)]
    arr = _as_numpy(x)
    if isinstance(arr, np.ndarray):
        if arr.ndim == 3:
            return [prepare_cloud(c, num_points, source=f"points[{i}]") for i, c in enumerate(arr)]
        return [prepare_cloud(arr, num_points, source="points")]
    if isinstance(arr, (list, tuple)):
        return [_one_cloud(item, i, num_points) for i, item in enumerate(arr)]
    raise PointCloudError(f"cannot classify a {type(x).__name__}; give a path, a list of paths, "
                          f"or an (N, 3) / (B, N, 3) numpy array or torch tensor")


def _one_cloud(item: Any, i: int, num_points: Optional[int]) -> np.ndarray:
    """One prepared cloud from a list element (a path or an ``(N, 3)`` array)."""
    if _is_path(item):
        return load_point_cloud(item, num_points)
    return prepare_cloud(_as_numpy(item), num_points, source=f"points[{i}]")


def check_classes(classes: Optional[Sequence[str]]) -> List[str]:
    """Stripped class names (default: ModelNet40's 40); ``ConfigError`` when empty or repeated."""
    from pointcalip.datasets import class_names

    if classes is None:
        return class_names("modelnet40")
    if isinstance(classes, str):
        raise ConfigError(f"classes must be a list of names, not the string {classes!r}; "
                          f"e.g. classes=['chair', 'table']")
    names = [str(c).strip() for c in classes]
    if not names or not all(names):
        raise ConfigError("the class list is empty or has an empty name; give at least one class name")
    seen: Dict[str, int] = {}
    for name in names:
        if name in seen:
            raise ConfigError(f"class {name!r} is listed twice; give each class once")
        seen[name] = 1
    return names


def _size_groups(clouds: Sequence[np.ndarray], batch_size: int) -> List[List[int]]:
    """Indices of ``clouds`` grouped by point count, then cut into batches of ``batch_size``."""
    by_size: Dict[int, List[int]] = {}
    for i, c in enumerate(clouds):
        by_size.setdefault(len(c), []).append(i)
    return [idx[s : s + batch_size] for idx in by_size.values() for s in range(0, len(idx), batch_size)]


# ------------------------------------------------------------------------ classifier


class ZeroShotClassifier:
    """Zero-shot PointCLIP / CALIP classifier over an open vocabulary.

    Loads the CLIP model once and encodes the class text features ``(K, D)`` once, at
    construction. Defaults are the reference's (RN50 + OpenAI weights, CALIP, 6 views).

    Args:
        backbone: open_clip model name or model-config ``.json``.
        pretrained: open_clip tag, local checkpoint file, or ``"random"``.
        classes: the ``K`` class names (any words); default: the 40 ModelNet40 classes.
        method: ``calip`` or ``pointclip`` (``beta2 = beta3 = 0``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        templates: prompt templates with ``{}``; default the zero-shot one.
        beta2, beta3: CALIP weights (ignored for ``pointclip``).
        view_weights: ``V`` per-view weights (default 1 each).
        projection: ``pointclip`` (6 views) or ``pointclip10``.
        num_points: points kept per cloud (farthest point sampling).
        batch_size: clouds encoded at once.
        alpha: CALIP attention scale.
        normalize_images: apply CLIP mean/std to depth images.
        encoder: an already loaded :class:`~pointcalip.encoders.CLIPEncoder` (then
            ``backbone``/``pretrained``/``device`` are not used).
    """

    def __init__(
        self,
        backbone: str = "RN50",
        pretrained: str = "openai",
        classes: Optional[Sequence[str]] = None,
        method: str = "calip",
        device: str = "auto",
        templates: Optional[Sequence[str]] = None,
        beta2: float = DEFAULT_BETA2,
        beta3: float = DEFAULT_BETA3,
        view_weights: Optional[Sequence[float]] = None,
        projection: str = "pointclip",
        num_points: int = 1024,
        batch_size: int = 32,
        alpha: float = DEFAULT_ALPHA,
        normalize_images: bool = False,
        encoder: Optional["CLIPEncoder"] = None,
    ) -> None:
        from pointcalip.config import ZERO_SHOT_TEMPLATE, EvalConfig, update_dataclass, validate

        settings = dict(backbone=backbone, pretrained=pretrained, method=method, device=device,
                        templates=list(templates) if templates is not None else [ZERO_SHOT_TEMPLATE],
                        beta2=beta2, beta3=beta3, view_weights=view_weights, projection=projection,
                        num_points=num_points, batch_size=batch_size, alpha=alpha,
                        normalize_images=normalize_images)
        self._setup(validate(update_dataclass(EvalConfig(), settings, source="ZeroShotClassifier")), classes, encoder)

    @classmethod
    def from_config(
        cls, config: "EvalConfig", classes: Optional[Sequence[str]] = None, encoder: Optional["CLIPEncoder"] = None
    ) -> "ZeroShotClassifier":
        """A classifier with the model settings of an :class:`~pointcalip.config.EvalConfig`."""
        self = cls.__new__(cls)
        self._setup(config, classes, encoder)
        return self

    def _setup(self, cfg: "EvalConfig", classes: Optional[Sequence[str]], encoder: Optional["CLIPEncoder"]) -> None:
        from pointcalip.engine import engine_from_config

        self.config = cfg
        self.classes: Tuple[str, ...] = tuple(check_classes(classes))
        self.engine = engine_from_config(cfg, encoder)
        self.encoder = self.engine.encoder
        self.view_weights: Tuple[float, ...] = cfg.resolved_view_weights()
        self.beta2, self.beta3 = cfg.effective_betas()
        self.text = self.engine.text_features(self.classes, cfg.templates)  # (K, D), once

    @property
    def num_points(self) -> int:
        return self.config.num_points

    def prepare(self, x: CloudInput) -> List[np.ndarray]:
        """Prepared clouds ``B x float32 (M_b, 3)`` of ``x`` (see :func:`to_clouds`)."""
        return to_clouds(x, self.num_points)

    def logits(self, clouds: Sequence[np.ndarray]) -> np.ndarray:
        """SPEC §5 logits ``float64 (B, K)`` of prepared clouds ``B x (M_b, 3)`` (sizes may differ)."""
        import torch

        from pointcalip.aggregation import logits_from_components

        out = np.zeros((len(clouds), len(self.classes)), dtype=np.float64)
        for idx in _size_groups(clouds, self.config.batch_size):
            pts = torch.from_numpy(np.stack([clouds[i] for i in idx]))
            comps = self.engine.components(pts, self.text)  # (b, V, 3, K)
            out[idx] = logits_from_components(comps, self.view_weights, self.beta2, self.beta3).double().cpu().numpy()
        return out

    def predict_clouds(self, clouds: Sequence[np.ndarray]) -> Prediction:
        """Predictions of already prepared clouds ``B x (M_b, 3)``."""
        logits = self.logits(clouds)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True)) if len(logits) else logits
        probs = shifted / shifted.sum(axis=1, keepdims=True) if len(logits) else logits
        indices = probs.argmax(axis=1).astype(np.int64) if len(probs) else np.zeros(0, dtype=np.int64)
        return Prediction(probs, [self.classes[i] for i in indices], indices, self.classes)

    def predict(self, x: CloudInput) -> Prediction:
        """Classify ``x``: a path, a list of paths, ``(N, 3)`` or ``(B, N, 3)`` array/tensor.

        Returns:
            :class:`Prediction` with ``probs (B, K)`` (softmax of the logits over all ``K``
            classes), ``labels`` and ``indices (B,)``.
        """
        return self.predict_clouds(self.prepare(x))

    def render(self, x: CloudInput) -> np.ndarray:
        """Depth maps ``float32 (B, V, H, W)`` of ``x`` with this classifier's projection."""
        return render_depth(self.prepare(x), self.engine.projection)

    def __repr__(self) -> str:
        c, info = self.config, self.encoder.info
        return (f"ZeroShotClassifier(backbone={info.backbone!r}, pretrained={info.pretrained!r}, method={c.method!r}, "
                f"K={len(self.classes)}, projection={c.projection!r}, device={str(self.encoder.device)!r})")


def render_depth(clouds: Sequence[np.ndarray], projection: Any) -> np.ndarray:
    """Single-channel maps ``float32 (B, V, H, W)`` of prepared clouds ``B x (M_b, 3)`` (sizes may differ)."""
    import torch

    parts: Dict[int, np.ndarray] = {}
    for idx in _size_groups(clouds, 256):
        maps = projection.maps(torch.from_numpy(np.stack([clouds[i] for i in idx]))).cpu().numpy()
        parts.update(zip(idx, maps))
    return np.stack([parts[i] for i in range(len(clouds))]) if clouds else np.zeros((0, projection.num_views, 0, 0), np.float32)
