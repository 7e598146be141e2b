"""Projection kernel vs an explicit loop over clouds, views and points (docs/method.md §2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pointcalip.projection import (
    ProjectionConfig,
    depth_to_images,
    get_preset,
    project_depth,
    project_depth_naive,
    project_images,
)
from pointcalip.errors import ConfigError


def _random_clouds(seed: int, b: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(b, n, 3, generator=g)
    return p / p.norm(dim=-1, keepdim=True).amax(dim=1, keepdim=True).clamp_min(1e-6) * torch.rand(b, 1, 1, generator=g).add(0.5)


@pytest.mark.parametrize("preset", ["pointclip", "pointclip10"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_loop_reference(preset: str, seed: int) -> None:
    cfg = get_preset(preset)
    pts = _random_clouds(seed + 10 * len(preset), 2, 150)
    fast = project_depth(pts, cfg).numpy()
    ref = project_depth_naive(pts.numpy(), cfg)
    # Index decisions may flip for a point exactly on a pixel border in float32; none here.
    assert fast.shape == (2, cfg.num_views, cfg.resolution, cfg.resolution)
    np.testing.assert_allclose(fast, ref, atol=1e-6, rtol=1e-6)
    assert (fast > 0).sum() > 100


def test_preset_tables() -> None:
    p6, p10 = get_preset("pointclip"), get_preset("pointclip10")
    assert (p6.num_views, p6.distance, p6.resolution) == (6, 1.6, 128)
    assert (p10.num_views, p10.distance, p10.resolution) == (10, 1.4, 224)
    assert p10.views[:4] == p6.views[:4] and p10.views[8:] == p6.views[4:]
    assert p10.views[4] == pytest.approx((5 * math.pi / 4, -math.pi / 4, math.pi / 2))
    with pytest.raises(ConfigError, match="pointclip10"):
        get_preset("nope")


def test_harmonic_mean_in_one_pixel() -> None:
    cfg = ProjectionConfig("custom", ((0.0, 0.0, 0.0),), 1.0, 8)
    # Two points on the optical axis at depths 1.0 + 0.5 and 1.0 - 0.25 land in one pixel.
    pts = torch.tensor([[[0.0, 0.0, 0.5], [0.0, 0.0, -0.25]]])
    depth = project_depth(pts, cfg)[0, 0]
    nz = depth[depth > 0]
    assert nz.numel() == 1
    assert nz.item() == pytest.approx(2 / (1 / 1.5 + 1 / 0.75), rel=1e-6)


def test_point_order_invariance_and_behind_camera() -> None:
    cfg = get_preset("pointclip")
    pts = _random_clouds(3, 3, 500)
    perm = torch.randperm(500)
    np.testing.assert_allclose(project_depth(pts, cfg), project_depth(pts[:, perm], cfg), atol=1e-6)
    far = torch.tensor([[[0.0, 0.0, -5.0]]])  # z = -5 + 1.6 < 0 in view (0, 0, pi/2)
    assert project_depth(far, ProjectionConfig("c", (cfg.views[0],), 1.6, 16)).abs().sum() == 0


def test_batches_are_independent() -> None:
    cfg = get_preset("pointclip")
    pts = _random_clouds(4, 4, 300)
    full = project_depth(pts, cfg)
    for b in range(4):
        torch.testing.assert_close(full[b : b + 1], project_depth(pts[b : b + 1], cfg))


def test_images_resize_and_channels() -> None:
    cfg = get_preset("pointclip")
    pts = _random_clouds(5, 2, 400)
    depth = project_depth(pts, cfg)
    imgs = depth_to_images(depth, 224)
    assert imgs.shape == (2, 6, 3, 224, 224)
    assert torch.equal(imgs[:, :, 0], imgs[:, :, 2])
    # align_corners=True keeps the corner pixels exactly.
    torch.testing.assert_close(imgs[:, :, 0, 0, 0], depth[:, :, 0, 0])
    torch.testing.assert_close(imgs[:, :, 0, -1, -1], depth[:, :, -1, -1])
    # 224 maps are not resized.
    d224 = project_depth(pts, get_preset("pointclip10"))
    assert torch.equal(depth_to_images(d224, 224)[:, :, 1], d224)
    norm = project_images(pts, cfg, 224, mean=(0.5, 0.5, 0.5), std=(2.0, 2.0, 2.0))
    torch.testing.assert_close(norm, (imgs - 0.5) / 2.0)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        project_depth(torch.zeros(5, 3), get_preset("pointclip"))
