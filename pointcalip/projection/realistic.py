"""PointCLIP V2 "realistic" projection: point clouds -> smoothed silhouette-depth images (docs/method.md §9).

Symbols: ``B`` clouds, ``N`` points, ``V`` views (10), ``R`` grid resolution (112), ``S`` depth
slices (8), ``H x W`` image size (110 x 110).

Per view, the rotated cloud is normalised to its own bounding box and quantised into an
``S x R x R`` grid that keeps the largest depth value per cell; each depth slice is densified
with a 7x7 max-pool (stride 1, padding 2, so ``R -> R - 2``), smoothed with a 3x3 Gaussian,
the slices are squeezed by a max, and the image is scaled to ``[0, 1]`` and inverted (white
background, nearest surface black).

The cells are decided by ``ceil`` of float32 values, so one last-bit difference can move a
point to the neighbouring cell and change pixels by up to ~0.3. The geometry therefore follows
the reference arithmetic operation by operation (docs/method.md §9.1-9.2): float32 numpy trig
for the matrices, two successive batched float32 ``torch.matmul`` products, the normalisation
lines in their order, a true division by ``1.2``.

:func:`realistic_maps` is vectorised over all ``B * V`` views (no Python loop over clouds or
views); :func:`realistic_maps_naive` and :func:`grid_cells_naive` are the slow, obviously-correct
references (explicit loops over clouds, views and points) that the tests compare it with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from pointcalip.errors import DegenerateCloudError, EmptyCloudError, NonFiniteError
from pointcalip.projection.base import Projection, check_points
from pointcalip.projection.registry import register_projection

View = Tuple[float, float, float]

_PI = math.pi
#: Euler triples ``(ax, ay, az)`` of the ten views, in the reference order (docs/method.md §9.1).
REALISTIC_VIEWS: Tuple[View, ...] = (
    (1 * _PI / 4, 0.0, _PI / 2),
    (3 * _PI / 4, 0.0, _PI / 2),
    (5 * _PI / 4, 0.0, _PI / 2),
    (7 * _PI / 4, 0.0, _PI / 2),
    (0 * _PI / 2, 0.0, _PI / 2),
    (1 * _PI / 2, 0.0, _PI / 2),
    (2 * _PI / 2, 0.0, _PI / 2),
    (3 * _PI / 2, 0.0, _PI / 2),
    (0.0, -_PI / 2, _PI / 2),
    (0.0, _PI / 2, _PI / 2),
)
#: Tilt ``tau`` about y applied after each view's rotation (reveals more of the surface).
REALISTIC_TILTS: Tuple[float, ...] = (_PI / 9,) * 8 + (_PI / 15,) * 2


@dataclass(frozen=True)
class RealisticProjection(Projection):
    """The PointCLIP V2 realistic projection; every field decides the images (cache keys).

    Attributes:
        name: preset name (``realistic``) or ``custom``.
        views: ``V`` Euler triples; ``M1 = Rx(ax) Ry(ay) Rz(az)``.
        tilts: ``V`` tilt angles; ``M2 = Ry(tau)``.
        translation: ``t`` subtracted after rotating (no effect on the cells up to float32
            rounding, since every view is re-centred; kept for bit parity with the reference).
        resolution: grid size ``R`` (rows from x, columns from y).
        depth_slices: ``S``; depth values are quantised into slices ``1 .. S - 2``.
        obj_ratio: x and y are scaled by it after the bounding-box normalisation.
        depth_bias: shifts normalised depth before quantisation (keeps the far side off slice 0).
        pool_size, pool_padding: max-pool window and padding (stride 1).
        gauss_size, gauss_sigma, gauss_padding: Gaussian smoothing kernel (zero padding).
        map_size: ``H = W`` of the images, ``R + 2 * pool_padding - pool_size + 1`` (110).

    ``images`` never applies CLIP mean/std (``supports_normalization = False``): the
    reference feeds the ``[0, 1]`` images to CLIP as they are, so ``mean``/``std`` are ignored.
    """

    kind: ClassVar[str] = "realistic"
    supports_normalization: ClassVar[bool] = False
    name: str = "realistic"
    views: Tuple[View, ...] = REALISTIC_VIEWS
    tilts: Tuple[float, ...] = REALISTIC_TILTS
    translation: Tuple[float, float, float] = (-0.5, -0.5, -1.5)
    resolution: int = 112
    depth_slices: int = 8
    obj_ratio: float = 0.8
    depth_bias: float = 0.2
    pool_size: int = 7
    pool_padding: int = 2
    gauss_size: int = 3
    gauss_sigma: float = 3.0
    gauss_padding: int = 1
    map_size: int = 110

    def __post_init__(self) -> None:
        if len(self.tilts) != len(self.views):
            raise ValueError(f"tilts must have one angle per view ({len(self.views)}); got {len(self.tilts)}")
        expected = self.resolution + 2 * self.pool_padding - self.pool_size + 1
        if self.map_size != expected:
            raise ValueError(
                f"map_size must be resolution + 2*pool_padding - pool_size + 1 = {expected}; got {self.map_size}"
            )
        if self.gauss_size != 2 * self.gauss_padding + 1:
            raise ValueError(
                f"gauss_padding must keep the size (gauss_size = 2*gauss_padding + 1); got {self.gauss_size}, "
                f"{self.gauss_padding}"
            )
        if not 0 <= self.pool_padding < self.pool_size:
            raise ValueError(f"need 0 <= pool_padding < pool_size; got {self.pool_padding}, {self.pool_size}")
        if self.depth_slices < 3 or self.resolution < 3:
            raise ValueError(f"need depth_slices >= 3 and resolution >= 3; got {self.depth_slices}, {self.resolution}")

    @property
    def num_views(self) -> int:
        return len(self.views)

    def maps(self, points: torch.Tensor) -> torch.Tensor:
        """Realistic images ``(B, V, H, W)`` float32 in ``[0, 1]`` (background 1) of ``points: (B, N, 3)``."""
        return realistic_maps(points, self)

    def preview(self, points: torch.Tensor) -> torch.Tensor:
        """The maps themselves ``(B, V, H, W)``: already pictures (white background, near is dark)."""
        return self.maps(points)


REALISTIC = register_projection(RealisticProjection())


@dataclass(frozen=True)
class GridCells:
    """Where every point lands in every view's grid (docs/method.md §9.2).

    Attributes:
        cell_index: ``(B, V, N, 3)`` int64 ``(k, i, j)``: depth slice, row (from x), column (from y).
        cell_value: ``(B, V, N)`` float32, the depth value written (``clip(fz, 1, S - 2)``).
    """

    cell_index: torch.Tensor
    cell_value: torch.Tensor


# ----------------------------------------------------------------------------------------
# Constants computed exactly as the reference does (float32 throughout).


def _euler_matrices_f32(angles: np.ndarray) -> np.ndarray:
    """``Rx(ax) @ Ry(ay) @ Rz(az)`` for ``angles: (V, 3)``, float32 trig and products -> ``(V, 3, 3)``."""
    a = np.asarray(angles, dtype=np.float64).astype(np.float32)
    x, y, z = a[:, 0], a[:, 1], a[:, 2]
    one, zero = np.ones_like(x), np.zeros_like(x)
    rz = np.stack([np.cos(z), -np.sin(z), zero, np.sin(z), np.cos(z), zero, zero, zero, one], 1).reshape(-1, 3, 3)
    ry = np.stack([np.cos(y), zero, np.sin(y), zero, one, zero, -np.sin(y), zero, np.cos(y)], 1).reshape(-1, 3, 3)
    rx = np.stack([one, zero, zero, zero, np.cos(x), -np.sin(x), zero, np.sin(x), np.cos(x)], 1).reshape(-1, 3, 3)
    # Each entry of rx @ ry is a single product and each entry of (rx @ ry) @ rz at most two,
    # so torch, numpy and exactly-rounded float32 products agree bit for bit.
    m = torch.matmul(torch.matmul(torch.from_numpy(rx), torch.from_numpy(ry)), torch.from_numpy(rz))
    return m.numpy()


def view_rotations(projection: RealisticProjection = REALISTIC) -> Tuple[torch.Tensor, torch.Tensor]:
    """The float32 rotations ``(M1, M2)``, each ``(V, 3, 3)``; a row-vector point becomes ``p M1^T M2^T``."""
    m1 = _euler_matrices_f32(np.asarray(projection.views, dtype=np.float64))
    tilt = np.zeros((projection.num_views, 3))
    tilt[:, 1] = projection.tilts
    m2 = _euler_matrices_f32(tilt)
    return torch.from_numpy(m1), torch.from_numpy(m2)


def camera_directions(projection: RealisticProjection = REALISTIC) -> torch.Tensor:
    """Unit vectors ``(V, 3)`` in the object frame along which image depth grows (visible side faces ``+d``)."""
    m1, m2 = view_rotations(projection)
    return torch.matmul(m2.double(), m1.double())[:, 2, :]


def gaussian_weights(projection: RealisticProjection = REALISTIC) -> torch.Tensor:
    """The smoothing kernel ``(k, k)`` float32: ``exp(-x^2 / 2 sigma^2)`` outer product, divided by its sum.

    Computed in the reference's float32 order (for 3x3, sigma 3: corner 0x1.b642ccp-4, edge
    0x1.cf4c3cp-4, centre 0x1.e9c3d4p-4).
    """
    k = projection.gauss_size
    xs = np.arange(k, dtype=np.float32) - np.float32(k // 2)
    g = np.exp(-(xs**2) / np.float32(2 * projection.gauss_sigma**2)).astype(np.float32)
    kernel = torch.from_numpy(g[:, None] @ g[None, :])
    kernel = kernel / kernel.sum()
    # The reference normalises again after multiplying by its depth factor exp(0) = 1.
    return kernel / torch.sum(kernel)


# ----------------------------------------------------------------------------------------
# Input checks.


def _checked_points(points: torch.Tensor) -> torch.Tensor:
    """float32 ``(B, N, 3)`` after shape, emptiness, finiteness and degeneracy checks."""
    check_points(points)
    b, n, _ = points.shape
    if n == 0:
        raise EmptyCloudError(f"points has shape {tuple(points.shape)}: each cloud needs at least 2 distinct points")
    pts = points.to(torch.float32)
    finite = torch.isfinite(pts).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        raise NonFiniteError(f"points[{bad}] (of shape {tuple(points.shape)}) has NaN or Inf coordinates")
    flat = (pts.amax(dim=1) == pts.amin(dim=1)).all(dim=1)
    if bool(flat.any()):
        bad = int(flat.nonzero()[0, 0])
        raise DegenerateCloudError(
            f"points[{bad}] (of shape {tuple(points.shape)}) has all its points equal: its bounding box has "
            "range 0, so the realistic projection cannot normalise it; give at least two distinct points"
        )
    return pts


# ----------------------------------------------------------------------------------------
# Vectorised kernel.


def _view_points(pts: torch.Tensor, projection: RealisticProjection) -> torch.Tensor:
    """Rotated points ``(B * V, N, 3)`` (cloud-major), the reference's two batched products then ``- t``."""
    b = pts.shape[0]
    v = projection.num_views
    m1, m2 = view_rotations(projection)
    m1t = m1.transpose(1, 2).to(pts.device)
    m2t = m2.transpose(1, 2).to(pts.device)
    t = torch.tensor(projection.translation, dtype=torch.float32, device=pts.device)
    q = torch.matmul(pts.repeat_interleave(v, dim=0), m1t.repeat(b, 1, 1))
    q = torch.matmul(q, m2t.repeat(b, 1, 1))
    return q - t


def _cells(pts: torch.Tensor, projection: RealisticProjection) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cells ``k, i, j`` (int64) and values ``z`` (float32) of every point-view, each ``(B * V, N)``."""
    r, s = projection.resolution, projection.depth_slices
    q = _view_points(pts, projection)
    pmax, pmin = q.amax(dim=1), q.amin(dim=1)  # (B*V, 3)
    centre = (pmax + pmin) / 2
    extent = (pmax - pmin).amax(dim=-1)  # (B*V,): the longest bounding-box side
    if not bool((extent > 0).all()):
        bad = int((extent <= 0).nonzero()[0, 0]) // projection.num_views
        raise DegenerateCloudError(f"points[{bad}] collapses to a single point in a view; give distinct points")
    qn = (q - centre[:, None, :]) / extent[:, None, None] * 2.0
    x = qn[..., 0] * projection.obj_ratio
    y = qn[..., 1] * projection.obj_ratio
    fx = (x + 1) / 2 * r
    fy = (y + 1) / 2 * r
    fz = ((qn[..., 2] + 1) / 2 + projection.depth_bias) / (1 + projection.depth_bias) * (s - 2)
    i = torch.ceil(fx).clamp_(1, r - 2).long()
    j = torch.ceil(fy).clamp_(1, r - 2).long()
    k = torch.ceil(fz).long()
    z = fz.clamp(1, s - 2)
    if bool((k < 0).any()) or bool((k >= s).any()):  # impossible for depth_bias >= 0; never index out of range
        raise ValueError(f"depth slice out of range 0..{s - 1}: {int(k.min())}..{int(k.max())}")
    return k, i, j, z


def grid_cells(points: torch.Tensor, projection: RealisticProjection = REALISTIC) -> GridCells:
    """Cell and value of every point in every view; ``points: (B, N, 3)`` -> :class:`GridCells`."""
    pts = _checked_points(points)
    b, n, _ = pts.shape
    v = projection.num_views
    k, i, j, z = _cells(pts, projection)
    return GridCells(torch.stack([k, i, j], dim=-1).view(b, v, n, 3), z.view(b, v, n))


#: Views densified together: a tile's intermediates (about 0.35 MB per view) stay in cache and
#: below the allocator's mmap threshold. Every operation is per view, so tiling changes no bit.
TILE_VIEWS = 16


def _window_max(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Max over every window of ``size`` consecutive entries along ``dim`` (length ``L -> L - size + 1``).

    Doubling: windows of 1, 2, 4, ... entries, then two overlapping windows of the largest
    power of two cover ``size`` (for 7: ``max(m4[t], m4[t + 3])``). Exact: max never rounds.
    """
    width = 1
    while 2 * width <= size:
        n = x.shape[dim]
        x = torch.maximum(x.narrow(dim, 0, n - width), x.narrow(dim, width, n - width))
        width *= 2
    if width < size:
        n = x.shape[dim]
        rest = size - width
        x = torch.maximum(x.narrow(dim, 0, n - rest), x.narrow(dim, rest, n - rest))
    return x


def _smooth(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Cross-correlation with zero padding of ``p: (..., H, W)`` by ``w: (k, k)`` -> ``(..., H, W)``.

    Fixed-order elementwise arithmetic with separate multiplies and adds (no library
    convolution or fused multiply-add whose rounding may depend on the batch size or on
    where a pixel falls in a vector). For the symmetric 3x3 kernel the nine terms are grouped
    by their three distinct weights: ``wc*centre + we*(4 edges) + wk*(4 corners)``.
    """
    k = w.shape[0]
    h, wd = p.shape[-2:]
    pad = F.pad(p, (k // 2,) * 4)
    wl = w.tolist()
    symmetric3 = k == 3 and wl[0][0] == wl[0][2] == wl[2][0] == wl[2][2] and wl[0][1] == wl[1][0] == wl[1][2] == wl[2][1]
    if symmetric3:
        horiz = pad[..., :, :-2] + pad[..., :, 2:]  # left + right neighbours, (H + 2, W)
        corners = horiz[..., :-2, :] + horiz[..., 2:, :]
        edges = horiz[..., 1:-1, :] + pad[..., :-2, 1:-1]
        edges += pad[..., 2:, 1:-1]
        out = p * wl[1][1]
        out += edges.mul_(wl[0][1])
        out += corners.mul_(wl[0][0])
        return out
    out = torch.zeros_like(p)
    for a in range(k):
        for b in range(k):
            out += pad[..., a : a + h, b : b + wd] * wl[a][b]
    return out


def _densify(
    k: torch.Tensor, i: torch.Tensor, j: torch.Tensor, z: torch.Tensor, projection: RealisticProjection
) -> torch.Tensor:
    """Images ``(T, H, W)`` before normalisation of ``T`` views from their cells (each ``(T, N)``).

    Grid with max per cell, max-pool per slice, Gaussian per slice, max over slices.
    """
    t = k.shape[0]
    r, pp, ps = projection.resolution, projection.pool_padding, projection.pool_size
    k0 = int(k.min())
    ns = int(k.max()) - k0 + 1
    # Only occupied slices: an empty slice stays 0 through pooling and smoothing, and all
    # values are >= 0, so it never wins the depth max. The grid is stored with the pool's
    # padding already around it; zero padding equals -inf padding here because every window
    # holds at least one grid cell and grid values are >= 0.
    rp = r + 2 * pp
    grid = torch.zeros(t, ns * rp * rp, dtype=torch.float32, device=k.device)
    flat = (k - k0) * (rp * rp) + (i + pp) * rp + (j + pp)
    grid.scatter_reduce_(1, flat, z, reduce="amax", include_self=True)
    grid = grid.view(t, ns, rp, rp)
    pooled = _window_max(_window_max(grid, ps, -1), ps, -2)  # (T, ns, H, W)
    smooth = _smooth(pooled, gaussian_weights(projection).to(k.device))
    return smooth.amax(dim=1)


def realistic_maps(points: torch.Tensor, projection: RealisticProjection = REALISTIC) -> torch.Tensor:
    """Realistic images of a batch of clouds in every view (docs/method.md §9).

    The geometry and the cells are computed for all ``B * V`` views at once; the dense stage
    (grid, pooling, smoothing, depth max) runs on tiles of :data:`TILE_VIEWS` views, each a
    batched tensor operation, so its intermediates stay in cache (docs/method.md §9.4).

    Args:
        points: ``(B, N, 3)`` float tensor (any device); converted to float32.
        projection: the constants (the ``realistic`` preset by default).

    Returns:
        maps: ``(B, V, H, W)`` float32 in ``[0, 1]``: background exactly 1, the largest smoothed
        depth of each view exactly 0.

    Raises:
        DegenerateCloudError: a cloud whose points are all equal (no bounding box).
        NonFiniteError, EmptyCloudError: NaN/Inf coordinates, ``N = 0``.
    """
    pts = _checked_points(points)
    b = pts.shape[0]
    v, h = projection.num_views, projection.map_size
    k, i, j, z = _cells(pts, projection)
    img = torch.empty(b * v, h, h, dtype=torch.float32, device=pts.device)
    tile = TILE_VIEWS if pts.device.type == "cpu" else b * v
    for start in range(0, b * v, tile):
        part = slice(start, min(start + tile, b * v))
        img[part] = _densify(k[part], i[part], j[part], z[part], projection)
    img = img / img.amax(dim=(-2, -1), keepdim=True)
    return (1 - img).view(b, v, h, h)


# ----------------------------------------------------------------------------------------
# Slow references.


def grid_cells_naive(
    points: np.ndarray, projection: RealisticProjection = REALISTIC
) -> Tuple[np.ndarray, np.ndarray]:
    """Explicit loops over clouds, views and points; ``(B, N, 3)`` -> ``(cell_index (B, V, N, 3), cell_value (B, V, N))``.

    Each view's rotation is the reference's batched float32 product (``p M1^T`` then ``M2^T``);
    everything after it is float32 scalar arithmetic, one line of docs/method.md §9.2 at a time.
    """
    pts = np.asarray(points, dtype=np.float32)
    b, n, _ = pts.shape
    v, r, s = projection.num_views, projection.resolution, projection.depth_slices
    m1, m2 = view_rotations(projection)
    t = np.asarray(projection.translation, dtype=np.float32)
    f32 = np.float32
    one, two = f32(1), f32(2)
    ratio, bias, denom = f32(projection.obj_ratio), f32(projection.depth_bias), f32(1 + projection.depth_bias)
    cell_index = np.zeros((b, v, n, 3), dtype=np.int64)
    cell_value = np.zeros((b, v, n), dtype=np.float32)
    for bi in range(b):
        # The rotation of this cloud in every view: one product per view, batched over views.
        cloud = torch.from_numpy(pts[bi].copy()).expand(v, n, 3).contiguous()
        rotated = torch.matmul(torch.matmul(cloud, m1.transpose(1, 2)), m2.transpose(1, 2)).numpy()
        for vi in range(v):
            q = rotated[vi] - t
            pmax, pmin = q[0].copy(), q[0].copy()
            for p in q:
                for a in range(3):
                    pmax[a] = max(pmax[a], p[a])
                    pmin[a] = min(pmin[a], p[a])
            centre = [(pmax[a] + pmin[a]) / two for a in range(3)]
            extent = max(pmax[a] - pmin[a] for a in range(3))
            if not extent > 0:
                raise DegenerateCloudError(f"points[{bi}] has all its points equal")
            for ni, p in enumerate(q):
                xn, yn, zn = ((p[a] - centre[a]) / extent * two for a in range(3))
                fx = ((xn * ratio) + one) / two * f32(r)
                fy = ((yn * ratio) + one) / two * f32(r)
                fz = ((zn + one) / two + bias) / denom * f32(s - 2)
                i = min(max(math.ceil(fx), 1), r - 2)
                j = min(max(math.ceil(fy), 1), r - 2)
                k = math.ceil(fz)
                cell_index[bi, vi, ni] = (k, i, j)
                cell_value[bi, vi, ni] = min(max(fz, f32(1)), f32(s - 2))
    return cell_index, cell_value


def realistic_maps_naive(points: np.ndarray, projection: RealisticProjection = REALISTIC) -> np.ndarray:
    """Slow, obviously-correct :func:`realistic_maps`: ``(B, N, 3)`` -> float64 ``(B, V, H, W)``.

    Grid: one point at a time (:func:`grid_cells_naive`), max per cell. Max-pool: the max over
    the ``7 x 7`` shifted copies of the ``-inf``-padded grid. Gaussian: the weighted sum of the
    ``3 x 3`` shifted copies of the zero-padded slices, in float64. Then max over slices,
    divide by the view's max, invert.
    """
    cell_index, cell_value = grid_cells_naive(points, projection)
    b, v, n, _ = cell_index.shape
    r, s, h = projection.resolution, projection.depth_slices, projection.map_size
    pp, ps, gp, gs = projection.pool_padding, projection.pool_size, projection.gauss_padding, projection.gauss_size
    w = gaussian_weights(projection).double().numpy()
    out = np.zeros((b, v, h, h))
    for bi in range(b):
        for vi in range(v):
            grid = np.zeros((s, r, r), dtype=np.float32)
            for ni in range(n):
                k, i, j = cell_index[bi, vi, ni]
                grid[k, i, j] = max(grid[k, i, j], cell_value[bi, vi, ni])
            padded = np.pad(grid, ((0, 0), (pp, pp), (pp, pp)), constant_values=-np.inf)
            pooled = np.full((s, h, h), -np.inf, dtype=np.float32)
            for a in range(ps):
                for c in range(ps):
                    pooled = np.maximum(pooled, padded[:, a : a + h, c : c + h])
            padded = np.pad(pooled.astype(np.float64), ((0, 0), (gp, gp), (gp, gp)))
            smooth = np.zeros((s, h, h))
            for a in range(gs):
                for c in range(gs):
                    smooth += w[a, c] * padded[:, a : a + h, c : c + h]
            img = smooth.max(axis=0)
            out[bi, vi] = 1 - img / img.max()
    return out
