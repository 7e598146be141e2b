"""Shared pieces of the aggregation: constants, input checks, the chunked score source,
the weighted view sum and the count of correct clouds (docs/method.md §5).

Symbols: ``B`` clouds, ``V`` views, ``K`` classes, ``m`` searched views, ``G`` grid values.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Optional, Sequence, Tuple

import torch

logger = logging.getLogger("pointcalip")

VIEW_WEIGHT_GRID: Tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
BETA2_RANGE: Tuple[float, float] = (0.001, 2.0)
BETA3_RANGE: Tuple[float, float] = (0.001, 0.1)
BETA_STEPS = 200
SEARCH_MODES: Tuple[str, ...] = ("none", "val", "test")
ORACLE_LABEL = "oracle (tuned on test labels)"

STRATEGIES: Tuple[str, ...] = ("auto", "exhaustive", "coordinate")
#: ``auto`` scores every view-weight vector up to this many candidates (4^8), else coordinate ascent.
EXHAUSTIVE_LIMIT = 4 ** 8
#: ``exhaustive`` refuses grids larger than this (the per-candidate counts alone would not fit).
EXHAUSTIVE_HARD_LIMIT = 4 ** 12
#: Coordinate ascent: views searched jointly per step, random restarts, sweep cap.
COORDINATE_BLOCK = 4
COORDINATE_RESTARTS = 2
COORDINATE_MAX_SWEEPS = 50
#: Upper bound on the bytes of one temporary tensor of a search (256 MiB).
DEFAULT_MAX_BYTES = 256 * 2 ** 20
#: PointCLIP V2's view-weight search: views 0-2 stay at 0.75, views 3-9 take the grid.
V2_FIXED_WEIGHT = 0.75
V2_SEARCH_VIEWS: Tuple[int, ...] = (3, 4, 5, 6, 7, 8, 9)

_BITS = 64  # candidates packed per int64 word in the exhaustive kernel
_REL_TOL = 1e-9  # pruning slack relative to the margin's magnitude (rounding is ~1e-15)


# --------------------------------------------------------------------------------------
# small helpers


def chunk_size(item_bytes: int, total: int, max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """How many items of ``item_bytes`` bytes fit in ``max_bytes``: in ``[1, max(total, 1)]``.

    A single item is always allowed, so one temporary holds at most
    ``max(max_bytes, item_bytes)`` bytes.
    """
    if item_bytes < 1 or max_bytes < 1:
        raise ValueError(f"item_bytes and max_bytes must be positive; got {item_bytes}, {max_bytes}")
    return int(max(1, min(max(total, 1), max_bytes // item_bytes)))


def _check_components(components: torch.Tensor) -> None:
    if components.dim() != 4 or components.shape[2] != 3:
        raise ValueError(f"components must have shape (B, V, 3, K); got {tuple(components.shape)}")


def _check_labels(labels: torch.Tensor, b: int, k: int) -> torch.Tensor:
    if labels.dim() != 1 or labels.shape[0] != b:
        raise ValueError(f"labels must have shape (B,) = ({b},); got {tuple(labels.shape)}")
    labels = labels.long()
    if b and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"labels must lie in [0, {k}); got values in [{int(labels.min())}, {int(labels.max())}]")
    return labels


def _check_weights(view_weights: Sequence[float], v: int) -> Tuple[float, ...]:
    w = tuple(float(x) for x in view_weights)
    if len(w) != v:
        raise ValueError(f"view_weights must have shape (V,) = ({v},); got {len(w)} values")
    return w


def _check_grid(grid: Sequence[float], name: str) -> Tuple[float, ...]:
    g = tuple(float(x) for x in grid)
    if not g or any(not math.isfinite(x) for x in g):
        raise ValueError(f"{name} must be a non-empty sequence of finite values; got {list(grid)}")
    if len(set(g)) != len(g):
        raise ValueError(f"{name} has repeated values: {list(grid)}")
    return g


def _check_search_views(search_views: Optional[Sequence[int]], v: int) -> Tuple[int, ...]:
    if search_views is None:
        return tuple(range(v))
    sv = tuple(int(i) for i in search_views)
    if len(set(sv)) != len(sv) or any(i < 0 or i >= v for i in sv):
        raise ValueError(f"search_views must be distinct view indices in [0, {v}); got {list(search_views)}")
    return tuple(sorted(sv))


def _product(values: Sequence[Sequence[float]]) -> torch.Tensor:
    """``(prod_i len(values[i]), len(values))`` float64, in ``itertools.product`` order."""
    rows = list(itertools.product(*values))
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(values))


class _Scores:
    """Per-view scores ``(B, V, K)`` after beta, served in float64 chunks of clouds.

    Wraps either components ``(B, V, 3, K)`` with ``(beta2, beta3)`` or per-view logits
    ``(B, V, K)``; nothing of size ``B * V * K`` in float64 is ever held at once.
    """

    def __init__(self, data: torch.Tensor, betas: Optional[Tuple[float, float]], checked: bool = False,
                 is_margin: bool = False) -> None:
        self.checked = checked
        self.is_margin = is_margin  # scores already minus the label's score
        if data.dim() == 4:
            _check_components(data)
            if betas is None:
                raise ValueError("components (B, V, 3, K) need betas=(beta2, beta3)")
        elif data.dim() != 3:
            raise ValueError(f"scores must have shape (B, V, K) or (B, V, 3, K); got {tuple(data.shape)}")
        self.data = data
        self.betas = betas
        self.num_clouds, self.num_views, self.num_classes = data.shape[0], data.shape[1], data.shape[-1]
        # float64 bytes alive per cloud while a chunk is built (the cast input and the result)
        per = self.num_views * self.num_classes * 8
        self.item_bytes = per * (4 if data.dim() == 4 else 2)

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        x = self.data[start:stop].to(torch.float64)
        if x.dim() == 4:
            b2, b3 = self.betas  # type: ignore[misc]
            x = x[:, :, 0] + b2 * x[:, :, 1] + b3 * x[:, :, 2]
        if not self.checked and not bool(torch.isfinite(x).all()):
            raise ValueError(f"scores of clouds {start}..{stop - 1} contain NaN or Inf")
        return x

    def margins(self, labels: torch.Tensor, max_bytes: int) -> Optional["_Scores"]:
        """The margins ``S - S[label]`` ``(B, V, K)`` float64 as a new source when they fit in
        ``max_bytes``, else ``None``. They give bit-identical counts (the label's margin is 0)
        and spare every later pass the cast and the beta combination."""
        b, v, k = self.num_clouds, self.num_views, self.num_classes
        if b * v * k * 8 > max_bytes:
            return None
        out = torch.empty(b, v, k, dtype=torch.float64, device=self.data.device)
        step = chunk_size(self.item_bytes, b, max_bytes)
        for s in range(0, b, step):
            x = self.chunk(s, s + step)
            lab = labels[s : s + step].to(x.device)
            out[s : s + step] = x - x.gather(2, lab[:, None, None].expand(x.shape[0], v, 1))
        return _Scores(out, None, checked=True, is_margin=True)



# --------------------------------------------------------------------------------------
# aggregation


def aggregate_views(view_logits: torch.Tensor, view_weights: torch.Tensor) -> torch.Tensor:
    """``(1/sqrt(V)) sum_v w_v logits_v``: ``(B, V, K)``, ``(V,)`` -> ``(B, K)``."""
    if view_logits.dim() != 3 or view_weights.shape != (view_logits.shape[1],):
        raise ValueError(f"view_logits (B, V, K) and view_weights (V,) disagree: "
                         f"{tuple(view_logits.shape)} vs {tuple(view_weights.shape)}")
    w = view_weights.to(view_logits)
    return torch.einsum("bvk,v->bk", view_logits, w) / math.sqrt(view_logits.shape[1])


def logits_from_components(
    components: torch.Tensor,
    view_weights: Sequence[float],
    beta2: float,
    beta3: float,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> torch.Tensor:
    """Final logits ``(B, K)`` (dtype of the input) from components ``(B, V, 3, K)``.

    Computed in chunks of clouds, so the ``(B, V, K)`` per-view logits never exist at once.
    """
    _check_components(components)
    b, v, _, k = components.shape
    w = torch.as_tensor(_check_weights(view_weights, v), dtype=components.dtype, device=components.device)
    out = torch.empty(b, k, dtype=components.dtype, device=components.device)
    step = chunk_size(v * k * components.element_size() * 2, b, max_bytes)
    for s in range(0, b, step):
        c = components[s : s + step]
        per_view = c[:, :, 0] + beta2 * c[:, :, 1] + beta3 * c[:, :, 2]
        out[s : s + step] = aggregate_views(per_view, w)
    return out


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (fraction) of ``logits: (B, K)`` against ``labels: (B,)``."""
    return float((logits.argmax(dim=-1) == labels.to(logits.device)).double().mean().item())


def count_correct(
    scores: torch.Tensor,
    labels: torch.Tensor,
    view_weights: Sequence[float],
    betas: Optional[Tuple[float, float]] = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> int:
    """Clouds whose float64 ``argmax_k sum_v w_v scores[b, v, k]`` is their label.

    ``scores`` is ``(B, V, K)`` per-view logits, or ``(B, V, 3, K)`` components with
    ``betas = (beta2, beta3)``. The ``1/sqrt(V)`` factor does not change the argmax and is left out.
    """
    src = _Scores(scores, betas)
    lab = _check_labels(labels, src.num_clouds, src.num_classes).to(scores.device)
    w = torch.tensor(_check_weights(view_weights, src.num_views), dtype=torch.float64, device=scores.device)
    total = 0
    step = chunk_size(src.item_bytes, src.num_clouds, max_bytes)
    for s in range(0, src.num_clouds, step):
        logits = torch.einsum("bvk,v->bk", src.chunk(s, s + step), w)
        total += int((logits.argmax(dim=1) == lab[s : s + step]).sum())
    return total


def count_correct_naive(view_logits: torch.Tensor, labels: torch.Tensor, weights: Sequence[float]) -> int:
    """Loop over views: ``argmax_k sum_v w_v view_logits[:, v, k]`` (float64) == label, counted."""
    logits = torch.zeros(view_logits.shape[0], view_logits.shape[2], dtype=torch.float64)
    for vi, wv in enumerate(weights):
        logits += float(wv) * view_logits[:, vi].double()
    return int((torch.argmax(logits, dim=1) == labels).sum())
