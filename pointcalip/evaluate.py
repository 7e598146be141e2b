"""``pointcalip eval``: zero-shot evaluation of a dataset split (SPEC §2-§5).

Components are cached on disk (see :mod:`pointcalip.cache`); hyper-parameters are the
config's, or selected by ``search: val`` (held-out training clouds, the honest protocol)
or ``search: test`` (the reference's protocol, an oracle tuned on test labels).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from pointcalip.aggregation import ORACLE_LABEL, SearchResult, logits_from_components, run_search
from pointcalip.cache import ComponentCache, cache_key
from pointcalip.config import EvalConfig
from pointcalip.engine import ZeroShotEngine
from pointcalip.metrics import classification_metrics
from pointcalip.projection import get_preset
from pointcalip.report import package_versions, plot_confusion, summary_table, write_json, write_predictions
from pointcalip.splits import stratified_holdout

COMPONENTS_VERSION = "components-v1"


@dataclass
class Selection:
    """The hyper-parameters used for the reported numbers, and how they were chosen."""

    view_weights: Tuple[float, ...]
    beta2: float
    beta3: float
    how: str
    search: Optional[SearchResult] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"view_weights": list(self.view_weights), "beta2": self.beta2, "beta3": self.beta3,
                               "selected_by": self.how}
        if self.search is not None:
            out["search"] = dataclasses.asdict(self.search)
        return out


class EvalModel:
    """The encoder and engine of an evaluation; the class text features are encoded only when
    an image must be encoded (a run served from the component cache never needs them)."""

    def __init__(self, cfg: EvalConfig, classes: Sequence[str]) -> None:
        from pointcalip.encoders import load_encoder

        t0 = time.perf_counter()
        self.encoder = load_encoder(cfg.backbone, cfg.pretrained, cfg.device)
        self.seconds_load = time.perf_counter() - t0
        self.engine = ZeroShotEngine(self.encoder, get_preset(cfg.projection), cfg.normalize_images, cfg.alpha)
        self._classes = list(classes)
        self._templates = list(cfg.templates)
        self._text: Optional[torch.Tensor] = None

    @property
    def text(self) -> torch.Tensor:
        if self._text is None:
            self._text = self.encoder.encode_text(self._classes, self._templates)
        return self._text


def components_key(cfg: EvalConfig, dataset, split: str, indices: Optional[np.ndarray], weights_fp: str) -> str:
    """Cache key of one dataset subset's components."""
    idx = "all" if indices is None else hashlib.sha256(np.asarray(indices, np.int64).tobytes()).hexdigest()[:16]
    return cache_key({
        "version": COMPONENTS_VERSION, "dataset": cfg.dataset, "variant": getattr(dataset, "variant", None),
        "split": split, "indices": idx, "num_points": cfg.num_points, "data": dataset.fingerprint(),
        "backbone": Path(cfg.backbone).name, "weights": weights_fp,
        "projection": dataclasses.asdict(get_preset(cfg.projection)), "normalize_images": cfg.normalize_images,
        "templates": list(cfg.templates), "classes": list(dataset.classes), "alpha": cfg.alpha,
    })


def dataset_components(
    cfg: EvalConfig, model: EvalModel, dataset, split: str, indices: Optional[np.ndarray] = None
) -> Tuple[torch.Tensor, np.ndarray, bool]:
    """``(components (B, V, 3, K), labels (B,), from_cache)`` of a dataset (subset)."""
    points = dataset.points if indices is None else dataset.points[indices]
    labels = dataset.labels if indices is None else dataset.labels[indices]
    cache = ComponentCache(cfg.cache_dir)
    key = components_key(cfg, dataset, split, indices, model.encoder.info.fingerprint)
    if cfg.use_cache:
        hit = cache.load(key)
        if hit is not None and np.array_equal(hit["labels"], labels):
            return torch.from_numpy(hit["components"]), labels, True
    comps = model.engine.components_of_array(points, model.text, cfg.batch_size, cfg.progress, desc=f"encoding {split}")
    if cfg.use_cache:
        cache.save(key, {"components": comps.numpy(), "labels": labels}, meta={"split": split, "n": len(labels)})
    return comps, labels, False


def select(cfg: EvalConfig, test_comps: torch.Tensor, test_labels: np.ndarray, val: Optional[Tuple[torch.Tensor, np.ndarray]]) -> Selection:
    """Hyper-parameters per ``cfg.search``."""
    weights = cfg.resolved_view_weights()
    b2, b3 = cfg.effective_betas()
    if cfg.search == "none":
        return Selection(weights, b2, b3, "config")
    comps, labels, split = (val[0], val[1], "val") if cfg.search == "val" else (test_comps, test_labels, "test")
    res = run_search(comps, torch.from_numpy(labels), cfg.method, weights, b2, b3, split,
                     cfg.view_weight_grid, cfg.beta2_range, cfg.beta3_range, cfg.beta_steps)
    how = (f"search on a held-out {cfg.val_fraction:.0%} of the training split ({res.num_samples} clouds)"
           if split == "val" else ORACLE_LABEL)
    return Selection(res.view_weights, res.beta2, res.beta3, how, res)


def write_outputs(
    out_dir: Path,
    classes: Sequence[str],
    labels: np.ndarray,
    logits: np.ndarray,
    components: np.ndarray,
    selection: Selection,
    results: Dict[str, Any],
    title: str,
) -> Dict[str, Any]:
    """Metrics + the three output files; returns the full results mapping."""
    metrics = classification_metrics(logits, labels, classes)
    confusion = metrics.pop("confusion")
    results = {**results, "metrics": metrics, "selection": selection.to_dict(), "versions": package_versions()}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "predictions.npz", labels, logits, components, selection.view_weights,
                      (selection.beta2, selection.beta3))
    plot_confusion(out_dir / "confusion.png", confusion, classes, title)
    write_json(out_dir / "results.json", results)
    return results


def run_eval(cfg: EvalConfig) -> Dict[str, Any]:
    """Evaluate per ``cfg``; writes ``cfg.output``/{results.json,predictions.npz,confusion.png}."""
    from pointcalip.data import build_dataset

    t_start = time.perf_counter()
    test = build_dataset(cfg.dataset, cfg.data_root, cfg.split, num_points=cfg.num_points, variant=cfg.variant)
    model = EvalModel(cfg, test.classes)
    t0 = time.perf_counter()
    comps, labels, cached = dataset_components(cfg, model, test, cfg.split)
    t_encode = time.perf_counter() - t0
    val = None
    if cfg.search == "val":
        train = build_dataset(cfg.dataset, cfg.data_root, "train", num_points=cfg.num_points, variant=cfg.variant)
        idx = stratified_holdout(train.labels, cfg.val_fraction, cfg.seed)
        val_comps, val_labels, _ = dataset_components(cfg, model, train, "train", idx)
        val = (val_comps, val_labels)
    t0 = time.perf_counter()
    selection = select(cfg, comps, labels, val)
    t_search = time.perf_counter() - t0
    logits = logits_from_components(comps, selection.view_weights, selection.beta2, selection.beta3).numpy()
    results: Dict[str, Any] = {
        "config": cfg.to_dict(),
        "dataset": {"name": cfg.dataset, "variant": getattr(test, "variant", None), "split": cfg.split,
                    "num_samples": int(len(labels)), "classes": list(test.classes)},
        "weights": dataclasses.asdict(model.encoder.info),
        "oracle": cfg.search == "test",
        "timings": {"load_model_s": model.seconds_load, "encode_s": t_encode, "components_from_cache": cached,
                    "search_s": t_search, "total_s": time.perf_counter() - t_start},
    }
    tag = f" [{ORACLE_LABEL}]" if cfg.search == "test" else ""
    title = f"{cfg.dataset} {cfg.split} · {Path(cfg.backbone).name} · {cfg.method}{tag}"
    return write_outputs(Path(cfg.output), test.classes, labels, logits, comps.numpy(), selection, results, title)


def format_summary(results: Dict[str, Any]) -> str:
    """The short table printed after an evaluation."""
    m, s, c = results["metrics"], results["selection"], results["config"]
    rows: List[Tuple[str, str]] = [
        ("dataset", f"{c['dataset']} ({results['dataset']['split']}, {m['num_samples']} clouds)"),
        ("model", f"{Path(c['backbone']).name} / {Path(c['pretrained']).name} · {c['method']}"),
        ("top-1", f"{m['top1']:.2f} %"),
        ("top-5", f"{m['top5']:.2f} %"),
        ("mean class acc", f"{m['mean_class_accuracy']:.2f} %"),
        ("beta2, beta3", f"{s['beta2']:.4g}, {s['beta3']:.4g}"),
        ("view weights", ", ".join(f"{w:g}" for w in s["view_weights"])),
        ("selected by", s["selected_by"]),
    ]
    return summary_table(rows)
