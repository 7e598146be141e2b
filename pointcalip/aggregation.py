"""View aggregation and hyper-parameter search on cached components (SPEC §5).

Symbols: ``B`` clouds, ``V`` views, ``C`` components (3, or 1 for global only), ``K`` classes.

``logits = (1/sqrt(V)) * sum_v w_v * (c_global + beta2 c_text + beta3 c_visual)_v``.
Every search works on the cached ``(B, V, C, K)`` components, so no image is re-encoded.
Ties keep the defaults: a searched value replaces the default only when it is strictly
better on the selection split; among equal candidates the first in grid order wins.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

from pointcalip.attention import combine_betas

VIEW_WEIGHT_GRID: Tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
BETA2_RANGE: Tuple[float, float] = (0.001, 2.0)
BETA3_RANGE: Tuple[float, float] = (0.001, 0.1)
BETA_STEPS = 200
SEARCH_MODES: Tuple[str, ...] = ("none", "val", "test")
ORACLE_LABEL = "oracle (tuned on test labels)"


def _check_components(components: torch.Tensor) -> None:
    if components.dim() != 4:
        raise ValueError(f"components must have shape (B, V, C, K); got {tuple(components.shape)}")


def aggregate_views(view_logits: torch.Tensor, view_weights: torch.Tensor) -> torch.Tensor:
    """``(1/sqrt(V)) sum_v w_v logits_v``: ``(B, V, K)``, ``(V,)`` -> ``(B, K)``."""
    if view_logits.dim() != 3 or view_weights.shape != (view_logits.shape[1],):
        raise ValueError(f"view_logits (B, V, K) and view_weights (V,) disagree: "
                         f"{tuple(view_logits.shape)} vs {tuple(view_weights.shape)}")
    w = view_weights.to(view_logits)
    return torch.einsum("bvk,v->bk", view_logits, w) / math.sqrt(view_logits.shape[1])


def logits_from_components(
    components: torch.Tensor, view_weights: Sequence[float], beta2: float, beta3: float
) -> torch.Tensor:
    """Final logits ``(B, K)`` from components ``(B, V, C, K)``."""
    _check_components(components)
    w = torch.as_tensor(list(view_weights), dtype=components.dtype, device=components.device)
    return aggregate_views(combine_betas(components, beta2, beta3), w)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``logits: (B, K)`` against ``labels: (B,)``."""
    return float((logits.argmax(dim=-1) == labels.to(logits.device)).double().mean().item())


def _pick(acc: torch.Tensor, default_index: Optional[int]) -> int:
    """Index of the best accuracy; the default wins ties, else the first best."""
    best = int(torch.argmax(acc).item())  # first maximal element
    if default_index is not None and acc[default_index] >= acc[best]:
        return default_index
    return best


def view_weight_candidates(num_views: int, grid: Sequence[float] = VIEW_WEIGHT_GRID) -> torch.Tensor:
    """All ``len(grid) ** V`` weight vectors, ``(C, V)``, in ``itertools.product`` order."""
    return torch.tensor(list(itertools.product(grid, repeat=num_views)), dtype=torch.float32)


def search_view_weights(
    view_logits: torch.Tensor,
    labels: torch.Tensor,
    grid: Sequence[float] = VIEW_WEIGHT_GRID,
    default: Optional[Sequence[float]] = None,
    chunk: int = 256,
) -> Tuple[Tuple[float, ...], float]:
    """Best view weights on ``view_logits: (B, V, K)`` over the product grid.

    Returns ``(weights, accuracy)``. All candidates are scored in chunks of ``chunk``.
    """
    b, v, k = view_logits.shape
    cands = view_weight_candidates(v, grid).to(view_logits)
    labels = labels.to(view_logits.device)
    acc = torch.empty(cands.shape[0], dtype=torch.float32)
    for start in range(0, cands.shape[0], chunk):
        w = cands[start : start + chunk]
        pred = torch.einsum("cv,bvk->cbk", w, view_logits).argmax(dim=-1)
        acc[start : start + chunk] = (pred == labels).float().mean(dim=1).cpu()
    default_index = None
    if default is not None:
        match = (cands.cpu() == torch.tensor(list(default), dtype=torch.float32)).all(dim=1).nonzero()
        default_index = int(match[0]) if len(match) else None
    i = _pick(acc, default_index)
    return tuple(float(x) for x in cands[i].tolist()), float(acc[i])


def beta_grid_accuracy(
    components: torch.Tensor,
    labels: torch.Tensor,
    view_weights: Sequence[float],
    beta2_grid: torch.Tensor,
    beta3_grid: torch.Tensor,
    chunk: int = 25,
) -> torch.Tensor:
    """Accuracy of every ``(beta2, beta3)`` on the grid, ``(G2, G3)``, without scoring each point.

    Cloud ``b`` is correct at ``(beta2, beta3)`` when for every other class ``k``
    ``d0 + beta2 d1 + beta3 d2 <= 0`` with ``d = c[k] - c[label]`` (view-aggregated
    components). For a fixed ``beta2`` these constraints leave an interval of ``beta3``,
    so each ``(cloud, beta2)`` pair adds 1 to a contiguous run of the ``beta3`` grid:
    ``O(B * G2 * K)`` work instead of ``O(B * G2 * G3 * K)``. Exact ties, where two classes
    score the same, are resolved as "correct" (brute-force ``argmax`` picks the lower index).
    """
    _check_components(components)
    w = torch.as_tensor(list(view_weights), dtype=torch.float64, device=components.device)
    c = torch.einsum("bvck,v->cbk", components.to(torch.float64), w)  # (3, B, K)
    b, k = c.shape[1:]
    lab = labels.to(c.device).long()
    d = c - c[:, torch.arange(b, device=c.device), lab][:, :, None]  # (3, B, K), zero at the label
    others = torch.ones(b, k, dtype=torch.bool, device=c.device)
    others[torch.arange(b, device=c.device), lab] = False
    g2 = beta2_grid.to(c)
    g3, order = torch.sort(beta3_grid.to(c))
    counts = torch.zeros(len(g2), len(g3) + 1, dtype=torch.float64, device=c.device)
    d2 = d[2][None]
    for start in range(0, len(g2), chunk):
        a = d[0][None] + g2[start : start + chunk, None, None] * d[1][None]  # (g, B, K)
        bound = -a / torch.where(d2 == 0, torch.ones_like(d2), d2)
        inf = torch.full_like(bound, float("inf"))
        hi = torch.where((d2 > 0) & others, bound, inf).amin(dim=-1)
        lo = torch.where((d2 < 0) & others, bound, -inf).amax(dim=-1)
        feasible = ~(((d2 == 0) & others & (a > 0)).any(dim=-1))  # constraints without beta3
        i_lo = torch.searchsorted(g3, lo.contiguous(), side="left")
        i_hi = torch.searchsorted(g3, hi.contiguous(), side="right")
        ok = (feasible & (i_hi > i_lo)).to(torch.float64)
        rows = counts[start : start + chunk]
        rows.scatter_add_(1, i_lo, ok)
        rows.scatter_add_(1, i_hi, -ok)
    acc_sorted = counts[:, :-1].cumsum(dim=1) / b
    acc = torch.empty_like(acc_sorted)
    acc[:, order] = acc_sorted
    return acc.float().cpu()


def search_betas(
    components: torch.Tensor,
    labels: torch.Tensor,
    view_weights: Sequence[float],
    beta2_grid: torch.Tensor,
    beta3_grid: torch.Tensor,
    default: Optional[Tuple[float, float]] = None,
) -> Tuple[float, float, float]:
    """Best ``(beta2, beta3)`` over the grid product, with fixed view weights.

    Args:
        components: ``(B, V, 3, K)``.
        labels: ``(B,)``.
        beta2_grid, beta3_grid: ``(G2,)`` and ``(G3,)`` candidate values.
        default: ``(beta2, beta3)`` kept on ties (it competes even when off the grid).

    Returns ``(beta2, beta3, accuracy)``; the first best in row-major grid order wins.
    """
    acc = beta_grid_accuracy(components, labels, view_weights, beta2_grid, beta3_grid)
    i = int(torch.argmax(acc).item())
    g3 = len(beta3_grid)
    best2, best3, best_acc = float(beta2_grid[i // g3]), float(beta3_grid[i % g3]), float(acc.flatten()[i])
    if default is not None:
        d_acc = accuracy(logits_from_components(components, view_weights, *default), labels)
        if d_acc >= best_acc:
            return float(default[0]), float(default[1]), d_acc
    return best2, best3, best_acc


@dataclass(frozen=True)
class SearchResult:
    """Hyper-parameters selected on ``split`` and how."""

    view_weights: Tuple[float, ...]
    beta2: float
    beta3: float
    selection_accuracy: float
    split: str
    num_samples: int
    seconds_betas: float
    seconds_view_weights: float


def run_search(
    components: torch.Tensor,
    labels: torch.Tensor,
    method: str,
    view_weights: Sequence[float],
    beta2: float,
    beta3: float,
    split: str,
    view_weight_grid: Sequence[float] = VIEW_WEIGHT_GRID,
    beta2_range: Tuple[float, float] = BETA2_RANGE,
    beta3_range: Tuple[float, float] = BETA3_RANGE,
    beta_steps: int = BETA_STEPS,
) -> SearchResult:
    """Select ``beta2, beta3`` (``calip`` only), then view weights, on ``(B, V, 3, K)`` components.

    The two searches run one after the other (betas with the starting view weights, then
    view weights with the selected betas), as the reference searches them separately.
    """
    t0 = time.perf_counter()
    if method == "calip":
        beta2, beta3, _ = search_betas(
            components, labels, view_weights,
            torch.linspace(beta2_range[0], beta2_range[1], beta_steps),
            torch.linspace(beta3_range[0], beta3_range[1], beta_steps),
            default=(beta2, beta3),
        )
    else:
        beta2 = beta3 = 0.0
    t1 = time.perf_counter()
    weights, acc = search_view_weights(combine_betas(components, beta2, beta3), labels, view_weight_grid,
                                       default=view_weights)
    t2 = time.perf_counter()
    return SearchResult(weights, beta2, beta3, acc, split, int(labels.shape[0]), t1 - t0, t2 - t1)
