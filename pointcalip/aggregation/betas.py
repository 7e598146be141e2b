"""Search of ``(beta2, beta3)``: accuracy of the whole grid from per-cloud ``beta3`` intervals
(docs/method.md §5), and its loop reference."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from pointcalip.aggregation.common import (
    _REL_TOL, DEFAULT_MAX_BYTES, _check_components, _check_labels, _check_weights, chunk_size, count_correct,
    count_correct_naive)


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
# slow, obviously correct references (loops over every candidate, argmax of float64 logits)


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
