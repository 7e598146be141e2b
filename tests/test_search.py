"""Fast searches vs the brute-force references in pointcalip.aggregation (docs/method.md §5)."""

from __future__ import annotations


import pytest
import torch

from pointcalip.aggregation import (
    V2_SEARCH_VIEWS, accuracy, beta_grid_accuracy, beta_grid_accuracy_naive, chunk_size, coordinate_ascent_naive,
    count_correct, count_correct_naive, grid_counts, grid_counts_naive, logits_from_components, run_search,
    search_betas, search_betas_naive, search_view_weights, search_view_weights_naive)
from pointcalip.errors import ConfigError

GRID = (0.25, 0.5, 0.75, 1.0)


def _data(seed: int, b: int = 60, v: int = 4, k: int = 6, ties: bool = False):
    g = torch.Generator().manual_seed(seed)
    if ties:  # small integers: many exact ties between classes
        comps = torch.randint(-2, 3, (b, v, 3, k), generator=g).float()
    else:
        comps = torch.randn(b, v, 3, k, generator=g)
        comps[:, :, 1:] *= 3.0  # make the betas matter
    return comps, torch.randint(0, k, (b,), generator=g)


def _per_view(comps: torch.Tensor, b2: float, b3: float) -> torch.Tensor:
    return comps[:, :, 0] + b2 * comps[:, :, 1] + b3 * comps[:, :, 2]


def test_chunk_size_bounds_every_temporary() -> None:
    assert chunk_size(100, 1000, 2500) == 25
    assert chunk_size(100, 10, 10 ** 9) == 10  # never more than the total
    assert chunk_size(10 ** 9, 10, 256) == 1  # one item even when it alone exceeds the budget
    assert chunk_size(8, 0, 64) == 1
    for item, total, budget in [(7, 1000, 100), (1156 * 8, 46_000, 256 * 2 ** 20), (3, 5, 3)]:
        n = chunk_size(item, total, budget)
        assert n * item <= budget and (n == total or (n + 1) * item > budget)
    with pytest.raises(ValueError, match="item_bytes"):
        chunk_size(0, 10, 10)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ties", [False, True])
def test_beta_grid_matches_brute_force(seed: int, ties: bool) -> None:
    comps, labels = _data(seed, ties=ties)
    w = [1.0, 0.5, 0.75, 0.25]
    if ties:  # dyadic grids, so exact ties with the label happen and must follow argmax
        g2, g3 = torch.arange(0, 9) / 4.0, torch.arange(-4, 5) / 8.0
    else:
        g2, g3 = torch.linspace(0.001, 2.0, 17), torch.linspace(-0.5, 1.0, 13)
    fast = beta_grid_accuracy(comps, labels, w, g2, g3)
    brute = beta_grid_accuracy_naive(comps, labels, w, g2.tolist(), g3.tolist())
    torch.testing.assert_close(fast, brute, atol=0, rtol=0)
    small = beta_grid_accuracy(comps, labels, w, g2, g3, max_bytes=500)  # many tiny chunks
    torch.testing.assert_close(small, brute, atol=0, rtol=0)
    assert fast.max() > fast.min()  # the grid is not flat, so the test can fail


def test_beta_grid_unsorted_grid() -> None:
    comps, labels = _data(7)
    g3 = torch.tensor([0.3, -0.2, 0.9, 0.0])
    fast = beta_grid_accuracy(comps, labels, [1.0] * 4, torch.tensor([0.5, 1.5]), g3)
    brute = beta_grid_accuracy_naive(comps, labels, [1.0] * 4, [0.5, 1.5], g3.tolist())
    torch.testing.assert_close(fast, brute, atol=0, rtol=0)


@pytest.mark.parametrize("seed", range(2))
def test_search_betas_matches_reference(seed: int) -> None:
    comps, labels = _data(11 + seed)
    g2, g3 = torch.linspace(0.001, 2.0, 12), torch.linspace(0.001, 0.1, 9)
    for default in (None, (1.12, 0.02)):
        fast = search_betas(comps, labels, [1.0] * 4, g2, g3, default=default)
        slow = search_betas_naive(comps, labels, [1.0] * 4, g2.tolist(), g3.tolist(), default=default)
        assert fast == pytest.approx(slow, abs=1e-12)
    b2, b3, acc = search_betas(comps, labels, [1.0] * 4, g2, g3)
    assert accuracy(logits_from_components(comps.double(), [1.0] * 4, b2, b3), labels) == pytest.approx(acc)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ties", [False, True])
def test_grid_counts_match_brute_force(seed: int, ties: bool) -> None:
    comps, labels = _data(20 + seed, b=50, v=5, k=7, ties=ties)
    view_logits = _per_view(comps, 0.5, 0.25)
    start = [1.0, 0.5, 0.75, 0.25, 1.0]
    cases = [((0, 2, 3), [GRID] * 3), ((0, 1, 2, 3, 4), [(0.0, 0.5, 1.0)] * 5), ((4,), [(0.25, 2.0)]),
             ((), []), ((1, 3), [tuple(i / 8 for i in range(9)), (0.5, 1.0)])]  # 9 * ... > 64 per word
    for views, values in cases:
        slow = grid_counts_naive(view_logits, labels, start, views, values)
        for max_bytes in (10 ** 9, 3000):
            fast = grid_counts(view_logits, labels, start, views, values, max_bytes=max_bytes)
            assert torch.equal(fast, slow), (views, max_bytes)
        # components + betas give the same counts as the per-view logits
        assert torch.equal(grid_counts(comps, labels, start, views, values, betas=(0.5, 0.25)), slow)
    assert count_correct(view_logits, labels, start) == count_correct_naive(view_logits, labels, start)


@pytest.mark.parametrize("seed", range(3))
def test_exhaustive_search_matches_brute_force(seed: int) -> None:
    comps, labels = _data(30 + seed, b=60, v=5, k=6)
    view_logits = _per_view(comps, 0.7, 0.1)
    start = (0.75, 0.75, 1.0, 1.0, 1.0)
    for views in (None, (2, 3, 4)):
        res = search_view_weights(view_logits, labels, GRID, start=start, search_views=views, strategy="exhaustive")
        ref = search_view_weights_naive(view_logits, labels, GRID, start=start, search_views=views)
        assert (res.weights, res.accuracy) == (ref[0], pytest.approx(ref[1]))
        assert res.strategy == "exhaustive" and res.candidates == 4 ** (5 if views is None else 3)
        if views is not None:  # unsearched views keep their start weight
            assert res.weights[:2] == (0.75, 0.75)
        assert count_correct_naive(view_logits, labels, res.weights) == res.correct


def test_exhaustive_start_off_grid_and_ties() -> None:
    comps, labels = _data(40, b=60, v=3, k=5)
    view_logits = _per_view(comps, 0.7, 0.1)
    start = (0.6, 1.0, 0.3)  # off the grid: it competes, and wins ties
    res = search_view_weights(view_logits, labels, GRID, start=start, strategy="exhaustive")
    ref_w, ref_acc = search_view_weights_naive(view_logits, labels, GRID, start=start)
    assert res.weights == ref_w and res.accuracy == pytest.approx(ref_acc)
    # every candidate equally good: the start is kept, on or off the grid
    flat = torch.zeros(10, 3, 4)
    flat[:, :, 2] = 1.0
    lab = torch.full((10,), 2)
    for s in ((1.0, 1.0, 1.0), (0.6, 0.3, 0.9)):
        r = search_view_weights(flat, lab, GRID, start=s, strategy="exhaustive")
        assert r.weights == s and r.accuracy == 1.0


@pytest.mark.parametrize("seed", range(2))
def test_coordinate_matches_its_reference(seed: int) -> None:
    comps, labels = _data(50 + seed, b=40, v=6, k=5)
    view_logits = _per_view(comps, 0.7, 0.1)
    start = (1.0,) * 6
    res = search_view_weights(view_logits, labels, GRID, start=start, strategy="coordinate", block=2, restarts=1,
                              seed=seed)
    ref_w, ref_n = coordinate_ascent_naive(view_logits, labels, GRID, start, range(6), block=2, restarts=1,
                                           seed=seed)
    assert res.weights == ref_w and res.correct == ref_n and res.strategy == "coordinate"
    assert res.correct >= count_correct_naive(view_logits, labels, start)
    assert res.correct <= round(search_view_weights_naive(view_logits, labels, GRID, start)[1] * 40)
    assert "coordinate ascent" in res.detail and "not guaranteed global" in res.detail


def test_coordinate_with_one_block_is_exhaustive() -> None:
    comps, labels = _data(60, b=50, v=3, k=5)
    view_logits = _per_view(comps, 0.3, 0.2)
    res = search_view_weights(view_logits, labels, GRID, strategy="coordinate", block=3, restarts=0)
    exh = search_view_weights(view_logits, labels, GRID, strategy="exhaustive")
    assert (res.weights, res.correct) == (exh.weights, exh.correct)


def test_strategy_auto_and_limits() -> None:
    comps, labels = _data(61, b=20, v=10, k=4)
    view_logits = _per_view(comps, 0.3, 0.2)
    v2_start = (0.75,) * 3 + (1.0,) * 7
    res = search_view_weights(view_logits, labels, GRID, start=v2_start, search_views=V2_SEARCH_VIEWS)
    assert res.strategy == "exhaustive" and res.candidates == 4 ** 7 and res.weights[:3] == (0.75,) * 3
    full = search_view_weights(view_logits, labels, GRID, start=v2_start, restarts=0)
    assert full.strategy == "coordinate" and full.candidates < 4 ** 10
    with pytest.raises(ConfigError, match="coordinate"):
        search_view_weights(view_logits, labels, tuple(i / 8 for i in range(8)), strategy="exhaustive")
    with pytest.raises(ValueError, match="strategy"):
        search_view_weights(view_logits, labels, GRID, strategy="greedy")
    with pytest.raises(ValueError, match="search_views"):
        search_view_weights(view_logits, labels, GRID, search_views=(3, 10))


def test_defaults_win_ties() -> None:
    comps = torch.zeros(10, 2, 3, 4)
    comps[:, :, 0, 0] = 1.0  # every candidate predicts class 0
    labels = torch.zeros(10, dtype=torch.long)
    res = run_search(comps, labels, "calip", (1.0, 1.0), 1.12, 0.02, "val")
    assert res.view_weights == (1.0, 1.0) and (res.beta2, res.beta3) == (1.12, 0.02)
    assert res.selection_accuracy == 1.0 and res.split == "val" and res.num_samples == 10
    assert res.strategy == "exhaustive" and res.search_views == (0, 1) and res.beta_candidates == 200 * 200


def test_run_search_with_search_views() -> None:
    comps, labels = _data(70, b=50, v=5, k=6)
    start = (0.75, 0.75, 1.0, 1.0, 1.0)
    res = run_search(comps, labels, "calip", start, 1.12, 0.02, "test", beta_steps=10, search_views=(2, 3, 4))
    assert res.view_weights[:2] == (0.75, 0.75) and res.search_views == (2, 3, 4)
    ref = search_view_weights_naive(_per_view(comps.double(), res.beta2, res.beta3), labels, GRID, start, (2, 3, 4))
    assert res.view_weights == ref[0] and res.selection_accuracy == pytest.approx(ref[1])
    assert res.strategy == "exhaustive" and res.view_candidates == 64


def test_pointclip_search_ignores_betas() -> None:
    comps, labels = _data(5)
    res = run_search(comps, labels, "pointclip", [1.0] * 4, 1.12, 0.02, "test")
    assert (res.beta2, res.beta3) == (0.0, 0.0) and res.beta_candidates == 0
    assert res.selection_accuracy == pytest.approx(
        accuracy(logits_from_components(comps.double(), res.view_weights, 0.0, 0.0), labels))


def test_logits_from_components_chunked() -> None:
    comps, _ = _data(80, b=37, v=3, k=5)
    w = [1.0, 0.5, 0.25]
    whole = logits_from_components(comps.double(), w, 1.12, 0.02)
    c = comps.double()
    loop = sum(w[v] * (c[:, v, 0] + 1.12 * c[:, v, 1] + 0.02 * c[:, v, 2]) for v in range(3))
    torch.testing.assert_close(whole, loop / 3 ** 0.5)
    torch.testing.assert_close(logits_from_components(comps.double(), w, 1.12, 0.02, max_bytes=200), whole)
    with pytest.raises(ValueError, match="components"):
        logits_from_components(comps[:, :, :1], w, 1.12, 0.02)
    with pytest.raises(ValueError, match="view_weights"):
        logits_from_components(comps, [1.0], 1.12, 0.02)
