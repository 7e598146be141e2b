"""Classification metrics: top-1/top-5, mean class accuracy, per-class table, confusion (docs/method.md §5).

Symbols: ``B`` clouds, ``K`` classes.

Ties follow ``argmax``: among equal logits the lowest class index ranks first. The *rank* of
the label is ``#{k : s_k > s_label} + #{k < label : s_k == s_label}``; a cloud is top-``n``
correct when that rank is below ``n`` (so with ``K <= n`` every cloud is top-``n`` correct),
and top-1 correct exactly when ``argmax`` is its label. Memory: ``(chunk, K)`` temporaries
and the ``(K, K)`` int64 confusion counts (10 MB at ``K = 1,156``), never a float ``(K, K)``.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

_ROWS_PER_CHUNK_BYTES = 64 * 2 ** 20


def _check(logits: np.ndarray, labels: np.ndarray, k: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or (k is not None and logits.shape[1] != k):
        raise ValueError(f"logits must have shape (B, K){f' with K = {k}' if k is not None else ''}; "
                         f"got {logits.shape}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape (B,) = ({logits.shape[0]},); got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}); got [{labels.min()}, {labels.max()}]")
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or Inf")
    return logits, labels.astype(np.int64)


def label_rank(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank ``(B,)`` int64 of each label among its logits ``(B, K)`` (0 = predicted); ties as argmax."""
    logits, labels = _check(logits, labels)
    b, k = logits.shape
    out = np.empty(b, dtype=np.int64)
    step = max(1, _ROWS_PER_CHUNK_BYTES // max(1, k * 2))
    cls = np.arange(k)
    for s in range(0, b, step):
        x, y = logits[s : s + step], labels[s : s + step]
        own = x[np.arange(len(y)), y][:, None]
        out[s : s + step] = (x > own).sum(1) + ((x == own) & (cls[None, :] < y[:, None])).sum(1)
    return out


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, n: int) -> float:
    """Percent of clouds whose label ranks below ``n`` (see :func:`label_rank`); 0 for ``B = 0``."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    rank = label_rank(logits, labels)
    return 100.0 * float((rank < n).mean()) if rank.size else 0.0


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``(K, K)`` int64: row = true class, column = predicted class."""
    pred, labels = np.asarray(pred, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if pred.shape != labels.shape or pred.ndim != 1:
        raise ValueError(f"pred and labels must both have shape (B,); got {pred.shape} and {labels.shape}")
    flat = np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


class PerClass(NamedTuple):
    """One row of ``per_class.csv``."""

    name: str
    support: int  # true clouds of the class
    correct: int
    accuracy: Optional[float]  # percent; None without support
    predicted: int  # clouds predicted as the class
    precision: Optional[float]  # percent; None when never predicted
    most_confused_with: Optional[str]  # the wrong class its clouds go to most (lowest index on ties)
    most_confused_count: int


def per_class_table(confusion: np.ndarray, classes: Sequence[str]) -> List[PerClass]:
    """Per-class rows from the ``(K, K)`` counts."""
    k = len(classes)
    if confusion.shape != (k, k):
        raise ValueError(f"confusion must have shape (K, K) = ({k}, {k}); got {confusion.shape}")
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    diag = np.diagonal(confusion)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    worst = off.argmax(1)
    rows = []
    for i, name in enumerate(classes):
        n_conf = int(off[i, worst[i]])
        rows.append(PerClass(
            str(name), int(support[i]), int(diag[i]),
            100.0 * diag[i] / support[i] if support[i] else None,
            int(predicted[i]),
            100.0 * diag[i] / predicted[i] if predicted[i] else None,
            str(classes[worst[i]]) if n_conf else None, n_conf,
        ))
    return rows


def confused_pairs(confusion: np.ndarray, n: int) -> List[Tuple[int, int, int]]:
    """The ``n`` largest off-diagonal counts as ``(true, predicted, count)``, count > 0.

    Ordered by count (descending), then true class, then predicted class.
    """
    off = np.asarray(confusion, dtype=np.int64).copy()
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    nz = np.flatnonzero(flat)
    order = nz[np.lexsort((nz, -flat[nz]))][:n]  # count desc, then row-major index asc
    k = off.shape[1]
    return [(int(i // k), int(i % k), int(flat[i])) for i in order]


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> Dict[str, object]:
    """Metrics of ``logits: (B, K)`` against ``labels: (B,)``; accuracies in percent.

    Keys: ``top1``, ``top5`` (= 100 when ``K <= 5``), ``mean_class_accuracy`` (mean over the
    classes present in ``labels``), ``per_class_accuracy`` (None for absent classes),
    ``support``, ``num_samples``, ``confusion`` (``(K, K)`` int64 counts).
    """
    logits, labels = _check(logits, labels, len(classes))
    k = len(classes)
    rank = label_rank(logits, labels)
    pred = logits.argmax(axis=1) if len(labels) else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(pred, labels, k)
    support = cm.sum(axis=1)
    per_class = {c: (100.0 * cm[i, i] / support[i] if support[i] else None) for i, c in enumerate(classes)}
    present = [v for v in per_class.values() if v is not None]
    return {
        "top1": 100.0 * float((rank == 0).mean()) if len(labels) else 0.0,
        "top5": 100.0 * float((rank < 5).mean()) if len(labels) else 0.0,
        "mean_class_accuracy": float(np.mean(present)) if present else 0.0,
        "per_class_accuracy": per_class,
        "support": {c: int(support[i]) for i, c in enumerate(classes)},
        "num_samples": int(len(labels)),
        "confusion": cm,
    }
