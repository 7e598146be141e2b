"""Per-view CALIP components of a dataset split, encoded in batches and cached on disk.

Symbols: ``B`` clouds, ``V`` views, ``K`` classes, ``D`` width.

:class:`EvalModel` holds the engine and (lazily) the class text features: template averages,
or a prompt file's sentences (docs/method.md §3.3). :func:`dataset_components` streams a
dataset (subset) through the engine batch by batch, reading clouds with ``dataset.points_of``
so lazily stored datasets never sit in memory whole, and caches the ``(B, V, 3, K)`` result.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from pointcalip.cache import ComponentCache, cache_key
from pointcalip.config import EvalConfig
from pointcalip.engine import ZeroShotEngine, engine_from_config

COMPONENTS_VERSION = "components-v2"


class EvalModel:
    """The engine of an evaluation; the class text features are encoded only when an image
    must be encoded (a run served from the component cache never needs them)."""

    def __init__(self, cfg: EvalConfig, classes: Sequence[str]) -> None:
        t0 = time.perf_counter()
        self.engine = engine_from_config(cfg)
        self.encoder = self.engine.encoder
        self.seconds_load = time.perf_counter() - t0
        self.cfg = cfg
        self.classes = list(classes)
        self._text: Optional[torch.Tensor] = None
        self._sentences: Optional[List[List[str]]] = None

    @property
    def sentences(self) -> Optional[List[List[str]]]:
        """The prompt file's sentences per class, or ``None`` when templates are used."""
        if self.cfg.prompts and self._sentences is None:
            from pointcalip.prompts import load_prompt_file

            self._sentences = load_prompt_file(self.cfg.prompts, self.classes)
        return self._sentences

    def text_identity(self) -> Dict[str, Any]:
        """What decides the text features (for cache keys)."""
        if self.cfg.prompts:
            return {"prompts": hashlib.sha256(repr(self.sentences).encode()).hexdigest()[:16]}
        return {"templates": list(self.cfg.templates)}

    @property
    def text(self) -> torch.Tensor:
        """``(K, D)`` class text features."""
        if self._text is None:
            if self.sentences is not None:
                from pointcalip.prompts import class_features

                self._text = class_features(self.encoder.sentence_features(self.sentences))
            else:
                self._text = self.engine.text_features(self.classes, self.cfg.templates)
        return self._text

    def set_text(self, text: torch.Tensor, identity: Dict[str, Any]) -> None:
        """Use selected text features ``(K, D)`` from now on (prompt selection)."""
        self._text = text
        self.text_identity = lambda: identity  # type: ignore[method-assign]


def components_key(cfg: EvalConfig, model: EvalModel, dataset: Any, split: str, indices: Optional[np.ndarray]) -> str:
    """Cache key of one dataset subset's components."""
    return cache_key({
        "version": COMPONENTS_VERSION, "dataset": cfg.dataset, "variant": getattr(dataset, "variant", None),
        "split": split, "indices": _indices_id(indices), "num_points": cfg.num_points, "data": dataset.fingerprint(),
        "backbone": Path(cfg.backbone).name, **model.engine.cache_parts(), **model.text_identity(),
        "classes": list(dataset.classes),
    })


def _indices_id(indices: Optional[np.ndarray]) -> str:
    return "all" if indices is None else hashlib.sha256(np.asarray(indices, np.int64).tobytes()).hexdigest()[:16]


def row_batches(
    dataset: Any, rows: np.ndarray, batch_size: int, progress: bool = False, desc: str = "encoding"
) -> Iterator[torch.Tensor]:
    """``(b, N, 3)`` tensors of ``dataset`` rows ``rows`` in order, read batch by batch (progress + ETA)."""
    with tqdm(total=len(rows), desc=desc, unit="cloud", disable=not progress, leave=False) as bar:
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            yield torch.from_numpy(np.ascontiguousarray(dataset.points_of(idx), dtype=np.float32))
            bar.update(len(idx))


def encode_rows(model: EvalModel, dataset: Any, rows: np.ndarray, batch_size: int, progress: bool,
                desc: str) -> torch.Tensor:
    """CPU components ``(len(rows), V, 3, K)`` of dataset rows."""
    text = model.text
    out = [model.engine.components(batch, text).cpu() for batch in row_batches(dataset, rows, batch_size, progress, desc)]
    if not out:
        return torch.zeros(0, model.engine.num_views, 3, text.shape[0])
    return torch.cat(out)


def dataset_components(
    cfg: EvalConfig, model: EvalModel, dataset: Any, split: str, indices: Optional[np.ndarray] = None
) -> Tuple[torch.Tensor, np.ndarray, bool]:
    """``(components (B, V, 3, K), labels (B,), from_cache)`` of a dataset (subset)."""
    rows = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    labels = dataset.labels[rows]
    cache = ComponentCache(cfg.cache_dir)
    key = components_key(cfg, model, dataset, split, indices)
    if cfg.use_cache:
        hit = cache.load(key)
        if hit is not None and np.array_equal(hit["labels"], labels):
            return torch.from_numpy(hit["components"]), labels, True
    comps = encode_rows(model, dataset, rows, cfg.batch_size, cfg.progress, f"encoding {split}")
    if cfg.use_cache:
        cache.save(key, {"components": comps.numpy(), "labels": labels}, meta={"split": split, "n": len(labels)})
    return comps, labels, False


def global_features(model: EvalModel, dataset: Any, rows: np.ndarray, batch_size: int, progress: bool) -> torch.Tensor:
    """CPU ``(len(rows), V, D)`` normalised per-view global features (for prompt selection)."""
    out = [model.engine.forward_features(batch).global_.cpu()
           for batch in row_batches(dataset, rows, batch_size, progress, "encoding prompt-selection clouds")]
    return torch.cat(out) if out else torch.zeros(0, model.engine.num_views, 0)
