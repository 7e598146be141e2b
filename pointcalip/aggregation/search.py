"""The two searches together: betas (CALIP only), then view weights (docs/method.md §5)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

from pointcalip.aggregation.betas import search_betas
from pointcalip.aggregation.common import (
    BETA2_RANGE, BETA3_RANGE, BETA_STEPS, DEFAULT_MAX_BYTES, VIEW_WEIGHT_GRID, _check_components, logger)
from pointcalip.aggregation.view_weights import search_view_weights


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
    strategy: str  # view weights: "exhaustive" or "coordinate"
    strategy_detail: str
    search_views: Tuple[int, ...]
    view_candidates: int  # view-weight vectors scored
    beta_candidates: int  # (beta2, beta3) pairs scored (0 for pointclip)


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
    search_views: Optional[Sequence[int]] = None,
    strategy: str = "auto",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> SearchResult:
    """Select ``beta2, beta3`` (``calip`` only), then view weights, on ``(B, V, 3, K)`` components.

    The two searches run one after the other (betas with the starting view weights, then
    view weights with the selected betas), as the reference searches them separately.
    ``search_views`` limits the view-weight search to those views (the others keep
    ``view_weights``); ``strategy`` is that of :func:`search_view_weights`.
    """
    _check_components(components)
    t0 = time.perf_counter()
    beta_candidates = 0
    if method == "calip":
        beta2, beta3, _ = search_betas(
            components, labels, view_weights,
            torch.linspace(beta2_range[0], beta2_range[1], beta_steps, dtype=torch.float64),
            torch.linspace(beta3_range[0], beta3_range[1], beta_steps, dtype=torch.float64),
            default=(beta2, beta3), max_bytes=max_bytes,
        )
        beta_candidates = beta_steps * beta_steps
    elif method == "pointclip":
        beta2 = beta3 = 0.0
    else:
        raise ValueError(f"method must be 'pointclip' or 'calip'; got {method!r}")
    t1 = time.perf_counter()
    views = search_views if search_views is not None else tuple(range(components.shape[1]))
    res = search_view_weights(components, labels, view_weight_grid, start=view_weights, search_views=views,
                              strategy=strategy, betas=(beta2, beta3), max_bytes=max_bytes)
    t2 = time.perf_counter()
    logger.info("view weights: %s", res.detail)
    return SearchResult(res.weights, float(beta2), float(beta3), res.accuracy, split, int(labels.shape[0]),
                        t1 - t0, t2 - t1, res.strategy, res.detail, tuple(int(i) for i in views),
                        res.candidates, beta_candidates)
