"""Vectorised searches vs brute force over every candidate (SPEC §5)."""

from __future__ import annotations

import itertools

import pytest
import torch

from pointcalip.aggregation import (accuracy, beta_grid_accuracy, logits_from_components, run_search,
                                    search_betas, search_view_weights)
from pointcalip.attention import combine_betas


def _data(seed: int, b: int = 60, v: int = 4, k: int = 6):
    g = torch.Generator().manual_seed(seed)
    comps = torch.randn(b, v, 3, k, generator=g)
    comps[:, :, 1:] *= 3.0  # make the betas matter
    return comps, torch.randint(0, k, (b,), generator=g)


@pytest.mark.parametrize("seed", range(3))
def test_beta_grid_matches_brute_force(seed: int) -> None:
    comps, labels = _data(seed)
    w = [1.0, 0.5, 0.75, 0.25]
    g2, g3 = torch.linspace(0.001, 2.0, 17), torch.linspace(-0.5, 1.0, 13)
    fast = beta_grid_accuracy(comps, labels, w, g2, g3)
    brute = torch.tensor([[accuracy(logits_from_components(comps.double(), w, float(b2), float(b3)), labels)
                           for b3 in g3] for b2 in g2])
    torch.testing.assert_close(fast, brute.float(), atol=1e-6, rtol=0)
    assert fast.max() > fast.min()  # the grid is not flat, so the test can fail


def test_beta_grid_unsorted_grid() -> None:
    comps, labels = _data(7)
    g3 = torch.tensor([0.3, -0.2, 0.9, 0.0])
    fast = beta_grid_accuracy(comps, labels, [1.0] * 4, torch.tensor([0.5, 1.5]), g3)
    for j, b3 in enumerate(g3):
        assert fast[1, j] == pytest.approx(accuracy(logits_from_components(comps, [1.0] * 4, 1.5, float(b3)), labels))


def test_view_weight_search_matches_brute_force() -> None:
    comps, labels = _data(3, v=3)
    view_logits = combine_betas(comps, 0.7, 0.1)
    grid = (0.25, 0.5, 0.75, 1.0)
    weights, acc = search_view_weights(view_logits, labels, grid, chunk=5)
    best = max(accuracy(torch.einsum("bvk,v->bk", view_logits, torch.tensor(c)), labels)
               for c in itertools.product(grid, repeat=3))
    assert acc == pytest.approx(best)
    assert accuracy(torch.einsum("bvk,v->bk", view_logits, torch.tensor(weights)), labels) == pytest.approx(best)


def test_defaults_win_ties() -> None:
    comps = torch.zeros(10, 2, 3, 4)
    comps[:, :, 0, 0] = 1.0  # every candidate predicts class 0
    labels = torch.zeros(10, dtype=torch.long)
    res = run_search(comps, labels, "calip", (1.0, 1.0), 1.12, 0.02, "val")
    assert res.view_weights == (1.0, 1.0) and (res.beta2, res.beta3) == (1.12, 0.02)
    assert res.selection_accuracy == 1.0 and res.split == "val" and res.num_samples == 10


def test_search_betas_returns_grid_best() -> None:
    comps, labels = _data(11)
    g2, g3 = torch.linspace(0.001, 2.0, 20), torch.linspace(0.001, 0.1, 20)
    b2, b3, acc = search_betas(comps, labels, [1.0] * 4, g2, g3)
    assert acc == pytest.approx(beta_grid_accuracy(comps, labels, [1.0] * 4, g2, g3).max().item())
    assert accuracy(logits_from_components(comps, [1.0] * 4, b2, b3), labels) == pytest.approx(acc)


def test_pointclip_search_ignores_betas() -> None:
    comps, labels = _data(5)
    res = run_search(comps, labels, "pointclip", [1.0] * 4, 1.12, 0.02, "test")
    assert (res.beta2, res.beta3) == (0.0, 0.0)
    assert res.selection_accuracy == pytest.approx(
        accuracy(logits_from_components(comps, res.view_weights, 0.0, 0.0), labels))
