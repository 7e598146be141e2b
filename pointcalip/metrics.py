"""Classification metrics: top-1/top-5, mean class accuracy, per-class accuracy, confusion."""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``(K, K)``: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    return cm


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> Dict[str, object]:
    """Metrics of ``logits: (B, K)`` against ``labels: (B,)``; accuracies in percent.

    Mean class accuracy averages over classes present in ``labels``.
    """
    k = len(classes)
    if logits.ndim != 2 or logits.shape[1] != k or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits must have shape (B, K) = ({labels.shape[0]}, {k}); got {logits.shape}")
    pred = logits.argmax(axis=1)
    top = np.argsort(-logits, axis=1, kind="stable")[:, : min(5, k)]
    cm = confusion_matrix(pred, labels, k)
    support = cm.sum(axis=1)
    per_class = {c: (100.0 * cm[i, i] / support[i] if support[i] else None) for i, c in enumerate(classes)}
    present = [v for v in per_class.values() if v is not None]
    return {
        "top1": 100.0 * float((pred == labels).mean()) if len(labels) else 0.0,
        "top5": 100.0 * float((top == labels[:, None]).any(axis=1).mean()) if len(labels) else 0.0,
        "mean_class_accuracy": float(np.mean(present)) if present else 0.0,
        "per_class_accuracy": per_class,
        "support": {c: int(support[i]) for i, c in enumerate(classes)},
        "num_samples": int(len(labels)),
        "confusion": cm,
    }
