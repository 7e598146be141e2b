"""Few-shot training of a head on frozen CLIP view features (docs/method.md §6), with exact resume.

Symbols: ``B`` clouds, ``N`` points, ``V`` views, ``L`` tokens, ``D`` width, ``K`` classes.

Run folder ``DIR`` (``cfg.output``)::

    kshot_indices.json      K-shot and validation indices, K, seed, dataset + fingerprint
    log.csv                 epoch, lr, loss, train_acc, val_acc, seconds (one row per epoch)
    best.safetensors/.json  head with the best validation accuracy (+ its JSON config)
    last.safetensors/.json  head after the last finished epoch
    state.pt                optimizer, schedule, epoch, RNG, log: what a resumed run needs
    results.json, predictions.npz, confusion.png    test evaluation of best.safetensors

Determinism: every epoch reseeds its own generator (batch order, augmentation) and torch's
global RNG (dropout) from ``(seed, epoch)``, so a run resumed from ``state.pt`` ends
bit-identical to an uninterrupted one on the CPU.

Several processes (``torchrun``, docs/method.md §10): the head is wrapped in
``DistributedDataParallel`` and its BatchNorms are synchronised; every rank draws the same
batches and takes a contiguous part of each, the per-rank losses are scaled so that the
averaged gradient is the gradient of the whole batch's mean loss, and rank 0 alone writes
files. Encoding (cached features, the test set) is shared out by whole batches.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from pointcalip import distributed
from pointcalip.aggregation import accuracy
from pointcalip.atomic import atomic_open
from pointcalip.cache import ComponentCache, cache_key
from pointcalip.encoders import CLIPEncoder, DenseFeatures
from pointcalip.engine import ZeroShotEngine, engine_from_config
from pointcalip.errors import ConfigError, PointcalipError
from pointcalip.fewshot.config import FewShotConfig
from pointcalip.fewshot.evaluate import (
    build_head, encode_batches, head_from_state, head_logits, predict, read_head_file, save_head, to_device,
    write_head_results,
)
from pointcalip.fewshot.heads import FewShotHead, sync_batchnorm
from pointcalip.report import write_json
from pointcalip.datasets.splits import kshot_indices, short_classes

LOG_FIELDS = ("epoch", "lr", "loss", "train_acc", "val_acc", "seconds")
STATE_VERSION = 1
_VAL_SEED_OFFSET = 1_000_003


class TrainingError(PointcalipError):
    """Training cannot go on (a non-finite loss)."""


# --------------------------------------------------------------------------- recipe pieces


def smooth_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, epsilon: float = 0.2,
                         reduction: str = "mean") -> torch.Tensor:
    """Label-smoothing cross-entropy, mean (or ``reduction="sum"``) over ``B``.

    The target puts ``1 - epsilon`` on the true class and ``epsilon / (K - 1)`` on each of
    the other ``K - 1`` classes (PointCLIP's; ``torch``'s ``label_smoothing`` spreads
    ``epsilon`` over all ``K``). ``logits: (B, K)``, ``labels: (B,)`` -> scalar.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")
    k = logits.shape[-1]
    if k < 2:
        raise ValueError("label smoothing needs K >= 2 classes")
    target = torch.full_like(logits, epsilon / (k - 1))
    target.scatter_(1, labels.view(-1, 1).to(logits.device), 1.0 - epsilon)
    per_cloud = -(target * logits.log_softmax(dim=-1)).sum(dim=-1)
    return per_cloud.mean() if reduction == "mean" else per_cloud.sum()


def augment_points(points: torch.Tensor, generator: torch.Generator, scale: Tuple[float, float] = (2 / 3, 3 / 2),
                   shift: float = 0.2, shuffle: bool = True) -> torch.Tensor:
    """Train-time augmentation of ``points: (B, N, 3)``: per-cloud per-axis scale ``U(scale)``,
    shift ``U(-shift, shift)``, and a random point order; same shape out."""
    b, n, _ = points.shape
    s = torch.empty(b, 1, 3).uniform_(scale[0], scale[1], generator=generator)
    t = torch.empty(b, 1, 3).uniform_(-shift, shift, generator=generator)
    out = points * s + t
    if shuffle:
        order = torch.rand(b, n, generator=generator).argsort(dim=1)
        out = torch.gather(out, 1, order.unsqueeze(-1).expand(b, n, 3))
    return out


def learning_rate(epoch: int, cfg: FewShotConfig) -> float:
    """Learning rate of 0-based ``epoch``: ``warmup_lr`` for the warm-up epochs, then cosine
    from ``lr`` (first epoch after warm-up) towards 0 over the remaining epochs."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr
    t = (epoch - cfg.warmup_epochs) / max(1, cfg.epochs - cfg.warmup_epochs)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * t))


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of 0-based ``epoch`` of a run seeded ``seed``."""
    return (int(seed) * 100_003 + int(epoch) * 7_919 + 17) % (2**63 - 1)


def batch_order(n: int, batch_size: int, generator: torch.Generator) -> List[torch.Tensor]:
    """Shuffled index batches of ``range(n)``; a last batch of one cloud joins the one before
    (BatchNorm needs two samples)."""
    order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] = torch.cat([batches[-2], batches.pop()])
    return batches


# --------------------------------------------------------------------------- data


@dataclass
class Prepared:
    """Everything fixed before the first epoch."""

    cfg: FewShotConfig
    encoder: CLIPEncoder
    engine: ZeroShotEngine
    text: torch.Tensor  # (K, D)
    train: Any  # PointCloudDataset (full training split)
    test: Any
    kshot: np.ndarray  # (M,) indices into train
    val: np.ndarray  # (M_val,) indices into train
    train_labels: torch.Tensor  # (M,)
    val_labels: torch.Tensor
    train_features: Optional[DenseFeatures]  # cached K-shot features (CPU) or None
    val_features: Optional[DenseFeatures]
    seconds_load: float
    seconds_encode: float


def sample_sets(cfg: FewShotConfig, train) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """``(kshot, val, record)``: the K-shot indices, the validation indices (from the rest of
    the training split) and the ``kshot_indices.json`` record."""
    k = len(train.classes)
    kshot = kshot_indices(train.labels, cfg.shots, cfg.seed)
    val = kshot_indices(train.labels, cfg.val_per_class, cfg.seed + _VAL_SEED_OFFSET, exclude=kshot)
    short = short_classes(train.labels, kshot, cfg.shots, k)
    if short and distributed.is_main():
        names = ", ".join(f"{train.classes[c]} ({n})" for c, n in short.items())
        print(f"pointcalip fewshot: note: {len(short)} class(es) have fewer than {cfg.shots} training clouds, "
              f"all of them are used: {names}", file=sys.stderr)
    record = {
        "dataset": cfg.dataset, "variant": getattr(train, "variant", None), "split": "train",
        "fingerprint": train.fingerprint(), "num_points": cfg.num_points, "shots": cfg.shots, "seed": cfg.seed,
        "indices": kshot.tolist(), "per_class": np.bincount(train.labels[kshot], minlength=k).tolist(),
        "short_classes": {train.classes[c]: n for c, n in short.items()},
        "val_per_class": cfg.val_per_class, "val_indices": val.tolist(), "classes": list(train.classes),
    }
    return kshot, val, record


def _features(cfg: FewShotConfig, engine: ZeroShotEngine, ds, indices: np.ndarray, keep_spatial: bool,
              desc: str) -> DenseFeatures:
    """Un-augmented features of ``ds.points_of(indices)``, from/to ``cfg.feature_cache_dir`` when set."""
    key = None
    if cfg.feature_cache_dir:
        key = "fs-" + cache_key({
            "v": 1, "data": ds.fingerprint(), "indices": hashlib.sha256(indices.astype(np.int64).tobytes()).hexdigest(),
            "weights": engine.encoder.info.fingerprint, "projection": engine.projection.to_dict(),
            "normalize": cfg.normalize_images, "spatial": keep_spatial})
        hit = ComponentCache(cfg.feature_cache_dir).load(key)
        hit = hit if distributed.all_true(hit is not None) else None
        if hit is not None:
            return DenseFeatures(torch.from_numpy(hit["global_"]),
                                 torch.from_numpy(hit["spatial"]) if keep_spatial else None,
                                 torch.from_numpy(hit["global_raw"]))
    feats = _encode_shared(engine, ds, indices, cfg.encode_batch_size, keep_spatial, cfg.progress, desc)
    if key is not None and distributed.is_main():
        arrays = {"global_": feats.global_.numpy(), "global_raw": feats.global_raw.numpy()}
        if keep_spatial:
            arrays["spatial"] = feats.spatial.numpy()
        ComponentCache(cfg.feature_cache_dir).save(key, arrays, meta={"desc": desc, "n": len(indices)})
    return feats


def _encode_shared(engine: ZeroShotEngine, ds: Any, indices: np.ndarray, batch_size: int, keep_spatial: bool,
                   progress: bool, desc: str) -> DenseFeatures:
    """:func:`encode_batches` of ``ds.points_of(indices)``; under ``torchrun`` each rank encodes a
    run of whole batches and every rank receives all rows (the same batches as one process)."""
    if not distributed.is_distributed():
        return encode_batches(engine, ds.points_of(indices), batch_size, keep_spatial, progress, desc)
    a, b = distributed.batch_aligned_shard(len(indices), batch_size, distributed.world_size(), distributed.rank())
    if b > a:
        f = encode_batches(engine, ds.points_of(indices[a:b]), batch_size, keep_spatial,
                           progress and distributed.is_main(), desc)
    else:  # more ranks than batches: an empty part (its trailing shape comes from the others)
        f = DenseFeatures(torch.zeros(0, 0, 0), torch.zeros(0, 0, 0, 0) if keep_spatial else None, torch.zeros(0, 0, 0))
    return DenseFeatures(distributed.all_gather_rows(f.global_),
                         distributed.all_gather_rows(f.spatial) if keep_spatial else None,
                         distributed.all_gather_rows(f.global_raw))


def prepare(cfg: FewShotConfig) -> Tuple[Prepared, Dict[str, Any]]:
    """Load data and encoder, draw the K-shot/validation sets, encode what is cached."""
    from pointcalip.datasets import build_dataset
    train = build_dataset(cfg.dataset, cfg.data_root, "train", num_points=cfg.num_points, variant=cfg.variant)
    test = build_dataset(cfg.dataset, cfg.data_root, "test", num_points=cfg.num_points, variant=cfg.variant)
    kshot, val, record = sample_sets(cfg, train)
    t0 = time.perf_counter()
    engine = engine_from_config(cfg)
    encoder = engine.encoder
    t_load = time.perf_counter() - t0
    text = engine.text_features(train.classes, cfg.templates)
    spatial = cfg.head in ("calip_fs", "both")
    t0 = time.perf_counter()
    train_feats = _features(cfg, engine, train, kshot, spatial, "encoding K-shot set") if cfg.cache_features else None
    val_feats = _features(cfg, engine, train, val, spatial, "encoding validation set") if len(val) else None
    prep = Prepared(cfg, encoder, engine, text, train, test, kshot, val,
                    torch.from_numpy(train.labels[kshot]), torch.from_numpy(train.labels[val]),
                    train_feats, val_feats, t_load, time.perf_counter() - t0)
    return prep, record


# --------------------------------------------------------------------------- heads and files


def new_head(cfg: FewShotConfig, prep: Prepared) -> FewShotHead:
    """A freshly initialised head (seeded by ``cfg.seed``) on the encoder's device."""
    torch.manual_seed(cfg.seed)
    meta = head_meta(cfg, prep, epoch=0, val_acc=None)
    return build_head(meta, prep.text, prep.encoder.logit_scale).to(prep.encoder.device)


def head_meta(cfg: FewShotConfig, prep: Prepared, epoch: int, val_acc: Optional[float]) -> Dict[str, Any]:
    """The JSON config stored with a head file."""
    proj = prep.engine.projection
    return {
        "head": cfg.head, "dim": int(prep.text.shape[1]), "num_views": proj.num_views,
        "num_classes": len(prep.train.classes), "classes": list(prep.train.classes),
        "backbone": cfg.backbone, "pretrained": cfg.pretrained, "weights_fingerprint": prep.encoder.info.fingerprint,
        "logit_scale": prep.encoder.logit_scale, "projection": cfg.projection,
        "projection_config": proj.to_dict(),
        "normalize_images": cfg.normalize_images, "templates": list(cfg.templates), "alpha": cfg.alpha,
        "beta2_init": cfg.beta2, "beta3_init": cfg.beta3, "dropout": cfg.dropout, "fusion_init": cfg.fusion_init,
        "view_ratio": cfg.view_ratio, "dataset": cfg.dataset, "variant": getattr(prep.train, "variant", None),
        "num_points": cfg.num_points, "data_fingerprint": prep.train.fingerprint(), "shots": cfg.shots,
        "seed": cfg.seed, "epoch": epoch, "val_accuracy": val_acc,
    }


def write_log(path: Path, rows: List[Dict[str, Any]]) -> None:
    """``log.csv`` with :data:`LOG_FIELDS` columns (``val_acc`` empty without a validation set)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r[k] is None else r[k]) for k in LOG_FIELDS})
    with atomic_open(path, "w") as f:
        f.write(buf.getvalue())


def _save_state(path: Path, state: Dict[str, Any]) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def _load_state(path: Path, cfg: FewShotConfig, prep: Prepared) -> Dict[str, Any]:
    """The resume state in ``path``; ``ConfigError`` when it belongs to another run."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt pickles raise many types
        raise ConfigError(f"{path}: unreadable resume state ({exc}); use --restart to start over") from exc
    want = cfg.resume_view()
    diff = sorted(k for k in want if state.get("config", {}).get(k) != want[k])
    if state.get("version") != STATE_VERSION or diff:
        raise ConfigError(f"{path.parent} holds a run with other settings ({', '.join(diff) or 'version'}); "
                          f"use another --output or --restart")
    same = (state["data_fingerprint"] == prep.train.fingerprint()
            and state["weights_fingerprint"] == prep.encoder.info.fingerprint
            and state["kshot"] == prep.kshot.tolist())
    if not same:
        raise ConfigError(f"{path.parent} was trained on other data or weights; use another --output or --restart")
    return state


# --------------------------------------------------------------------------- training


def _batch_features(prep: Prepared, idx: torch.Tensor, generator: torch.Generator,
                    pos: Optional[torch.Tensor] = None) -> DenseFeatures:
    """Features of the K-shot clouds ``idx`` (positions ``pos`` of the batch only, when given):
    cached rows, or augmented clouds encoded now. The whole batch is augmented either way,
    so the random draws do not depend on the part a rank takes."""
    device = prep.encoder.device
    if prep.train_features is not None:
        return to_device(prep.train_features, idx if pos is None else idx[pos], device)
    cfg = prep.cfg
    pts = torch.from_numpy(prep.train.points_of(prep.kshot[idx.numpy()]))
    pts = augment_points(pts, generator, cfg.aug_scale, cfg.aug_shift, cfg.shuffle_points)
    if pos is None:
        return prep.engine.forward_features(pts)  # no_grad: the encoder is frozen
    if len(pos) == 0:  # an empty part: encode one cloud for the shapes, keep none
        f = prep.engine.forward_features(pts[:1])
        return DenseFeatures(f.global_[:0], f.spatial[:0], f.global_raw[:0])
    return prep.engine.forward_features(pts[pos])


def train_epoch(head: FewShotHead, optimizer: torch.optim.Optimizer, prep: Prepared, epoch: int,
                model: Optional[torch.nn.Module] = None) -> Tuple[float, float]:
    """One epoch over the K-shot set; returns ``(mean loss, train accuracy %)`` over all ranks.

    ``model`` is ``head`` wrapped in ``DistributedDataParallel`` under ``torchrun`` (then this
    rank computes the contiguous part ``rank`` of ``world`` parts of each batch and its loss
    is ``world * (sum of its clouds' losses) / (clouds in the batch)``, so the averaged
    gradient is that of the batch mean); ``None`` = ``head`` in one process.
    """
    model = head if model is None else model
    world, me = distributed.world_size(), distributed.rank()
    cfg = prep.cfg
    generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    torch.manual_seed(epoch_seed(cfg.seed, epoch) + 1)  # dropout
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(epoch, cfg)
    head.train()
    total, correct, seen = 0.0, 0, 0
    batches = batch_order(len(prep.kshot), cfg.batch_size, generator)
    show = cfg.progress and prep.train_features is None
    for idx in tqdm(batches, desc=f"epoch {epoch + 1}", unit="batch", leave=False,
                    disable=not show or not distributed.is_main()):
        if world == 1:
            feats = _batch_features(prep, idx, generator)
            labels = prep.train_labels[idx].to(head.text.device)
            logits = model(feats)
            loss = smooth_cross_entropy(logits, labels, cfg.label_smoothing)
            batch_loss, batch_correct = float(loss.detach()), int((logits.detach().argmax(-1) == labels).sum())
        else:
            pos = torch.arange(len(idx)).tensor_split(world)[me]
            feats = _batch_features(prep, idx, generator, pos)
            labels = prep.train_labels[idx[pos]].to(head.text.device)
            logits = model(feats)
            loss_sum = smooth_cross_entropy(logits, labels, cfg.label_smoothing, reduction="sum")
            loss = loss_sum * (world / len(idx))
            tot, batch_correct = distributed.all_reduce_sum(
                [float(loss_sum.detach()), int((logits.detach().argmax(-1) == labels).sum())])
            batch_loss, batch_correct = tot / len(idx), int(batch_correct)
        if not math.isfinite(batch_loss):  # the same value on every rank: all stop together
            raise TrainingError(f"training diverged in epoch {epoch + 1} (loss {batch_loss}); lower --lr "
                                f"(now {cfg.lr}) or use --head adapter")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += batch_loss * len(idx)
        correct += batch_correct
        seen += len(idx)
    return total / max(1, seen), 100.0 * correct / max(1, seen)


def accuracy_on(head: FewShotHead, features: Optional[DenseFeatures], labels: torch.Tensor) -> Optional[float]:
    """Eval-mode accuracy (%) on stored features, ``None`` without features."""
    if features is None or len(labels) == 0:
        return None
    return 100.0 * accuracy(head_logits(head, features), labels)


def make_optimizer(head: FewShotHead, cfg: FewShotConfig) -> torch.optim.SGD:
    """SGD with momentum and weight decay on the head's parameters only."""
    return torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


EpochCallback = Callable[[int, Dict[str, Any]], None]


def fit(prep: Prepared, out: Path, restart: bool = False, on_epoch_end: Optional[EpochCallback] = None) -> Dict[str, Any]:
    """Train (or resume) the head in ``out``; returns the training summary.

    ``on_epoch_end(epoch, row)`` runs after every epoch's files are written (1-based epoch).
    """
    cfg = prep.cfg
    head = new_head(cfg, prep)
    model: torch.nn.Module = head
    if distributed.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        head = sync_batchnorm(head, prep.encoder.device)
        dev = torch.device(prep.encoder.device)
        model = DistributedDataParallel(head, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = make_optimizer(head, cfg)
    state_path = out / "state.pt"
    main = distributed.is_main()
    start, best, rows = 0, {"epoch": 0, "val_acc": None}, []
    state, error = None, None
    if main and state_path.is_file() and not restart:  # rank 0 reads state.pt and hands it to the others
        try:
            state = _load_state(state_path, cfg, prep)
        except ConfigError as exc:
            error = str(exc)
    state, error = distributed.broadcast_object((state, error))
    if error is not None:
        raise ConfigError(error)
    if state is not None:
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        start, best, rows = int(state["epoch"]), dict(state["best"]), list(state["log"])
    epochs = tqdm(range(start, cfg.epochs), initial=start, total=cfg.epochs, unit="epoch",
                  desc=f"{cfg.head} {cfg.shots}-shot", disable=not cfg.progress or not main)
    for epoch in epochs:
        t0 = time.perf_counter()
        loss, train_acc = train_epoch(head, optimizer, prep, epoch, model)
        val_acc = accuracy_on(head, prep.val_features, prep.val_labels)
        row = {"epoch": epoch + 1, "lr": learning_rate(epoch, cfg), "loss": loss, "train_acc": train_acc,
               "val_acc": val_acc, "seconds": time.perf_counter() - t0}
        rows.append(row)
        meta = head_meta(cfg, prep, epoch + 1, val_acc)
        improved = val_acc is None or best["val_acc"] is None or val_acc > best["val_acc"]
        if improved:
            best = {"epoch": epoch + 1, "val_acc": val_acc}
        if not main:
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, row)
            continue
        save_head(out / "last.safetensors", head, meta)
        if improved:
            save_head(out / "best.safetensors", head, meta)
        write_log(out / "log.csv", rows)
        _save_state(state_path, {
            "version": STATE_VERSION, "epoch": epoch + 1, "head": head.state_dict(),
            "optimizer": optimizer.state_dict(), "schedule": {"kind": "constant-warmup+cosine", "next_epoch": epoch + 1,
                                                              "next_lr": learning_rate(min(epoch + 1, cfg.epochs - 1), cfg)},
            "rng": {"torch": torch.get_rng_state()}, "best": best, "log": rows, "config": cfg.resume_view(),
            "data_fingerprint": prep.train.fingerprint(), "weights_fingerprint": prep.encoder.info.fingerprint,
            "kshot": prep.kshot.tolist(),
        })
        epochs.set_postfix(loss=f"{loss:.3f}", train=f"{train_acc:.1f}", val="-" if val_acc is None else f"{val_acc:.1f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    seconds = sum(r["seconds"] for r in rows)
    return {"epochs": cfg.epochs, "resumed_at_epoch": start, "best_epoch": best["epoch"],
            "best_val_accuracy": best["val_acc"], "last_train_accuracy": rows[-1]["train_acc"] if rows else None,
            "seconds_training": seconds, "seconds_per_epoch": seconds / max(1, len(rows)),
            "clouds_per_second": len(prep.kshot) * len(rows) / seconds if seconds > 0 else None,
            "cache_features": cfg.cache_features, "num_train_clouds": int(len(prep.kshot)),
            "num_val_clouds": int(len(prep.val))}


def run_fewshot(cfg: FewShotConfig, restart: bool = False,
                on_epoch_end: Optional[EpochCallback] = None) -> Optional[Dict[str, Any]]:
    """``pointcalip fewshot``: sample, train (resuming from ``cfg.output``), test ``best.safetensors``.

    Writes every file listed in the module docstring; returns the results mapping
    (``pointcalip.evaluate.run_eval``'s shape plus ``head`` and ``training``). Under
    ``torchrun`` every rank trains its part of each batch on ``cuda:LOCAL_RANK`` (or the
    CPU); rank 0 writes the files and returns the results, the other ranks return ``None``.
    """
    ctx = distributed.setup(cfg.device)
    try:
        if ctx is not None:
            import dataclasses

            cfg = dataclasses.replace(cfg, device=ctx.device)
        return _run_fewshot_ranked(cfg, restart, on_epoch_end)
    finally:
        distributed.teardown(ctx)


def _test_predictions(head: FewShotHead, prep: Prepared) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """``(logits (B, K), components (B, V, 3, K))`` of the test split on rank 0 (``None`` elsewhere);
    each rank predicts a run of whole batches."""
    cfg = prep.cfg
    a, b = distributed.batch_aligned_shard(len(prep.test), cfg.encode_batch_size, distributed.world_size(),
                                           distributed.rank())
    logits, comps = predict(head, prep.engine, prep.test.points_of(np.arange(a, b)), cfg.encode_batch_size,
                            cfg.progress and distributed.is_main())
    logits_all = distributed.gather_rows(torch.from_numpy(logits))
    comps_all = distributed.gather_rows(torch.from_numpy(comps))
    if logits_all is None or comps_all is None:
        return None, None
    return logits_all.numpy(), comps_all.numpy()


def _run_fewshot_ranked(cfg: FewShotConfig, restart: bool,
                        on_epoch_end: Optional[EpochCallback]) -> Optional[Dict[str, Any]]:
    """The body of :func:`run_fewshot` once the process group (if any) is running."""
    t_start = time.perf_counter()
    out = Path(cfg.output)
    prep, record = prepare(cfg)
    main = distributed.is_main()
    if main:
        write_json(out / "kshot_indices.json", record)
    summary = fit(prep, out, restart, on_epoch_end)
    best_file = distributed.broadcast_object(read_head_file(str(out / "best.safetensors")) if main else None)
    head, meta = head_from_state(best_file[0], best_file[1], prep.encoder.device), best_file[1]
    t0 = time.perf_counter()
    logits, comps = _test_predictions(head, prep)
    if not main:
        return None
    timings = {"load_model_s": prep.seconds_load, "encode_s": prep.seconds_encode, "test_s": time.perf_counter() - t0,
               "components_from_cache": False, "total_s": time.perf_counter() - t_start}
    results = write_head_results(out, head, meta, str(out / "best.safetensors"), prep.test, "test", logits, comps,
                                 cfg.to_dict(), prep.encoder, timings)
    results["training"] = summary
    write_json(out / "results.json", results)
    return results
