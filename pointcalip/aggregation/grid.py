"""Exact counts of correct clouds for every view-weight vector of a product grid
(meet in the middle over the searched views; docs/method.md §5), and its loop reference."""

from __future__ import annotations

import itertools
from typing import Optional, Sequence, Tuple

import torch

from pointcalip.aggregation.common import (
    _BITS, _REL_TOL, DEFAULT_MAX_BYTES, _check_grid, _check_labels, _check_weights, _product, _Scores, chunk_size,
    count_correct_naive)


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
