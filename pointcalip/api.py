"""Python API: classify and render your own point clouds (docs/method.md §1-§5).

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

Orientation (docs/method.md §1): ``up_axis`` names the axis that points up in the input
(``y z x -y -z -x``; it is rotated onto +y before anything else), or ``auto`` / ``auto3``:
every candidate axis (all six, or ``y z x``) is tried and, per cloud, the one whose
prediction is most confident (largest top-1 probability; ties go to the earlier candidate)
is kept. The input is read and checked once; only the preparation (rotate, normalise,
canonical order, FPS) and one encoder pass are repeated per candidate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from pointcalip.attention import DEFAULT_ALPHA, DEFAULT_BETA2, DEFAULT_BETA3
from pointcalip.clouds import UP_AXES, PreparedCloud, ReadLimits, prepare_cloud_info, read_raw
from pointcalip.errors import ConfigError, PointCloudError
from pointcalip._types import PathLike

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from pointcalip.config import EvalConfig
    from pointcalip.encoders import CLIPEncoder

__all__ = [
    "AUTO_UP_AXES", "UP_AXIS_CHOICES", "CandidateClouds", "Prediction", "ZeroShotClassifier", "check_classes",
    "choose_orientation", "choose_orientation_naive", "to_candidates", "to_clouds", "up_axis_candidates",
]

CloudInput = Union[PathLike, np.ndarray, "torch.Tensor", Sequence[Any]]

#: ``auto`` tries every axis, ``auto3`` the three positive ones; the order breaks ties.
AUTO_UP_AXES: Dict[str, Tuple[str, ...]] = {"auto": UP_AXES, "auto3": ("y", "z", "x")}
#: What ``--up-axis`` / ``up_axis=`` accept.
UP_AXIS_CHOICES: Tuple[str, ...] = UP_AXES + tuple(AUTO_UP_AXES)


def up_axis_candidates(up_axis: str) -> Tuple[str, ...]:
    """The axes tried for ``up_axis``: ``(up_axis,)`` for a fixed one, the candidates of ``auto``/``auto3``."""
    if isinstance(up_axis, str) and up_axis in AUTO_UP_AXES:
        return AUTO_UP_AXES[up_axis]
    if isinstance(up_axis, str) and up_axis in UP_AXES:
        return (up_axis,)
    raise ConfigError(f"invalid up_axis {up_axis!r}; valid: {', '.join(UP_AXIS_CHOICES)}")


def choose_orientation(top1: np.ndarray) -> np.ndarray:
    """Per cloud, the candidate with the largest top-1 probability (the first one on ties).

    Args:
        top1: ``(C, B)`` top-1 probability of each of ``C`` candidates for each of ``B`` clouds.

    Returns:
        ``int64 (B,)`` candidate indices.
    """
    top1 = np.asarray(top1)
    if top1.ndim != 2 or top1.shape[0] < 1:
        raise ValueError(f"top1 must have shape (C, B) with C >= 1; got {top1.shape}")
    return np.argmax(top1, axis=0).astype(np.int64)  # argmax returns the first maximum


def choose_orientation_naive(top1: np.ndarray) -> np.ndarray:
    """Loop reference of :func:`choose_orientation` (strictly larger replaces the current best)."""
    c, b = np.asarray(top1).shape
    out = np.zeros(b, dtype=np.int64)
    for j in range(b):
        best = 0
        for i in range(1, c):
            if top1[i][j] > top1[best][j]:
                best = i
        out[j] = best
    return out


@dataclass(frozen=True)
class Prediction:
    """Result of :meth:`ZeroShotClassifier.predict`.

    Attributes:
        probs: ``float64 (B, K)`` softmax over the whole vocabulary (rows sum to 1).
        labels: ``B`` top-1 class names.
        indices: ``int64 (B,)`` top-1 class indices into the vocabulary.
        classes: the ``K`` class names, in column order of ``probs``.
        up_axes: ``B`` up axes used (the chosen one under ``auto``); empty when unknown.
        outliers: ``B`` points dropped by the robust cut (all 0 unless ``robust``); empty when unknown.
    """

    probs: np.ndarray
    labels: List[str]
    indices: np.ndarray
    classes: Tuple[str, ...] = ()
    up_axes: Tuple[str, ...] = ()
    outliers: Tuple[int, ...] = ()

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


@dataclass(frozen=True)
class CandidateClouds:
    """``B`` inputs prepared under each of ``C`` candidate up axes.

    Attributes:
        axes: the ``C`` candidate axes, in tie-break order.
        clouds: ``C`` lists of ``B`` arrays ``float32 (M_b, 3)``; ``clouds[c][b]`` is input ``b``
            rotated by ``axes[c]``, normalised and resampled.
        outliers: ``B`` points dropped by the robust cut (the same for every candidate: the
            cut depends only on distances to the coordinate-wise median, which a signed
            permutation of the axes does not change).
        num_read: ``B`` points read before the cut and resampling.
    """

    axes: Tuple[str, ...]
    clouds: Tuple[Tuple[np.ndarray, ...], ...]
    outliers: Tuple[int, ...]
    num_read: Tuple[int, ...]


def _raw_inputs(x: CloudInput) -> List[Tuple[Any, str]]:
    """``(path or array, source name)`` of every cloud in ``x`` (nothing is read yet)."""
    if _is_path(x):
        return [(x, os.fspath(x))]
    arr = _as_numpy(x)
    if isinstance(arr, np.ndarray):
        if arr.ndim == 3:
            return [(c, f"points[{i}]") for i, c in enumerate(arr)]
        return [(arr, "points")]
    if isinstance(arr, (list, tuple)):
        return [(item, os.fspath(item)) if _is_path(item) else (_as_numpy(item), f"points[{i}]")
                for i, item in enumerate(arr)]
    raise PointCloudError(f"cannot classify a {type(x).__name__}; give a path, a list of paths, "
                          f"or an (N, 3) / (B, N, 3) numpy array or torch tensor")


def prepare_candidates_of(
    raw: Any, source: str, num_points: Optional[int], axes: Sequence[str], robust: bool
) -> Tuple[PreparedCloud, ...]:
    """One read cloud ``raw: (N, >=3)`` prepared under each of ``axes`` (docs/method.md §1).

    The rotation comes before centring, canonical ordering and FPS, so each candidate is
    prepared from the raw points, not by rotating another candidate's result.
    """
    return tuple(prepare_cloud_info(raw, num_points, True, source, up_axis=a, robust=robust) for a in axes)


def to_candidates(
    x: CloudInput,
    num_points: Optional[int] = 1024,
    up_axis: str = "y",
    robust: bool = False,
    limits: Optional[ReadLimits] = None,
) -> CandidateClouds:
    """Read ``x`` once and prepare it under every candidate of ``up_axis`` (see :func:`up_axis_candidates`)."""
    axes = up_axis_candidates(up_axis)
    per_input: List[Tuple[PreparedCloud, ...]] = []
    for item, source in _raw_inputs(x):
        if _is_path(item):
            from pathlib import Path

            raw = read_raw(item, num_points, limits)
            source = str(Path(os.fspath(item)).expanduser())
        else:
            raw = item
        per_input.append(prepare_candidates_of(raw, source, num_points, axes, robust))
    clouds = tuple(tuple(p[c].points for p in per_input) for c in range(len(axes)))
    return CandidateClouds(axes, clouds, tuple(p[0].num_outliers for p in per_input),
                           tuple(p[0].num_read for p in per_input))


def to_clouds(
    x: CloudInput,
    num_points: Optional[int] = 1024,
    up_axis: str = "y",
    robust: bool = False,
    limits: Optional[ReadLimits] = None,
) -> List[np.ndarray]:
    """Prepared clouds of any supported input, under one fixed ``up_axis``.

    Args:
        x: a path; a list of paths and/or ``(N, 3)`` arrays; a numpy array or torch tensor
            ``(N, 3)`` (one cloud) or ``(B, N, 3)`` (``B`` clouds).
        num_points: keep at most this many points per cloud.
        up_axis: the inputs' up axis (one of ``y z x -y -z -x``).
        robust: drop far outliers before normalising.
        limits: read limits for files.

    Returns:
        ``B`` arrays ``float32 (M_b, 3)`` (sizes may differ).
    """
    if up_axis in AUTO_UP_AXES:
        raise ConfigError(f"up_axis {up_axis!r} is chosen by classifying; prepare clouds with a fixed axis "
                          f"({', '.join(UP_AXES)}) or call predict(x, up_axis={up_axis!r})")
    return list(to_candidates(x, num_points, up_axis, robust, limits).clouds[0])


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
        projection: a registered projection preset (``pointclip``, ``pointclip10``, ``realistic``).
        num_points: points kept per cloud (farthest point sampling).
        batch_size: clouds encoded at once.
        alpha: CALIP attention scale.
        normalize_images: apply CLIP mean/std to depth images.
        encoder: an already loaded :class:`~pointcalip.encoders.CLIPEncoder` (then
            ``backbone``/``pretrained``/``device`` are not used).
        up_axis: default up axis of the inputs: ``y z x -y -z -x``, or ``auto`` / ``auto3``
            (one encoder pass per candidate axis; see the module docstring).
        robust: drop far outliers before normalising (``--robust-normalize``).
        runtime, precision: how the image encoder runs (docs/method.md §3.4).
        prompts: a JSON prompt file ``{class: [sentence, ...]}``; replaces ``templates``.
        limits: :class:`~pointcalip.clouds.ReadLimits` for files (default: the built-in limits).
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
        *,
        up_axis: str = "y",
        robust: bool = False,
        runtime: str = "auto",
        precision: str = "fp32",
        prompts: Optional[PathLike] = None,
        limits: Optional[ReadLimits] = None,
    ) -> None:
        from pointcalip.config import ZERO_SHOT_TEMPLATE, EvalConfig, update_dataclass, validate

        settings = dict(backbone=backbone, pretrained=pretrained, method=method, device=device,
                        templates=list(templates) if templates is not None else [ZERO_SHOT_TEMPLATE],
                        beta2=beta2, beta3=beta3, view_weights=view_weights, projection=projection,
                        num_points=num_points, batch_size=batch_size, alpha=alpha,
                        normalize_images=normalize_images, runtime=runtime, precision=precision,
                        prompts=os.fspath(prompts) if prompts is not None else None)
        cfg = validate(update_dataclass(EvalConfig(), settings, source="ZeroShotClassifier"))
        self._setup(cfg, classes, encoder, None, up_axis, robust, limits)

    @classmethod
    def from_config(
        cls,
        config: "EvalConfig",
        classes: Optional[Sequence[str]] = None,
        encoder: Optional["CLIPEncoder"] = None,
        *,
        up_axis: str = "y",
        robust: bool = False,
        limits: Optional[ReadLimits] = None,
    ) -> "ZeroShotClassifier":
        """A classifier with the model settings of an :class:`~pointcalip.config.EvalConfig`."""
        self = cls.__new__(cls)
        self._setup(config, classes, encoder, None, up_axis, robust, limits)
        return self

    @classmethod
    def from_engine(
        cls,
        engine: Any,
        config: "EvalConfig",
        classes: Optional[Sequence[str]] = None,
        *,
        up_axis: str = "y",
        robust: bool = False,
        limits: Optional[ReadLimits] = None,
    ) -> "ZeroShotClassifier":
        """A classifier around a ready engine: anything with ``components(points (B, N, 3), text (K, D))
        -> (B, V, 3, K)``, ``text_features(classes, templates) -> (K, D)`` and ``projection``
        (e.g. a :class:`~pointcalip.engine.ZeroShotEngine`, or a stub in tests)."""
        self = cls.__new__(cls)
        self._setup(config, classes, None, engine, up_axis, robust, limits)
        return self

    def _setup(self, cfg: "EvalConfig", classes: Optional[Sequence[str]], encoder: Optional["CLIPEncoder"],
               engine: Any, up_axis: str, robust: bool, limits: Optional[ReadLimits]) -> None:
        from pointcalip.engine import engine_from_config

        up_axis_candidates(up_axis)  # check early
        if limits is not None and not isinstance(limits, ReadLimits):
            raise ConfigError(f"limits must be a pointcalip.clouds.ReadLimits, got {type(limits).__name__}")
        self.config = cfg
        self.up_axis = up_axis
        self.robust = bool(robust)
        self.limits = limits
        self.classes: Tuple[str, ...] = tuple(check_classes(classes))
        self.engine = engine if engine is not None else engine_from_config(cfg, encoder)
        self.encoder = getattr(self.engine, "encoder", None)
        self.view_weights: Tuple[float, ...] = cfg.resolved_view_weights()
        self.beta2, self.beta3 = cfg.effective_betas()
        self.text = self._text_features(cfg)  # (K, D), once

    def _text_features(self, cfg: "EvalConfig") -> "torch.Tensor":
        """``(K, D)``: the templates' average per class, or a prompt file's sentences (docs/method.md §3.3)."""
        from pointcalip.prompts import class_text

        return class_text(self.engine, self.classes, cfg.templates, cfg.prompts)

    @property
    def num_points(self) -> int:
        return self.config.num_points

    def prepare(self, x: CloudInput, up_axis: Optional[str] = None) -> List[np.ndarray]:
        """Prepared clouds ``B x float32 (M_b, 3)`` of ``x`` under a fixed up axis (see :func:`to_clouds`)."""
        return to_clouds(x, self.num_points, up_axis or self.up_axis, self.robust, self.limits)

    def prepare_candidates(self, x: CloudInput, up_axis: Optional[str] = None) -> CandidateClouds:
        """``x`` read once and prepared under every candidate of ``up_axis`` (default: the classifier's)."""
        return to_candidates(x, self.num_points, up_axis or self.up_axis, self.robust, self.limits)

    def logits(self, clouds: Sequence[np.ndarray]) -> np.ndarray:
        """Logits ``float64 (B, K)`` (docs/method.md §5) of prepared clouds ``B x (M_b, 3)`` (sizes may differ)."""
        import torch

        from pointcalip.aggregation import logits_from_components

        out = np.zeros((len(clouds), len(self.classes)), dtype=np.float64)
        for idx in _size_groups(clouds, self.config.batch_size):
            pts = torch.from_numpy(np.stack([clouds[i] for i in idx]))
            comps = self.engine.components(pts, self.text)  # (b, V, 3, K)
            out[idx] = logits_from_components(comps, self.view_weights, self.beta2, self.beta3).double().cpu().numpy()
        return out

    def _prediction(self, logits: np.ndarray, up_axes: Tuple[str, ...] = (),
                    outliers: Tuple[int, ...] = ()) -> Prediction:
        """Softmax ``probs (B, K)`` of ``logits (B, K)`` and the top-1 of each row."""
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True)) if len(logits) else logits
        probs = shifted / shifted.sum(axis=1, keepdims=True) if len(logits) else logits
        indices = probs.argmax(axis=1).astype(np.int64) if len(probs) else np.zeros(0, dtype=np.int64)
        return Prediction(probs, [self.classes[i] for i in indices], indices, self.classes, up_axes, outliers)

    def predict_clouds(self, clouds: Sequence[np.ndarray]) -> Prediction:
        """Predictions of already prepared clouds ``B x (M_b, 3)``."""
        return self._prediction(self.logits(clouds))

    def predict_candidates(self, candidates: CandidateClouds) -> Prediction:
        """Per cloud, the prediction of its most confident candidate orientation.

        One encoder pass per candidate over the same ``B`` clouds, so the chosen row is
        exactly what a run with that fixed axis gives for the same batch.
        """
        per_axis = [self._prediction(self.logits(list(clouds))) for clouds in candidates.clouds]
        b = len(candidates.num_read)
        if len(per_axis) == 1:
            chosen = np.zeros(b, dtype=np.int64)
        else:
            chosen = choose_orientation(np.stack([p.probs.max(axis=1) if b else np.zeros(0) for p in per_axis]))
        probs = np.stack([per_axis[c].probs[j] for j, c in enumerate(chosen)]) if b else per_axis[0].probs
        indices = probs.argmax(axis=1).astype(np.int64) if b else np.zeros(0, dtype=np.int64)
        return Prediction(probs, [self.classes[i] for i in indices], indices, self.classes,
                          tuple(candidates.axes[c] for c in chosen), candidates.outliers)

    def predict(self, x: CloudInput, up_axis: Optional[str] = None) -> Prediction:
        """Classify ``x``: a path, a list of paths, ``(N, 3)`` or ``(B, N, 3)`` array/tensor.

        Args:
            x: the clouds.
            up_axis: overrides the classifier's ``up_axis`` for this call (``auto``/``auto3`` too).

        Returns:
            :class:`Prediction` with ``probs (B, K)`` (softmax of the logits over all ``K``
            classes), ``labels``, ``indices (B,)``, the ``up_axes`` used and ``outliers``.
        """
        return self.predict_candidates(self.prepare_candidates(x, up_axis))

    def render(self, x: CloudInput, up_axis: Optional[str] = None) -> np.ndarray:
        """Depth maps ``float32 (B, V, H, W)`` of ``x`` with this classifier's projection.

        Under ``auto``/``auto3`` each cloud is shown in the orientation :meth:`predict` chooses.
        """
        candidates = self.prepare_candidates(x, up_axis)
        if len(candidates.axes) == 1:
            clouds = list(candidates.clouds[0])
        else:
            axes = self.predict_candidates(candidates).up_axes
            clouds = [candidates.clouds[candidates.axes.index(a)][j] for j, a in enumerate(axes)]
        return render_depth(clouds, self.engine.projection)

    def __repr__(self) -> str:
        c = self.config
        info = getattr(self.encoder, "info", None)
        backbone, pretrained = (info.backbone, info.pretrained) if info is not None else (c.backbone, c.pretrained)
        device = str(getattr(self.encoder, "device", c.device))
        return (f"ZeroShotClassifier(backbone={backbone!r}, pretrained={pretrained!r}, method={c.method!r}, "
                f"K={len(self.classes)}, projection={c.projection!r}, up_axis={self.up_axis!r}, device={device!r})")


def render_depth(clouds: Sequence[np.ndarray], projection: Any) -> np.ndarray:
    """Single-channel maps ``float32 (B, V, H, W)`` of prepared clouds ``B x (M_b, 3)`` (sizes may differ)."""
    import torch

    parts: Dict[int, np.ndarray] = {}
    for idx in _size_groups(clouds, 256):
        maps = projection.maps(torch.from_numpy(np.stack([clouds[i] for i in idx]))).cpu().numpy()
        parts.update(zip(idx, maps))
    return np.stack([parts[i] for i in range(len(clouds))]) if clouds else np.zeros((0, projection.num_views, 0, 0), np.float32)
