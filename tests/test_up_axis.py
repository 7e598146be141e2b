"""Up axis rotations (exact signed permutations) and robust normalisation (CPU, fast)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pointcalip.clouds import (
    UP_AXES,
    load_point_cloud,
    prepare_cloud,
    prepare_cloud_info,
    rotate_up,
    up_axis_matrix,
)

UNIT = {"x": (1, 0, 0), "y": (0, 1, 0), "z": (0, 0, 1)}


def axis_vector(name: str) -> np.ndarray:
    sign = -1 if name.startswith("-") else 1
    return sign * np.array(UNIT[name[-1]])


def reference_rotate(points: np.ndarray, up_axis: str) -> np.ndarray:
    """Row by row with the matrix: new = R @ old (slow, obviously correct for integer R)."""
    r = up_axis_matrix(up_axis)
    out = np.empty_like(points)
    for idx in itertools.product(*[range(s) for s in points.shape[:-1]]):
        for i in range(3):
            out[idx + (i,)] = sum(points[idx + (j,)] * r[i, j] for j in range(3) if r[i, j] != 0)
    return out


@pytest.mark.parametrize("up", UP_AXES)
def test_rotation_table_is_exact_and_proper(up: str) -> None:
    r = up_axis_matrix(up)
    assert round(np.linalg.det(r)) == 1  # proper rotation
    np.testing.assert_array_equal(r @ r.T, np.eye(3, dtype=np.int64))
    assert (np.abs(r).sum(axis=0) == 1).all() and (np.abs(r).sum(axis=1) == 1).all()  # signed permutation
    np.testing.assert_array_equal(r @ axis_vector(up), [0, 1, 0])  # the file's up becomes +y
    pts = np.random.default_rng(0).normal(size=(2, 7, 3)).astype(np.float32)
    np.testing.assert_array_equal(rotate_up(pts, up), reference_rotate(pts, up))
    np.testing.assert_array_equal(rotate_up(pts[0], up), reference_rotate(pts[0], up))
    t = rotate_up(torch.from_numpy(pts), up)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), reference_rotate(pts, up))


def test_named_rotations() -> None:
    p = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(rotate_up(p, "z"), [[1.0, 3.0, -2.0]])  # (x, z, -y)
    np.testing.assert_array_equal(rotate_up(p, "y"), p)
    np.testing.assert_array_equal(rotate_up(p, "x"), [[-2.0, 1.0, 3.0]])  # (-y, x, z)


@pytest.mark.parametrize("bad", ["auto", "auto3", "Z", "up", 2, None])
def test_bad_up_axis(bad: object) -> None:
    with pytest.raises(ValueError, match="-x") as excinfo:
        rotate_up(np.zeros((4, 3)), bad)
    if bad in ("auto", "auto3"):
        assert "classifier" in str(excinfo.value)
    with pytest.raises(ValueError):
        rotate_up(np.zeros((4, 2)), "z")


@pytest.mark.parametrize("n, num_points", [(1024, 1024), (3000, 512)])
def test_prepare_with_up_axis_is_bit_exact(n: int, num_points: int) -> None:
    a = (np.random.default_rng(n).normal(size=(n, 3)) * [1.0, 3.0, 0.5] + [2.0, 0.0, -1.0]).astype(np.float32)
    b = np.stack([a[:, 0], a[:, 2], -a[:, 1]], axis=1)  # (x, y, z) -> (x, z, -y)
    got = prepare_cloud(a, num_points, up_axis="z")
    np.testing.assert_array_equal(got, prepare_cloud(b, num_points))
    assert got.shape == (num_points, 3)
    if n > num_points:  # sampled: canonical order makes the subset independent of the input order
        perm = np.random.default_rng(1).permutation(n)
        np.testing.assert_array_equal(prepare_cloud(a[perm], num_points, up_axis="z"), got)


def test_load_point_cloud_up_axis(tmp_path) -> None:
    a = np.random.default_rng(4).normal(size=(300, 3)).astype(np.float32)
    np.save(tmp_path / "z_up.npy", a)
    np.save(tmp_path / "y_up.npy", np.stack([a[:, 0], a[:, 2], -a[:, 1]], axis=1))
    np.testing.assert_array_equal(load_point_cloud(tmp_path / "z_up.npy", 128, up_axis="z"),
                                  load_point_cloud(tmp_path / "y_up.npy", 128))


def _shape(seed: int = 2, n: int = 1024) -> np.ndarray:
    """A clean cloud: points on an ellipsoid surface, off-centre."""
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return (v / np.linalg.norm(v, axis=1, keepdims=True) * [1.0, 0.6, 0.3] + [0.4, -0.2, 1.0]).astype(np.float32)


@pytest.mark.parametrize("num_points", [None, 1024, 300])
def test_robust_normalisation(num_points: int | None) -> None:
    clean = _shape()
    mm = clean * 1000.0
    rng = np.random.default_rng(9)
    far = rng.normal(size=(5, 3)) * 40.0 + 25.0
    noisy = np.concatenate([clean[:400], far, clean[400:]]).astype(np.float32)
    want = prepare_cloud_info(clean, num_points, robust=True)
    assert want.num_outliers == 0 and want.num_read == 1024
    np.testing.assert_array_equal(want.points, prepare_cloud(clean, num_points))  # clean: untouched
    for other, outliers in ((mm, 0), (noisy, 5)):
        got = prepare_cloud_info(other, num_points, robust=True)
        assert got.num_outliers == outliers and got.num_read == len(other)
        np.testing.assert_allclose(got.points, want.points, atol=1e-5, rtol=0)
    plain = prepare_cloud(noisy, num_points)
    assert plain.shape != want.points.shape or np.abs(plain - want.points).max() > 0.1
