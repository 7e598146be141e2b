"""Saved few-shot heads: files, predictions, and ``pointcalip eval --head`` (docs/method.md §6).

A head file is a safetensors file (``best.safetensors`` / ``last.safetensors``) holding the
head's state dict (parameters, BatchNorm statistics, the class text ``(K, D)`` and ``s``);
its JSON config (head type, dims, V, K, classes, backbone, weights fingerprint, projection,
templates, dataset, shots, seed, epoch, ...) is stored both as the safetensors metadata
entry ``pointcalip`` and as a sidecar ``<name>.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from pointcalip.atomic import atomic_open
from pointcalip.encoders import CLIPEncoder, DenseFeatures
from pointcalip.engine import ZeroShotEngine, point_batches
from pointcalip.errors import ConfigError, WeightsError
from pointcalip.fewshot.heads import FewShotHead
from pointcalip.projection import Projection, get_projection, projection_from_dict
from pointcalip.report import write_json

HEAD_FORMAT = "pointcalip-fewshot-head-v1"
META_KEY = "pointcalip"


def sidecar_path(path: Path) -> Path:
    """``DIR/best.safetensors`` -> ``DIR/best.json``."""
    return Path(path).with_suffix(".json")


def save_head(path: Path, head: FewShotHead, meta: Mapping[str, Any]) -> None:
    """Write the head's state dict and ``meta`` (safetensors metadata + sidecar JSON), atomically."""
    from safetensors.torch import save

    meta = {"format": HEAD_FORMAT, **meta}
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    blob = save(tensors, metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    with atomic_open(path, "wb") as f:
        f.write(blob)
    write_json(sidecar_path(path), meta)


def read_head_file(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """``(state dict, meta)`` of a head file; ``ConfigError`` when it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: head file not found (a best.safetensors written by `pointcalip fewshot`)")
    try:
        data = p.read_bytes()
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get(META_KEY, "null"))
    except (SafetensorError, ValueError, OSError) as exc:
        raise ConfigError(f"{path}: not a readable safetensors head file ({str(exc).splitlines()[0][:200]})") from exc
    if not isinstance(meta, dict) or meta.get("format") != HEAD_FORMAT:
        raise ConfigError(f"{path}: not a pointcalip few-shot head (no {HEAD_FORMAT!r} metadata)")
    return tensors, meta


def build_head(meta: Mapping[str, Any], text: torch.Tensor, logit_scale: float) -> FewShotHead:
    """A fresh head as described by ``meta`` (see :func:`head_meta`)."""
    return FewShotHead(meta["head"], text, logit_scale, int(meta["num_views"]), alpha=float(meta["alpha"]),
                       beta2=float(meta["beta2_init"]), beta3=float(meta["beta3_init"]),
                       dropout=float(meta["dropout"]), fusion_init=float(meta["fusion_init"]),
                       view_ratio=float(meta["view_ratio"]))


def head_from_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                    device: torch.device | str = "cpu") -> FewShotHead:
    """The head described by ``meta`` with the saved ``tensors`` (eval mode, on ``device``)."""
    head = build_head(meta, tensors["text"], float(tensors["logit_scale"]))
    head.load_state_dict(tensors, strict=True)
    return head.to(device).eval()


def load_head(path: str, device: torch.device | str = "cpu") -> Tuple[FewShotHead, Dict[str, Any]]:
    """The head saved at ``path`` (in eval mode, on ``device``) and its meta."""
    tensors, meta = read_head_file(path)
    return head_from_state(tensors, meta, device), meta


def projection_of(meta: Mapping[str, Any]) -> Projection:
    """The projection a head was trained with."""
    pc = meta.get("projection_config")
    return projection_from_dict(pc) if pc else get_projection(meta["projection"])


def encode_batches(engine: ZeroShotEngine, points: np.ndarray, batch_size: int, keep_spatial: bool = True,
                   progress: bool = False, desc: str = "encoding") -> DenseFeatures:
    """Features of ``points: (B, N, 3)`` on the CPU, no augmentation.

    ``global_, global_raw: (B, V, D)``; ``spatial: (B, V, L, D)`` or ``None`` when not kept.
    """
    g, s, r = [], [], []
    for batch in point_batches(points, batch_size, progress, desc):
        f = engine.forward_features(batch)
        g.append(f.global_.cpu())
        r.append(f.global_raw.cpu())
        if keep_spatial:
            s.append(f.spatial.cpu())
    return DenseFeatures(torch.cat(g), torch.cat(s) if keep_spatial else None, torch.cat(r))


def to_device(features: DenseFeatures, index: Optional[torch.Tensor], device: torch.device) -> DenseFeatures:
    """Rows ``index`` (all when ``None``) of stored features, on ``device``."""
    def take(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if t is None:
            return None
        return (t if index is None else t[index]).to(device)

    return DenseFeatures(take(features.global_), take(features.spatial), take(features.global_raw))


@torch.no_grad()
def head_logits(head: FewShotHead, features: DenseFeatures, batch_size: int = 256) -> torch.Tensor:
    """Eval-mode logits ``(B, K)`` (CPU) of stored features."""
    head.eval()
    device = head.text.device
    n = features.global_.shape[0]
    out = [head(to_device(features, torch.arange(i, min(n, i + batch_size)), device)).cpu()
           for i in range(0, n, batch_size)]
    return torch.cat(out) if out else torch.zeros(0, head.num_classes)


@torch.no_grad()
def predict(head: FewShotHead, engine: ZeroShotEngine, points: np.ndarray, batch_size: int,
            progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Test-time ``(logits (B, K), zero-shot components (B, V, 3, K))`` of ``points: (B, N, 3)``.

    The components are the frozen CALIP components of the same features (for
    ``predictions.npz``); the logits are the head's.
    """
    head.eval()
    logits, comps = [], []
    for batch in point_batches(points, batch_size, progress, desc="testing"):
        f = engine.forward_features(batch)
        logits.append(head(f).cpu())
        comps.append(engine.forward_head(f, head.text).cpu())
    k, v = head.num_classes, head.num_views
    if not logits:
        return np.zeros((0, k), np.float32), np.zeros((0, v, 3, k), np.float32)
    return torch.cat(logits).numpy(), torch.cat(comps).numpy()


def check_weights(encoder: CLIPEncoder, meta: Mapping[str, Any], path: str) -> None:
    """``WeightsError`` unless ``encoder`` has the weights the head was trained on."""
    want, got = meta.get("weights_fingerprint"), encoder.info.fingerprint
    if want != got:
        raise WeightsError(
            f"{path} was trained on backbone {Path(str(meta.get('backbone'))).name} / "
            f"{Path(str(meta.get('pretrained'))).name} (weights fingerprint {want}) but --backbone/--pretrained "
            f"load {Path(encoder.info.backbone).name} / {Path(encoder.info.pretrained).name} (fingerprint {got}); "
            f"pass the weights the head was trained with")
    if int(meta["dim"]) != encoder.embed_dim:
        raise WeightsError(f"{path}: head width D = {meta['dim']} but the encoder gives D = {encoder.embed_dim}")


def head_selection(head: FewShotHead, meta: Mapping[str, Any], path: str):
    """The :class:`~pointcalip.evaluate.Selection` reported for a head (betas: CALIP-FS's learned ones)."""
    from pointcalip.evaluate import Selection

    b = head.betas() or {"beta2": float(meta["beta2_init"]), "beta3": float(meta["beta3_init"])}
    how = (f"trained few-shot head '{meta['head']}' ({meta['shots']}-shot, seed {meta['seed']}, "
           f"epoch {meta['epoch']}, {Path(path).name})")
    return Selection((1.0,) * head.num_views, b["beta2"], b["beta3"], how)


def write_head_results(out_dir: Path, head: FewShotHead, meta: Mapping[str, Any], head_path: str,
                       dataset, split: str, logits: np.ndarray, comps: np.ndarray, config: Mapping[str, Any],
                       encoder: CLIPEncoder, timings: Mapping[str, Any]) -> Dict[str, Any]:
    """``results.json``, ``predictions.npz``, ``confusion.png`` exactly as ``eval`` writes them."""
    from pointcalip.evaluate import write_outputs

    results: Dict[str, Any] = {
        "config": {**config, "method": f"fewshot-{meta['head']}"},
        "dataset": {"name": dataset.name, "variant": dataset.variant,
                    "split": split, "num_samples": int(len(dataset)), "classes": list(dataset.classes)},
        "weights": dataclasses.asdict(encoder.info),
        "oracle": False,
        "head": {"path": str(head_path), **{k: meta[k] for k in ("head", "shots", "seed", "epoch", "val_accuracy")}},
        "timings": dict(timings),
    }
    title = f"{dataset.name} {split} · {Path(str(meta['backbone'])).name} · {meta['head']} {meta['shots']}-shot"
    return write_outputs(out_dir, dataset.classes, dataset.labels, logits, comps, head_selection(head, meta, head_path),
                         results, title)


def _dataset_for_head(cfg, meta: Mapping[str, Any]):
    from pointcalip.datasets import build_dataset, get_dataset_info

    variant = cfg.variant if cfg.variant is not None or cfg.dataset != meta["dataset"] else meta.get("variant")
    variant = variant if get_dataset_info(cfg.dataset).variants else None
    ds = build_dataset(cfg.dataset, cfg.data_root, cfg.split, num_points=int(meta["num_points"]), variant=variant)
    if list(ds.classes) != list(meta["classes"]):
        raise ConfigError(f"{cfg.head} was trained on {meta['dataset']} ({len(meta['classes'])} classes) but "
                          f"--dataset {cfg.dataset} has {len(ds.classes)} other classes; pass --dataset {meta['dataset']}")
    return ds


def run_head_eval(cfg) -> Optional[Dict[str, Any]]:
    """``pointcalip eval --head FILE``: evaluate a trained head on ``cfg``'s dataset split.

    Projection, templates/classes (the stored text), alpha, image normalisation and
    ``num_points`` come from the head file; dataset, split, data root, weights, device,
    batch size and output come from ``cfg`` (an :class:`~pointcalip.config.EvalConfig`).
    Under ``torchrun`` each rank tests its whole batches of the split; rank 0 gathers, writes
    and returns the results, the others return ``None`` (docs/method.md §10).
    """
    from pointcalip import distributed

    return distributed.on_ranks(cfg, _run_head_eval_ranked)


def _run_head_eval_ranked(cfg) -> Optional[Dict[str, Any]]:
    from pointcalip import distributed
    from pointcalip.engine import build_engine

    t_start = time.perf_counter()
    tensors, meta = read_head_file(cfg.head)
    dataset = _dataset_for_head(cfg, meta)
    t0 = time.perf_counter()
    engine = build_engine(cfg.backbone, cfg.pretrained, projection_of(meta), cfg.device,
                          normalize_images=bool(meta["normalize_images"]), alpha=float(meta["alpha"]),
                          runtime=cfg.runtime, precision=cfg.precision)
    encoder = engine.encoder
    t_load = time.perf_counter() - t0
    check_weights(encoder, meta, cfg.head)
    head = head_from_state(tensors, meta, encoder.device)
    t0 = time.perf_counter()
    a, b = distributed.batch_aligned_shard(len(dataset), cfg.batch_size, distributed.world_size(), distributed.rank())
    logits, comps = predict(head, engine, dataset.points_of(np.arange(a, b)), cfg.batch_size, cfg.progress)
    if distributed.is_distributed():
        logits_t = distributed.gather_rows(torch.from_numpy(logits))
        comps_t = distributed.gather_rows(torch.from_numpy(comps))
        if not distributed.is_main():
            return None
        logits, comps = logits_t.numpy(), comps_t.numpy()
    config = {**cfg.to_dict(), "projection": meta["projection"], "templates": meta["templates"],
              "alpha": meta["alpha"], "normalize_images": meta["normalize_images"], "num_points": meta["num_points"]}
    timings = {"load_model_s": t_load, "encode_s": time.perf_counter() - t0, "components_from_cache": False,
               "total_s": time.perf_counter() - t_start}
    return write_head_results(Path(cfg.output), head, meta, cfg.head, dataset, cfg.split, logits, comps, config,
                              encoder, timings)
