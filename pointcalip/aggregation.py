"""View aggregation and hyper-parameter searches on cached components (docs/method.md §5).

Symbols: ``B`` clouds, ``V`` views, ``K`` classes, ``m`` searched views, ``G`` grid values.

Components ``(B, V, 3, K)`` are, per view, ``[s g.T^T, s g.T_a^T, s p.T^T]``; the logits are

    logits = (1/sqrt(V)) * sum_v w_v * (c_global + beta2 c_text + beta3 c_visual)_v

Every search works on the cached components, so no image is re-encoded, and every search
streams over the clouds in chunks whose temporaries stay under ``max_bytes`` (see
:func:`chunk_size`), so memory does not grow with ``B * K`` times the grid size.

Decision rule shared by every search and by its reference: a cloud is correct when the
``argmax`` of its logits is its label, and ``argmax`` returns the *lowest* index among equal
maxima (``torch.argmax``), so class ``k`` beats the label ``l`` when
``logit_k > logit_l`` (``k > l``) or ``logit_k >= logit_l`` (``k < l``).
Ties between candidates keep the starting values: a search moves away from them only on a
strictly higher number of correct clouds; among equal candidates the first in grid order wins.

Each fast search has a slow reference (``*_naive``) in this module that loops over every
candidate and calls ``argmax``; the tests compare the two on fresh random inputs.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch

from pointcalip.errors import ConfigError

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


# --------------------------------------------------------------------------------------
# view weights: exact counts for every vector of a product grid


def _count_group(
    counts: torch.Tensor,
    group: torch.Tensor,
    active: torch.Tensor,
    f: torch.Tensor,
    ds: torch.Tensor,
    lab: torch.Tensor,
    wa: torch.Tensor,
    wb: torch.Tensor,
) -> None:
    """Add the correct candidates of the clouds ``group`` to ``counts: (GA, GB)``.

    ``group`` indexes clouds of the chunk sorted by active classes, descending;
    ``active: (n, K)``, ``f: (n, K)`` fixed margins, ``ds: (n, m, K)`` searched margins,
    ``wa: (GA, mA)`` and ``wb: (GB, mB)`` the two halves of the grid (``mA + mB = m``).
    """
    dev = counts.device
    ga, gb, n_left = wa.shape[0], wb.shape[0], wa.shape[1]
    n_act = active[group].sum(1)  # descending
    # pairs (cloud, class) in rank-major order: all first active classes, then all second, ...
    # so rank r covers clouds 0 .. c_r - 1 of the group, contiguously
    cl, kk = torch.nonzero(active[group], as_tuple=True)
    first = torch.zeros(group.numel(), dtype=torch.int64, device=dev)
    first[1:] = n_act.cumsum(0)[:-1]
    rank = torch.arange(cl.numel(), device=dev) - first[cl]
    by_rank = torch.argsort(rank * group.numel() + cl)
    cl, kk, rank = cl[by_rank], kk[by_rank], rank[by_rank]
    rows = group[cl]
    # a tie is already wrong for a class below the label: there the class wins at mA + mB >= 0,
    # i.e. -mB <= mA; above the label it wins at mB > -mA. Both become "seq <= val" with
    # seq = sign * mB, val = sign * mA (sign +-1, exact) and one right-sided binary search.
    sign = torch.where(kk < lab[rows], 1.0, -1.0).to(torch.float64)
    fp = sign * f[rows, kk]  # (P,)
    dp = sign[:, None] * ds[rows, :, kk]  # (P, m)
    val = torch.addmm(fp[:, None], dp[:, :n_left], wa.t())  # (P, GA) = sign * mA
    seq, perm = torch.sort(-(dp[:, n_left:] @ wb.t()), dim=1)  # (P, GB): -sign * mB, sorted
    idx = torch.searchsorted(seq, val, right=True)  # (P, GA): how many c have seq[c] <= val
    del val
    # table[p, j]: bit mask of the winning c when idx = j; the first j of the sorted order
    # for classes below the label, the other GB - j above it
    bits = torch.bitwise_left_shift(torch.ones((), dtype=torch.int64, device=dev), perm)
    prefix = torch.zeros(perm.shape[0], gb + 1, dtype=torch.int64, device=dev)
    # distinct powers of two (bit 63 is the negative int64 minimum): sum == OR, and neither
    # the partial sums nor the differences below ever overflow
    prefix[:, 1:] = bits.cumsum(1)
    table = torch.where(sign[:, None] > 0, prefix, prefix[:, -1:] - prefix)
    masks = table.gather(1, idx)  # (P, GA)
    del idx
    wrong = torch.zeros(group.numel(), ga, dtype=torch.int64, device=dev)
    per_rank = torch.bincount(rank)
    start = 0
    for r, c_r in enumerate(per_rank.tolist()):
        wrong[:c_r] |= masks[start : start + c_r]
        start += c_r
    del masks
    right = ~wrong
    for c in range(gb):
        counts[:, c] += torch.bitwise_right_shift(right, c).bitwise_and_(1).sum(0)


def grid_counts(
    scores: torch.Tensor,
    labels: torch.Tensor,
    view_weights: Sequence[float],
    search_views: Sequence[int],
    values: Sequence[Sequence[float]],
    betas: Optional[Tuple[float, float]] = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> torch.Tensor:
    """Correct clouds for every weight vector of a product grid: ``(prod_i len(values[i]),)`` int64.

    View ``search_views[i]`` takes each value of ``values[i]``; the other views keep
    ``view_weights``. Candidates are in ``itertools.product(*values)`` order.

    Method (docs/method.md §5): with margins ``D[b, v, k] = S[b, v, k] - S[b, v, label_b]``
    (``S`` the per-view scores), cloud ``b`` is correct for ``w`` when no class violates
    ``F[b, k] + sum_{searched v} w_v D[b, v, k] < 0`` (``<= 0`` for ``k > label``), ``F`` the fixed
    views' part. Per cloud:

    1. Pruning: bounds of each class's margin over the whole grid (each term is linear in
       ``w_v``, so its extremes are at the smallest and largest grid value) mark the cloud as
       correct for every candidate, wrong for every candidate, or leave a few *active* classes.
    2. Meet in the middle: the searched views split into a left group (``GA`` candidates) and a
       right group (``GB <= 64`` candidates). For a class, ``mA[a] + mB[c] > 0`` holds for the
       right candidates ``c`` whose ``mB`` exceeds ``-mA[a]``: a suffix of ``mB`` sorted, found by
       binary search and stored as a 64-bit mask. OR-ing the masks of a cloud's active classes
       gives its wrong candidates; the correct ones are unpacked into the counts.

    Work is ``O(GA * pairs * log GB + GA * GB * clouds)`` instead of ``GA * GB * pairs``, and
    every temporary is bounded by ``max_bytes`` (at least one cloud's worth).
    The comparisons ``mB > -mA`` are exact on the float64 partial sums; with float32 scores and
    dyadic weights (0.25, 0.5, ...) those sums are exact, so ties are decided as ``argmax`` does.
    """
    return _grid_counts(_Scores(scores, betas), labels, view_weights, search_views, values, max_bytes)


def _grid_counts(
    src: _Scores,
    labels: torch.Tensor,
    view_weights: Sequence[float],
    search_views: Sequence[int],
    values: Sequence[Sequence[float]],
    max_bytes: int,
) -> torch.Tensor:
    b, v, k = src.num_clouds, src.num_views, src.num_classes
    lab_all = _check_labels(labels, b, k).to(src.data.device)
    w0 = _check_weights(view_weights, v)
    sv = tuple(int(i) for i in search_views)
    if len(values) != len(sv):
        raise ValueError(f"values must give one grid per searched view: {len(values)} grids for {len(sv)} views")
    vals = [_check_grid(g, f"values[{i}]") for i, g in enumerate(values)]
    if len(set(sv)) != len(sv) or any(i < 0 or i >= v for i in sv):
        raise ValueError(f"search_views must be distinct view indices in [0, {v}); got {list(sv)}")
    dev = src.data.device
    # right group: the trailing searched views while their product fits in one word
    n_right, gb = 0, 1
    while n_right < len(sv) and gb * len(vals[len(sv) - 1 - n_right]) <= _BITS:
        gb *= len(vals[len(sv) - 1 - n_right])
        n_right += 1
    left = sv[: len(sv) - n_right]  # the other (right) group is sv[len(sv) - n_right:]
    wa = _product(vals[: len(left)]).to(dev)  # (GA, |left|)
    wb = _product(vals[len(left) :]).to(dev)  # (GB, |right|)
    ga = wa.shape[0]
    counts = torch.zeros(ga, gb, dtype=torch.int64, device=dev)
    fixed = [i for i in range(v) if i not in sv]
    w_fixed = torch.tensor([w0[i] for i in fixed], dtype=torch.float64, device=dev)
    g_lo = torch.tensor([min(g) for g in vals], dtype=torch.float64, device=dev)
    g_hi = torch.tensor([max(g) for g in vals], dtype=torch.float64, device=dev)
    w_scale = float(w_fixed.abs().sum() + torch.maximum(g_lo.abs(), g_hi.abs()).sum())

    step = chunk_size(src.item_bytes * 2, b, max_bytes)
    for s in range(0, b, step):
        lab = lab_all[s : s + step]
        n = lab.shape[0]
        d = src.chunk(s, s + step)  # (n, V, K)
        if not src.is_margin:
            d = d - d.gather(2, lab[:, None, None].expand(n, v, 1))  # zero at the label
        f = torch.einsum("nvk,v->nk", d[:, fixed], w_fixed)  # (n, K)
        ds = d[:, list(sv)]  # (n, m, K)
        # rounding slack of a margin: relative to sum_v |w_v| * max |d| of the cloud
        tol = (_REL_TOL * w_scale) * d.abs().amax(dim=(1, 2))[:, None]  # (n, 1)
        del d
        hi, lo = f.clone(), f
        if sv:
            hi += torch.maximum(ds * g_lo[:, None], ds * g_hi[:, None]).sum(dim=1)
            lo = lo + torch.minimum(ds * g_lo[:, None], ds * g_hi[:, None]).sum(dim=1)
        others = torch.ones(n, k, dtype=torch.bool, device=dev)
        others[torch.arange(n, device=dev), lab] = False
        always_wrong = ((lo > tol) & others).any(dim=1)
        active = (hi > -tol) & others & ~always_wrong[:, None]
        n_active = active.sum(dim=1)
        counts += int(((n_active == 0) & ~always_wrong).sum())  # right for every candidate
        undecided = torch.nonzero(n_active > 0).flatten()
        if undecided.numel() == 0:
            continue
        # undecided clouds, most active classes first, in groups bounded by max_bytes
        order = undecided[torch.argsort(n_active[undecided], descending=True, stable=True)]
        sizes = n_active[order].cumsum(0)
        cap = max(1, max_bytes // (ga * 8 * 4))  # active classes per group: (P, GA) int64 temporaries
        pos = 0
        while pos < order.numel():
            done = int(sizes[pos - 1]) if pos else 0
            end = max(pos + 1, int(torch.searchsorted(sizes, done + cap, right=True)))
            _count_group(counts, order[pos:end], active, f, ds, lab, wa, wb)
            pos = end
    return counts.flatten()


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
# betas: accuracy of the whole (beta2, beta3) grid from per-cloud beta3 intervals


def beta_grid_accuracy(
    components: torch.Tensor,
    labels: torch.Tensor,
    view_weights: Sequence[float],
    beta2_grid: torch.Tensor,
    beta3_grid: torch.Tensor,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> torch.Tensor:
    """Accuracy (fraction) of every ``(beta2, beta3)`` on the grid, ``(G2, G3)`` float64.

    With ``d = c[k] - c[label]`` (view-aggregated components, float64), cloud ``b`` is correct
    at ``(beta2, beta3)`` when every other class ``k`` has ``a + beta3 d2 <= 0`` (``< 0`` when
    ``k < label``), ``a = d0 + beta2 d1``. For a fixed ``beta2`` this leaves one interval of
    ``beta3`` (strict ends become closed ones one ulp inside), so each ``(cloud, beta2)`` adds 1
    to a contiguous run of the sorted ``beta3`` grid: ``O(B * G2 * K)`` work instead of
    ``O(B * G2 * G3 * K)``. Clouds and ``beta2`` values are processed in chunks whose
    ``(chunk_beta2, chunk_B, K)`` temporaries stay under ``max_bytes``.
    """
    _check_components(components)
    b, v, _, k = components.shape
    lab_all = _check_labels(labels, b, k).to(components.device)
    dev = components.device
    w = torch.tensor(_check_weights(view_weights, v), dtype=torch.float64, device=dev)
    g2 = beta2_grid.to(device=dev, dtype=torch.float64).flatten()
    g3, order = torch.sort(beta3_grid.to(device=dev, dtype=torch.float64).flatten())
    if g2.numel() == 0 or g3.numel() == 0:
        raise ValueError(f"beta grids must be non-empty; got {g2.numel()} x {g3.numel()}")
    counts = torch.zeros(len(g2), len(g3) + 1, dtype=torch.int64, device=dev)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=dev)
    step_b = chunk_size(v * 3 * k * 8 * 2, b, max_bytes)
    for s in range(0, b, step_b):
        lab = lab_all[s : s + step_b]
        n = lab.shape[0]
        c = torch.einsum("nvck,v->cnk", components[s : s + step_b].to(torch.float64), w)  # (3, n, K)
        if not bool(torch.isfinite(c).all()):
            raise ValueError(f"components of clouds {s}..{s + n - 1} contain NaN or Inf")
        rows = torch.arange(n, device=dev)
        d = c - c[:, rows, lab][:, :, None]  # (3, n, K), zero at the label
        del c
        cls = torch.arange(k, device=dev)
        lower = cls[None, :] < lab[:, None]  # (n, K)
        others = cls[None, :] != lab[:, None]
        # pruning: the margin d0 + beta2 d1 + beta3 d2 of class k over the whole grid box lies
        # in [lo, hi]; hi < 0 never constrains, lo > 0 makes the cloud wrong everywhere
        b2_lo, b2_hi = float(g2.min()), float(g2.max())
        b3_lo, b3_hi = float(g3[0]), float(g3[-1])
        hi = d[0] + torch.maximum(b2_lo * d[1], b2_hi * d[1]) + torch.maximum(b3_lo * d[2], b3_hi * d[2])
        lo = d[0] + torch.minimum(b2_lo * d[1], b2_hi * d[1]) + torch.minimum(b3_lo * d[2], b3_hi * d[2])
        scale = max(1.0, abs(b2_lo), abs(b2_hi), abs(b3_lo), abs(b3_hi))
        tol = (_REL_TOL * 3 * scale) * d.abs().amax(dim=(0, 2))[:, None]  # (n, 1)
        never = ((lo > tol) & others).any(dim=1)
        active = (hi > -tol) & others & ~never[:, None]
        n_act = active.sum(dim=1)
        n_always = int(((n_act == 0) & ~never).sum())
        counts[:, 0] += n_always
        counts[:, -1] -= n_always
        keep = torch.nonzero(n_act > 0).flatten()
        if keep.numel() == 0:
            continue
        p_max = int(n_act.max())
        cols = torch.argsort((~active[keep]).to(torch.int8), dim=1, stable=True)[:, :p_max]  # active first
        valid = active[keep].gather(1, cols)  # (n_u, P)
        d = d[:, keep].gather(2, cols[None].expand(3, -1, -1))  # (3, n_u, P)
        lower = lower[keep].gather(1, cols)
        others = valid
        d0, d1, d2 = d[0], d[1], d[2]
        up = (d2 > 0) & others  # beta3 <= bound (or < when lower)
        down = (d2 < 0) & others  # beta3 >= bound (or > when lower)
        flat = (d2 == 0) & others  # no beta3: need a <= 0 (or < 0 when lower)
        # strict ends (k < label) and closed ends (k > label) are reduced separately
        up_l, up_h = up & lower, up & ~lower
        down_l, down_h = down & lower, down & ~lower
        d2s = torch.where(d2 == 0, torch.ones_like(d2), d2)
        any_flat = bool(flat.any())
        step_g = chunk_size(keep.numel() * p_max * 8, len(g2), max_bytes)
        for t in range(0, len(g2), step_g):
            a = d0[None] + g2[t : t + step_g, None, None] * d1[None]  # (g, n, K)
            bound = -a / d2s  # the beta3 at which class k ties with the label
            hi_closed = torch.where(up_h, bound, inf).amin(dim=-1)  # (g, n): beta3 <= hi_closed
            hi_open = torch.where(up_l, bound, inf).amin(dim=-1)  # beta3 < hi_open
            lo_closed = torch.where(down_h, bound, -inf).amax(dim=-1)  # beta3 >= lo_closed
            lo_open = torch.where(down_l, bound, -inf).amax(dim=-1)  # beta3 > lo_open
            del bound
            feasible = torch.ones_like(hi_closed, dtype=torch.bool)
            if any_flat:
                bad = ((a > 0) & flat) | ((a == 0) & flat & lower)
                feasible = ~bad.any(dim=-1)
            del a
            # sorted-grid index range [i_lo, i_hi) of the allowed beta3
            i_hi = torch.minimum(torch.searchsorted(g3, hi_closed.contiguous(), right=True),
                                 torch.searchsorted(g3, hi_open.contiguous(), right=False))
            i_lo = torch.maximum(torch.searchsorted(g3, lo_closed.contiguous(), right=False),
                                 torch.searchsorted(g3, lo_open.contiguous(), right=True))
            ok = (feasible & (i_hi > i_lo)).long()
            part = counts[t : t + step_g]
            part.scatter_add_(1, i_lo, ok)
            part.scatter_add_(1, i_hi, -ok)
    acc_sorted = counts[:, :-1].cumsum(dim=1).double() / max(b, 1)
    acc = torch.empty_like(acc_sorted)
    acc[:, order] = acc_sorted
    return acc.cpu()


def search_betas(
    components: torch.Tensor,
    labels: torch.Tensor,
    view_weights: Sequence[float],
    beta2_grid: torch.Tensor,
    beta3_grid: torch.Tensor,
    default: Optional[Tuple[float, float]] = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Tuple[float, float, float]:
    """Best ``(beta2, beta3)`` over the grid product, with fixed view weights.

    Args:
        components: ``(B, V, 3, K)``.
        labels: ``(B,)``.
        beta2_grid, beta3_grid: ``(G2,)`` and ``(G3,)`` candidate values.
        default: ``(beta2, beta3)`` kept on ties (it competes even when off the grid).

    Returns ``(beta2, beta3, accuracy)``; the first best in row-major grid order wins.
    """
    acc = beta_grid_accuracy(components, labels, view_weights, beta2_grid, beta3_grid, max_bytes)
    i = int(torch.argmax(acc).item())
    g3 = acc.shape[1]
    best2, best3, best_acc = float(beta2_grid.flatten()[i // g3]), float(beta3_grid.flatten()[i % g3]), float(acc.flatten()[i])
    if default is not None:
        b = max(components.shape[0], 1)
        d_acc = count_correct(components, labels, view_weights, (float(default[0]), float(default[1])),
                              max_bytes) / b
        if d_acc >= best_acc:
            return float(default[0]), float(default[1]), d_acc
    return best2, best3, best_acc


# --------------------------------------------------------------------------------------
# the two searches together


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


# --------------------------------------------------------------------------------------
# slow, obviously correct references (loops over every candidate, argmax of float64 logits)


def count_correct_naive(view_logits: torch.Tensor, labels: torch.Tensor, weights: Sequence[float]) -> int:
    """Loop over views: ``argmax_k sum_v w_v view_logits[:, v, k]`` (float64) == label, counted."""
    logits = torch.zeros(view_logits.shape[0], view_logits.shape[2], dtype=torch.float64)
    for vi, wv in enumerate(weights):
        logits += float(wv) * view_logits[:, vi].double()
    return int((torch.argmax(logits, dim=1) == labels).sum())


def grid_counts_naive(
    view_logits: torch.Tensor,
    labels: torch.Tensor,
    view_weights: Sequence[float],
    search_views: Sequence[int],
    values: Sequence[Sequence[float]],
) -> torch.Tensor:
    """:func:`grid_counts` by scoring every candidate with :func:`count_correct_naive`."""
    out = []
    for combo in itertools.product(*values):
        w = list(view_weights)
        for i, x in zip(search_views, combo):
            w[i] = x
        out.append(count_correct_naive(view_logits, labels, w))
    return torch.tensor(out, dtype=torch.int64)


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


def beta_grid_accuracy_naive(
    components: torch.Tensor,
    labels: torch.Tensor,
    view_weights: Sequence[float],
    beta2_grid: Sequence[float],
    beta3_grid: Sequence[float],
) -> torch.Tensor:
    """``(G2, G3)`` accuracies, each grid point scored by brute force in float64."""
    out = torch.zeros(len(beta2_grid), len(beta3_grid), dtype=torch.float64)
    for i, b2 in enumerate(beta2_grid):
        for j, b3 in enumerate(beta3_grid):
            per_view = components[:, :, 0].double() + float(b2) * components[:, :, 1].double() \
                + float(b3) * components[:, :, 2].double()
            out[i, j] = count_correct_naive(per_view, labels, view_weights) / max(components.shape[0], 1)
    return out


def search_betas_naive(
    components: torch.Tensor,
    labels: torch.Tensor,
    view_weights: Sequence[float],
    beta2_grid: Sequence[float],
    beta3_grid: Sequence[float],
    default: Optional[Tuple[float, float]] = None,
) -> Tuple[float, float, float]:
    """Brute-force :func:`search_betas`: row-major loop, the default kept unless strictly beaten."""
    acc = beta_grid_accuracy_naive(components, labels, view_weights, beta2_grid, beta3_grid)
    best: Optional[Tuple[float, float, float]] = None
    if default is not None:
        per_view = components[:, :, 0].double() + default[0] * components[:, :, 1].double() \
            + default[1] * components[:, :, 2].double()
        best = (float(default[0]), float(default[1]),
                count_correct_naive(per_view, labels, view_weights) / max(components.shape[0], 1))
    for i, b2 in enumerate(beta2_grid):
        for j, b3 in enumerate(beta3_grid):
            if best is None or float(acc[i, j]) > best[2]:
                best = (float(b2), float(b3), float(acc[i, j]))
    assert best is not None
    return best
