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


def kshot_indices(labels: np.ndarray, k: int, seed: int = 0, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``k`` samples of every class (sorted), for K-shot training sets.

    A class with fewer than ``k`` available samples gives all of them (see
    :func:`short_classes`). The draw depends only on ``labels``, ``k``, ``seed`` and
    ``exclude`` (indices never picked, e.g. the K-shot set when drawing a validation set).

    Args:
        labels: ``(B,)`` integer labels.
        k: samples per class (``>= 0``).
    Returns:
        ``(M,)`` int64 indices into ``labels``, ``M <= k * #classes``.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0; got {k}")
    labels = np.asarray(labels)
    banned = np.zeros(len(labels), dtype=bool)
    if exclude is not None and len(exclude):
        banned[np.asarray(exclude, dtype=np.int64)] = True
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero((labels == c) & ~banned)
        picked.append(rng.permutation(idx)[:k])  # a permutation is drawn for every class: stable streams
    return np.sort(np.concatenate(picked)).astype(np.int64) if picked else np.zeros(0, dtype=np.int64)


def short_classes(labels: np.ndarray, indices: np.ndarray, k: int, num_classes: int) -> dict[int, int]:
    """``{class: count}`` of every class with fewer than ``k`` samples among ``labels[indices]``."""
    counts = np.bincount(np.asarray(labels)[np.asarray(indices, dtype=np.int64)], minlength=num_classes)
    return {int(c): int(n) for c, n in enumerate(counts) if n < k}
