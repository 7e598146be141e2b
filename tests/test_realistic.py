"""Realistic (PointCLIP V2) projection vs its loop references, invariances, errors (docs/method.md §9)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pointcalip.projection.realistic as rl
from pointcalip.errors import DegenerateCloudError, EmptyCloudError, NonFiniteError, PointCloudError
from pointcalip.projection import get_projection, maps_to_images, projection_from_dict, projection_names
from pointcalip.projection.realistic import (
    REALISTIC,
    RealisticProjection,
    camera_directions,
    gaussian_weights,
    grid_cells,
    grid_cells_naive,
    realistic_maps,
    realistic_maps_naive,
)

# Camera directions of the ten views (object frame), in order.
TABLE_DIRECTIONS = np.array(
    [
        (0.664, 0.342, 0.664),
        (0.664, 0.342, -0.664),
        (-0.664, 0.342, -0.664),
        (-0.664, 0.342, 0.664),
        (0, 0.342, 0.940),
        (0.940, 0.342, 0),
        (0, 0.342, -0.940),
        (-0.940, 0.342, 0),
        (0, -0.978, 0.208),
        (0, 0.978, -0.208),
    ]
)


def _random_clouds(seed: int, b: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(b, n, 3, generator=g) * torch.rand(b, 1, 3, generator=g).add(0.3)
    return p + torch.randn(b, 1, 3, generator=g)


def _adversarial_clouds() -> dict:
    """Clouds whose points sit on cell boundaries, repeat, or span fewer than three dimensions."""
    g = torch.Generator().manual_seed(7)
    lattice = torch.stack(torch.meshgrid(*[torch.arange(-4, 5, dtype=torch.float32)] * 3, indexing="ij"), -1)
    lattice = lattice.reshape(-1, 3) / 4  # grid-aligned values; centre and mid-planes included
    keep = torch.randperm(lattice.shape[0], generator=g)[:400]
    planar = torch.rand(300, 3, generator=g) * 2 - 1
    planar[:, 2] = 0.25
    tilted_plane = torch.rand(300, 3, generator=g)
    tilted_plane[:, 1] = tilted_plane[:, 0] - tilted_plane[:, 2]  # x - y - z = 0
    line = torch.linspace(-1, 1, 257).unsqueeze(1) * torch.tensor([[1.0, 0.5, -0.25]])
    axis_line = torch.zeros(200, 3)
    axis_line[:, 0] = torch.linspace(-3, 5, 200)
    dup = torch.rand(40, 3, generator=g).repeat(8, 1)  # every point eight times
    symmetric = torch.cat([lattice[keep[:100]], -lattice[keep[:100]]])  # centred on the bbox centre
    return {
        "lattice": lattice[keep],
        "planar": planar,
        "tilted_plane": tilted_plane,
        "line": line,
        "axis_line": axis_line,
        "duplicates": dup,
        "two_points": torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]),
        "two_points_axis": torch.tensor([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]]),
        "symmetric": symmetric,
    }


def _long_z_clouds() -> torch.Tensor:
    """``(10, 64, 3)``: cloud ``v`` is elongated along view ``v``'s camera direction, so z is the
    longest side of its bounding box there and its z-extreme points reach z-hat = -1 and +1."""
    g = torch.Generator().manual_seed(7)
    dirs = torch.tensor(TABLE_DIRECTIONS, dtype=torch.float32)
    return torch.randn(10, 64, 3, generator=g) * 0.1 + torch.linspace(-1, 1, 64).view(1, 64, 1) * dirs.view(10, 1, 3)


def _check_against_naive(pts: torch.Tensor) -> None:
    cells = grid_cells(pts)
    idx, val = grid_cells_naive(pts.numpy())
    np.testing.assert_array_equal(cells.cell_index.numpy(), idx)
    np.testing.assert_array_equal(cells.cell_value.numpy(), val)
    fast = realistic_maps(pts).numpy()
    ref = realistic_maps_naive(pts.numpy())
    assert fast.shape == ref.shape == (pts.shape[0], 10, 110, 110)
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed,b,n", [(0, 2, 1024), (1, 1, 1024), (2, 3, 300), (3, 2, 37)])
def test_matches_naive_on_random_clouds(seed: int, b: int, n: int) -> None:
    _check_against_naive(_random_clouds(100 + seed, b, n))


def test_matches_naive_on_adversarial_clouds() -> None:
    for name, cloud in _adversarial_clouds().items():
        try:
            _check_against_naive(cloud.unsqueeze(0))
        except AssertionError as err:  # pragma: no cover - name the failing cloud
            raise AssertionError(f"cloud {name!r}: {err}") from None
    _check_against_naive(_long_z_clouds())


def test_boundary_values_occur_in_adversarial_clouds() -> None:
    """The set really exercises exact boundaries: fx = 56 on mid-planes, fz = 0.99999994 -> slice 1."""
    f32 = np.float32
    assert ((f32(-1) + 1) / 2 + f32(0.2)) / f32(1.2) * f32(6) == f32(0.99999994)
    cells = grid_cells(_long_z_clouds())
    k, val = cells.cell_index[..., 0], cells.cell_value
    own_view = k[torch.arange(10), torch.arange(10)]  # (10, 64): cloud v seen in view v
    assert int((own_view == 1).any(-1).sum()) >= 5  # z-hat = -1 exactly: fz = 0.99999994
    assert bool((val[k == 1] == 1.0).all()) and bool((val[k == 6] <= 6.0).all())
    assert bool(((k >= 1) & (k <= 7)).all())
    clouds = _adversarial_clouds()
    # On the lattice, many points land exactly on x-hat = 0 (fx = 56.0) in the axis views; the
    # float32 rotation noise then decides their row. Both neighbours 56 and 57 occur.
    rows = grid_cells(clouds["symmetric"].unsqueeze(0)).cell_index[0, :, :, 1]
    assert bool((rows == 56).any()) and bool((rows == 57).any())


def test_point_order_and_batch_size_are_bit_exact() -> None:
    pts = _random_clouds(5, 16, 1024)
    full = realistic_maps(pts)
    for b in (0, 9, 15):
        assert torch.equal(full[b : b + 1], realistic_maps(pts[b : b + 1]))
    perm = torch.randperm(1024, generator=torch.Generator().manual_seed(0))
    assert torch.equal(full, realistic_maps(pts[:, perm]))
    cells, cells_perm = grid_cells(pts), grid_cells(pts[:, perm])
    assert torch.equal(cells.cell_index[:, :, perm], cells_perm.cell_index)
    assert torch.equal(cells.cell_value[:, :, perm], cells_perm.cell_value)


def test_tiling_changes_no_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    pts = _random_clouds(6, 2, 300)
    base = realistic_maps(pts)
    for tile in (3, 7, 1000):
        monkeypatch.setattr(rl, "TILE_VIEWS", tile)
        assert torch.equal(realistic_maps(pts), base)


def test_degenerate_and_bad_inputs() -> None:
    pts = _random_clouds(8, 3, 50)
    pts[1] = torch.tensor([0.3, -0.2, 0.1])
    with pytest.raises(DegenerateCloudError, match=r"points\[1\].*all its points equal") as err:
        realistic_maps(pts)
    assert isinstance(err.value, PointCloudError)
    with pytest.raises(DegenerateCloudError):
        grid_cells(torch.ones(1, 1, 3))
    with pytest.raises(DegenerateCloudError):
        realistic_maps_naive(np.ones((1, 5, 3), dtype=np.float32))
    nan = _random_clouds(9, 2, 20)
    nan[1, 3, 2] = float("nan")
    with pytest.raises(NonFiniteError, match=r"points\[1\]"):
        realistic_maps(nan)
    with pytest.raises(EmptyCloudError):
        realistic_maps(torch.zeros(1, 0, 3))
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        realistic_maps(torch.zeros(5, 3))


def test_translation_and_scale_near_invariance() -> None:
    pts = _random_clouds(10, 4, 1024)
    moved = pts * 2.5 + torch.tensor([0.3, -1.0, 2.0])
    a, b = grid_cells(pts), grid_cells(moved)
    moved_cells = (a.cell_index != b.cell_index).any(-1).float().mean().item()
    assert moved_cells < 2e-3  # only float32 rounding at cell boundaries
    diff = (realistic_maps(pts) - realistic_maps(moved)).abs()
    assert diff.mean().item() < 1e-3
    assert torch.quantile(diff.flatten()[:: 97], 0.99).item() < 1e-5  # nearly all pixels agree
    # A different cloud gives clearly different images (the checks above are not vacuous).
    other = (realistic_maps(pts) - realistic_maps(_random_clouds(11, 4, 1024))).abs().mean().item()
    assert other > 0.05


def test_output_shape_range_and_background() -> None:
    pts = _random_clouds(12, 2, 600)
    maps = realistic_maps(pts)
    assert maps.shape == (2, 10, 110, 110) and maps.dtype == torch.float32
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    flat = maps.flatten(2)
    assert torch.equal(flat.amin(-1), torch.zeros(2, 10))  # nearest smoothed depth is black
    assert torch.equal(flat.amax(-1), torch.ones(2, 10))
    # Background: x-hat, y-hat lie in [-0.8, 0.8], so the border of every image is empty.
    assert bool((maps[..., :5, :] == 1).all()) and bool((maps[..., :, -5:] == 1).all())
    assert float((maps < 1).float().mean()) > 0.1  # and the object covers a good part


def test_images_resize_channels_and_ignore_mean_std() -> None:
    proj = get_projection("realistic")
    assert proj.supports_normalization is False
    pts = _random_clouds(13, 2, 400)
    img = proj.images(pts)
    assert img.shape == (2, 10, 3, 224, 224) and img.dtype == torch.float32
    assert torch.equal(img[:, :, 0], img[:, :, 1]) and torch.equal(img[:, :, 0], img[:, :, 2])
    maps = proj.maps(pts)
    expect = F.interpolate(maps.reshape(20, 1, 110, 110), size=(224, 224), mode="bilinear", align_corners=True)
    assert torch.equal(img[:, :, 0], expect.reshape(2, 10, 224, 224))
    assert torch.equal(img, maps_to_images(maps, 224))
    clip_mean, clip_std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    assert torch.equal(proj.images(pts, 224, clip_mean, clip_std), img)
    assert torch.equal(proj.preview(pts), maps)


def test_preset_registered_with_all_constants() -> None:
    assert "realistic" in projection_names()
    proj = get_projection("realistic")
    assert isinstance(proj, RealisticProjection) and proj is REALISTIC
    assert proj.num_views == 10
    d = proj.to_dict()
    assert d["kind"] == "realistic"
    expected = dict(resolution=112, depth_slices=8, obj_ratio=0.8, depth_bias=0.2, pool_size=7, pool_padding=2,
                    gauss_size=3, gauss_sigma=3.0, gauss_padding=1, map_size=110)
    assert {k: d[k] for k in expected} == expected
    assert d["tilts"] == pytest.approx((math.pi / 9,) * 8 + (math.pi / 15,) * 2)
    assert projection_from_dict(d) == proj
    with pytest.raises(ValueError, match="map_size"):
        RealisticProjection(map_size=112)


def test_view_order_and_tilts() -> None:
    dirs = camera_directions().numpy()
    np.testing.assert_allclose(dirs, TABLE_DIRECTIONS, atol=1e-3)
    # The pipeline uses these directions: in each view the point farthest along d gets the
    # largest depth value; for views 0-7 rows run top -> bottom with decreasing y.
    pts = _random_clouds(14, 1, 800)
    cells = grid_cells(pts)
    p = pts[0].double().numpy()
    for v in range(10):
        top = int(np.argmax(p @ dirs[v]))
        assert cells.cell_value[0, v, top] == cells.cell_value[0, v].max()
        assert cells.cell_index[0, v, top, 0] == cells.cell_index[0, v, :, 0].max()
    tall = torch.tensor([[[0.0, 2.0, 0.0], [0.0, -2.0, 0.0], [0.3, 0.0, 0.1], [-0.2, 0.1, -0.3]]])
    rows = grid_cells(tall).cell_index[0, :8, :, 1]
    assert bool((rows[:, 0] < rows[:, 1]).all())


def test_gaussian_weights_are_the_reference_float32_values() -> None:
    w = gaussian_weights()
    assert w.dtype == torch.float32
    corner, edge, centre = (float.fromhex(x) for x in ("0x1.b642ccp-4", "0x1.cf4c3cp-4", "0x1.e9c3d4p-4"))
    expect = torch.tensor([[corner, edge, corner], [edge, centre, edge], [corner, edge, corner]])
    assert torch.equal(w, expect)


def test_pool_and_smooth_kernels_match_torch() -> None:
    g = torch.Generator().manual_seed(15)
    x = torch.rand(4, 3, 20, 17, generator=g)
    x[x < 0.7] = 0
    pooled = rl._window_max(rl._window_max(F.pad(x, (2, 2, 2, 2)), 7, -1), 7, -2)
    assert torch.equal(pooled, F.max_pool2d(x.view(12, 1, 20, 17), 7, stride=1, padding=2).view(4, 3, 18, 15))
    a, b, c = torch.rand(3, generator=g).tolist()
    symmetric = torch.tensor([[a, b, a], [b, c, b], [a, b, a]])
    for w in (symmetric, torch.rand(3, 3, generator=g), torch.rand(5, 5, generator=g)):
        size = w.shape[0]
        got = rl._smooth(x, w)
        ref = F.conv2d(x.view(12, 1, 20, 17), w.view(1, 1, size, size), padding=size // 2).view(4, 3, 20, 17)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
