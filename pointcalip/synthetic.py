"""Procedurally generated point clouds, for tests, samples and offline demos.

Nothing here pretends to be real data: these are simple parametric surfaces (sphere,
box, cylinder, cone, torus, ...) sampled uniformly-ish, so that every part of the toolkit
can be exercised without the network.
"""

from __future__ import annotations

import numpy as np

SHAPES = ("sphere", "box", "cylinder", "cone", "torus", "plane", "capsule", "ring")


def _sphere(rng: np.random.Generator, n: int) -> np.ndarray:
    p = rng.normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _box(rng: np.random.Generator, n: int) -> np.ndarray:
    p = rng.uniform(-1.0, 1.0, size=(n, 3))
    axis = rng.integers(0, 3, size=n)
    p[np.arange(n), axis] = rng.choice([-1.0, 1.0], size=n)
    return p


def _cylinder(rng: np.random.Generator, n: int) -> np.ndarray:
    t = rng.uniform(0, 2 * np.pi, size=n)
    z = rng.uniform(-1.0, 1.0, size=n)
    return np.stack([np.cos(t), np.sin(t), z], axis=1)


def _cone(rng: np.random.Generator, n: int) -> np.ndarray:
    t = rng.uniform(0, 2 * np.pi, size=n)
    h = np.sqrt(rng.uniform(0, 1, size=n))  # area grows with the radius
    return np.stack([h * np.cos(t), h * np.sin(t), 1.0 - 2.0 * h], axis=1)


def _torus(rng: np.random.Generator, n: int) -> np.ndarray:
    u = rng.uniform(0, 2 * np.pi, size=n)
    v = rng.uniform(0, 2 * np.pi, size=n)
    r_big, r_small = 0.7, 0.3
    return np.stack(
        [(r_big + r_small * np.cos(v)) * np.cos(u), (r_big + r_small * np.cos(v)) * np.sin(u), r_small * np.sin(v)],
        axis=1,
    )


def _plane(rng: np.random.Generator, n: int) -> np.ndarray:
    p = rng.uniform(-1.0, 1.0, size=(n, 3))
    p[:, 2] = 0.05 * rng.normal(size=n)
    return p


def _capsule(rng: np.random.Generator, n: int) -> np.ndarray:
    p = _sphere(rng, n) * 0.5
    p[:, 2] += np.where(p[:, 2] > 0, 0.5, -0.5)
    return p


def _ring(rng: np.random.Generator, n: int) -> np.ndarray:
    t = rng.uniform(0, 2 * np.pi, size=n)
    r = rng.uniform(0.8, 1.0, size=n)
    return np.stack([r * np.cos(t), r * np.sin(t), 0.02 * rng.normal(size=n)], axis=1)


_MAKERS = {
    "sphere": _sphere,
    "box": _box,
    "cylinder": _cylinder,
    "cone": _cone,
    "torus": _torus,
    "plane": _plane,
    "capsule": _capsule,
    "ring": _ring,
}


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix ``(3, 3)``."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def make_shape(name: str, num_points: int, seed: int = 0, *, jitter: bool = True) -> np.ndarray:
    """One cloud of a named shape, centred and scaled into the unit ball.

    Returns:
        points: ``float32 (N, 3)`` with ``N = num_points``.
    """
    if name not in _MAKERS:
        raise ValueError(f"unknown shape {name!r}; valid: {', '.join(SHAPES)}")
    rng = np.random.default_rng(seed)
    p = _MAKERS[name](rng, num_points)
    if jitter:
        p = p * rng.uniform(0.7, 1.0, size=3) @ random_rotation(rng).T * 0.3 + p * 0.7
        p = p + 0.01 * rng.normal(size=p.shape)
    p = p - p.mean(axis=0)
    p = p / np.linalg.norm(p, axis=1).max()
    return p.astype(np.float32)


def make_class_cloud(label: int, num_points: int, seed: int) -> np.ndarray:
    """A cloud for class ``label`` of a synthetic dataset with any number of classes.

    Class ``k`` uses base shape ``SHAPES[k % 8]`` stretched by a factor that depends on
    ``k // 8``, so up to 40 classes stay distinguishable in shape.
    """
    base = SHAPES[label % len(SHAPES)]
    p = make_shape(base, num_points, seed=seed)
    stretch = np.array([1.0, 1.0, 1.0 + 0.4 * (label // len(SHAPES))], dtype=np.float32)
    p = p * stretch
    p = p - p.mean(axis=0)
    return (p / np.linalg.norm(p, axis=1).max()).astype(np.float32)
