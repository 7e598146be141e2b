"""Deterministic, class-stratified subsets of a labelled split."""

from __future__ import annotations

import numpy as np


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a held-out part of every class (sorted).

    Each class with ``n >= 2`` samples gives ``max(1, round(fraction * n))`` of them (never
    all); a class with one sample gives none. The draw depends only on ``labels`` and ``seed``.

    Args:
        labels: ``(B,)`` integer labels.
    Returns:
        ``(M,)`` int64 indices into ``labels``.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        take = min(len(idx) - 1, max(1, int(round(fraction * len(idx)))))
        picked.append(rng.permutation(idx)[:take])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
