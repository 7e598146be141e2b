"""View-weight search: every candidate of the grid (exhaustive) or coordinate ascent over
blocks of views, both on exact grid counts (docs/method.md §5), and their loop references."""

from __future__ import annotations

import itertools
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch

from pointcalip.aggregation.common import (
    COORDINATE_BLOCK, COORDINATE_MAX_SWEEPS, COORDINATE_RESTARTS, DEFAULT_MAX_BYTES, EXHAUSTIVE_HARD_LIMIT,
    EXHAUSTIVE_LIMIT, STRATEGIES, VIEW_WEIGHT_GRID, _check_grid, _check_labels, _check_search_views, _check_weights,
    _Scores, count_correct_naive)
from pointcalip.aggregation.grid import _grid_counts, grid_counts_naive
from pointcalip.errors import ConfigError


class ViewWeightSearch(NamedTuple):
    """Outcome of a view-weight search."""

    weights: Tuple[float, ...]  # (V,)
    correct: int  # clouds correct with ``weights``
    accuracy: float  # correct / B
    strategy: str  # "exhaustive" or "coordinate"
    candidates: int  # weight vectors scored
    detail: str  # one line: how the search ran


def _start_is_on_grid(start: Tuple[float, ...], views: Sequence[int], grid: Sequence[float]) -> bool:
    return all(start[i] in grid for i in views)


def _grid_index(start: Tuple[float, ...], views: Sequence[int], grid: Sequence[float]) -> int:
    idx = 0
    for i in views:
        idx = idx * len(grid) + list(grid).index(start[i])
    return idx


def _restart_points(
    start: Tuple[float, ...], views: Sequence[int], grid: Sequence[float], restarts: int, seed: int
) -> List[Tuple[float, ...]]:
    """The given start, then ``restarts`` random grid vectors on ``views`` (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    points = [start]
    for _ in range(restarts):
        pick = torch.randint(0, len(grid), (len(views),), generator=gen).tolist()
        w = list(start)
        for i, j in zip(views, pick):
            w[i] = grid[j]
        points.append(tuple(w))
    return points


def _blocks(views: Sequence[int], block: int, sweep: int) -> List[Tuple[int, ...]]:
    """Consecutive blocks of ``block`` searched views; odd sweeps shift them by ``block // 2``."""
    views = list(views)
    if block >= len(views):
        return [tuple(views)]
    shift = (block // 2) if sweep % 2 else 0
    rolled = views[shift:] + views[:shift]
    return [tuple(sorted(rolled[i : i + block])) for i in range(0, len(rolled), block)]


def _coordinate_ascent(
    count_block: Callable[[Tuple[float, ...], Tuple[int, ...]], torch.Tensor],
    count_one: Callable[[Tuple[float, ...]], int],
    start: Tuple[float, ...],
    views: Tuple[int, ...],
    grid: Tuple[float, ...],
    block: int,
    restarts: int,
    seed: int,
) -> Tuple[Tuple[float, ...], int, int, int]:
    """Block coordinate ascent from the start and from ``restarts`` random grid points.

    Each step scores every grid combination of one block of views exactly (the others fixed)
    and moves only on a strict gain. Sweeps alternate two block partitions (shifted by
    ``block // 2``) and stop after two sweeps without a gain. The best end point wins; the run
    from the given start wins ties. Returns ``(weights, correct, candidates, sweeps)``.
    """
    best_w, best_n, scored, sweeps_total = start, -1, 0, 0
    for run, w in enumerate(_restart_points(start, views, grid, restarts, seed)):
        cur = count_one(w)
        scored += 1
        idle, sweep = 0, 0
        while idle < 2 and sweep < COORDINATE_MAX_SWEEPS:
            gained = False
            for blk in _blocks(views, block, sweep):
                counts = count_block(w, blk)
                scored += counts.numel()
                j = int(torch.argmax(counts))
                if int(counts[j]) > cur:
                    combo = list(itertools.product(grid, repeat=len(blk)))[j]
                    new = list(w)
                    for i, x in zip(blk, combo):
                        new[i] = x
                    if tuple(new) != w:
                        w, cur, gained = tuple(new), int(counts[j]), True
            idle = 0 if gained else idle + 1
            sweep += 1
        sweeps_total += sweep
        if cur > best_n:  # strict: earlier runs (the given start first) win ties
            best_w, best_n = w, cur
    return best_w, best_n, scored, sweeps_total


def _resolve_strategy(strategy: str, n_candidates: int) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if strategy == "auto":
        return "exhaustive" if n_candidates <= EXHAUSTIVE_LIMIT else "coordinate"
    if strategy == "exhaustive" and n_candidates > EXHAUSTIVE_HARD_LIMIT:
        raise ConfigError(f"view-weight grid has {n_candidates:,} candidates, more than the "
                          f"{EXHAUSTIVE_HARD_LIMIT:,} an exhaustive search allows; use strategy "
                          f"'coordinate' or 'auto', or fewer search_views")
    return strategy


def search_view_weights(
    scores: torch.Tensor,
    labels: torch.Tensor,
    grid: Sequence[float] = VIEW_WEIGHT_GRID,
    start: Optional[Sequence[float]] = None,
    search_views: Optional[Sequence[int]] = None,
    strategy: str = "auto",
    betas: Optional[Tuple[float, float]] = None,
    block: int = COORDINATE_BLOCK,
    restarts: int = COORDINATE_RESTARTS,
    seed: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ViewWeightSearch:
    """Best view weights on ``scores`` over ``grid`` for the views ``search_views``.

    Args:
        scores: ``(B, V, K)`` per-view logits, or ``(B, V, 3, K)`` components with ``betas``.
        labels: ``(B,)``.
        grid: candidate values of each searched view.
        start: ``(V,)`` starting weights (default all ones); unsearched views keep theirs, and
            the start wins ties (it competes even when off the grid).
        search_views: indices of the searched views (default: all).
        strategy: ``exhaustive`` scores all ``G^m`` vectors; ``coordinate`` runs block
            coordinate ascent (see :func:`_coordinate_ascent`); ``auto`` is exhaustive up to
            :data:`EXHAUSTIVE_LIMIT` candidates.
        block, restarts, seed: coordinate ascent settings.
        max_bytes: bound on each temporary (see :func:`grid_counts`).
    """
    src = _Scores(scores, betas)
    v = src.num_views
    g = _check_grid(grid, "grid")
    w0 = _check_weights(start if start is not None else (1.0,) * v, v)
    views = _check_search_views(search_views, v)
    if block < 1 or restarts < 0:
        raise ValueError(f"block must be >= 1 and restarts >= 0; got {block}, {restarts}")
    n_all = len(g) ** len(views)
    chosen = _resolve_strategy(strategy, n_all)
    b = max(src.num_clouds, 1)
    labels = _check_labels(labels, src.num_clouds, src.num_classes)
    src = src.margins(labels, max_bytes) or src

    def count_block(w: Tuple[float, ...], blk: Tuple[int, ...]) -> torch.Tensor:
        return _grid_counts(src, labels, w, blk, [g] * len(blk), max_bytes)

    def count_one(w: Tuple[float, ...]) -> int:
        return int(_grid_counts(src, labels, w, (), [], max_bytes)[0])

    if chosen == "exhaustive":
        counts = count_block(w0, views)
        j = int(torch.argmax(counts))  # first best in grid order
        on_grid = _start_is_on_grid(w0, views, g)
        n0 = int(counts[_grid_index(w0, views, g)]) if on_grid else count_one(w0)
        best_w = w0
        if int(counts[j]) > n0:
            new = list(w0)
            for i, x in zip(views, list(itertools.product(g, repeat=len(views)))[j]):
                new[i] = x
            best_w, n0 = tuple(new), int(counts[j])
        scored = n_all + (0 if on_grid else 1)
        detail = f"exhaustive over {len(g)}^{len(views)} = {n_all:,} weight vectors"
        return ViewWeightSearch(best_w, n0, n0 / b, "exhaustive", scored, detail)
    best_w, n_best, scored, sweeps = _coordinate_ascent(count_block, count_one, w0, views, g, block,
                                                        restarts, seed)
    detail = (f"block coordinate ascent over {len(g)}^{len(views)} = {n_all:,} weight vectors: blocks of "
              f"{min(block, len(views))} views scored exhaustively, {restarts + 1} starts (given + "
              f"{restarts} random, seed {seed}), {sweeps} sweeps, {scored:,} vectors scored; "
              f"a local optimum, not guaranteed global")
    return ViewWeightSearch(best_w, n_best, n_best / b, "coordinate", scored, detail)



# --------------------------------------------------------------------------------------
# slow, obviously correct references (loops over every candidate, argmax of float64 logits)


def search_view_weights_naive(
    view_logits: torch.Tensor,
    labels: torch.Tensor,
    grid: Sequence[float] = VIEW_WEIGHT_GRID,
    start: Optional[Sequence[float]] = None,
    search_views: Optional[Sequence[int]] = None,
) -> Tuple[Tuple[float, ...], float]:
    """Exhaustive search by brute force: every combination, start kept unless strictly beaten.

    ``view_logits: (B, V, K)``. Returns ``(weights, accuracy)``.
    """
    v = view_logits.shape[1]
    w0 = tuple(float(x) for x in (start if start is not None else (1.0,) * v))
    views = tuple(range(v)) if search_views is None else tuple(sorted(search_views))
    best_w, best_n = w0, count_correct_naive(view_logits, labels, w0)
    for combo in itertools.product(grid, repeat=len(views)):
        w = list(w0)
        for i, x in zip(views, combo):
            w[i] = float(x)
        n = count_correct_naive(view_logits, labels, w)
        if n > best_n:
            best_w, best_n = tuple(w), n
    return best_w, best_n / max(view_logits.shape[0], 1)


def coordinate_ascent_naive(
    view_logits: torch.Tensor,
    labels: torch.Tensor,
    grid: Sequence[float],
    start: Sequence[float],
    search_views: Sequence[int],
    block: int = COORDINATE_BLOCK,
    restarts: int = COORDINATE_RESTARTS,
    seed: int = 0,
) -> Tuple[Tuple[float, ...], int]:
    """The coordinate strategy with every block scored by brute force. Returns ``(weights, correct)``."""
    g = tuple(float(x) for x in grid)

    def count_block(w: Tuple[float, ...], blk: Tuple[int, ...]) -> torch.Tensor:
        return grid_counts_naive(view_logits, labels, w, blk, [g] * len(blk))

    def count_one(w: Tuple[float, ...]) -> int:
        return count_correct_naive(view_logits, labels, w)

    w, n, _, _ = _coordinate_ascent(count_block, count_one, tuple(float(x) for x in start),
                                    tuple(sorted(search_views)), g, block, restarts, seed)
    return w, n
