"""CALIP attention vs an explicit per-view loop, and view aggregation (docs/method.md §4-§5)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pointcalip.aggregation import aggregate_views, logits_from_components
from pointcalip.attention import calip_components, calip_logits_naive, combine_betas


reference_logits = calip_logits_naive


def _features(seed: int, b: int = 5, l: int = 49, d: int = 16, k: int = 7):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1),
            F.normalize(torch.randn(b, l, d, generator=g, dtype=torch.float64), dim=-1),
            F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=-1))


@pytest.mark.parametrize("seed", range(4))
def test_components_match_reference(seed: int) -> None:
    g, s, t = _features(seed)
    beta2, beta3 = 0.3 + seed, 0.05 * seed + 0.01
    comps = calip_components(g, s, t, logit_scale=100.0, alpha=2.0)
    assert comps.shape == (5, 3, 7)
    ref = reference_logits(g, s, t, 100.0, 2.0, beta2, beta3)
    torch.testing.assert_close(combine_betas(comps, beta2, beta3), ref, rtol=1e-10, atol=1e-9)
    # The components themselves: beta2 = beta3 = 0 is plain CLIP; each beta isolates one term.
    torch.testing.assert_close(comps[:, 0], reference_logits(g, s, t, 100.0, 2.0, 0, 0))
    torch.testing.assert_close(comps[:, 1], reference_logits(g, s, t, 100.0, 2.0, 1, 0) - comps[:, 0])


def test_alpha_changes_only_attention_terms() -> None:
    g, s, t = _features(9)
    c1, c2 = calip_components(g, s, t, 1.0, 1.0), calip_components(g, s, t, 1.0, 5.0)
    torch.testing.assert_close(c1[:, 0], c2[:, 0])
    assert not torch.allclose(c1[:, 1:], c2[:, 1:])


def test_bad_shapes_name_the_tensor() -> None:
    g, s, t = _features(0)
    with pytest.raises(ValueError, match="spatial"):
        calip_components(g, s[:, :, :3], t, 1.0)
    with pytest.raises(ValueError, match="text"):
        calip_components(g, s, t[:, :3], 1.0)


def test_aggregation_weights_and_scale() -> None:
    torch.manual_seed(0)
    comps = torch.randn(4, 6, 3, 5, dtype=torch.float64)
    w = [1.0, 0.5, 0.0, 0.25, 1.0, 0.75]
    logits = logits_from_components(comps, w, 1.12, 0.02)
    loop = sum(w[v] * (comps[:, v, 0] + 1.12 * comps[:, v, 1] + 0.02 * comps[:, v, 2]) for v in range(6))
    torch.testing.assert_close(logits, loop / math.sqrt(6))
    # A zero weight removes that view: changing view 2 changes nothing.
    other = comps.clone()
    other[:, 2] = torch.randn_like(other[:, 2]) * 100
    torch.testing.assert_close(logits_from_components(other, w, 1.12, 0.02), logits)
    with pytest.raises(ValueError, match="view_weights"):
        aggregate_views(comps[:, :, 0], torch.ones(5))
