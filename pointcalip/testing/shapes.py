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


# --------------------------------------------------------------------------------------
# Recognisable objects built from parts (used by scripts/make_samples.py).
# Units are roughly metres, y is up (as in ModelNet40's h5 clouds); nothing is normalised.

OBJECTS = ("chair", "table", "airplane", "lamp")


def _box_part(center: tuple, size: tuple) -> tuple:
    """A closed box surface part: ``(sampler, area)``."""
    c, s = np.asarray(center, dtype=np.float64), np.asarray(size, dtype=np.float64)
    pair_areas = np.array([s[1] * s[2], s[0] * s[2], s[0] * s[1]])  # faces normal to x, y, z

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        p = rng.uniform(-0.5, 0.5, size=(n, 3))
        axis = rng.choice(3, size=n, p=pair_areas / pair_areas.sum())
        p[np.arange(n), axis] = rng.choice([-0.5, 0.5], size=n)
        return c + p * s

    return sample, 2.0 * float(pair_areas.sum())


def _frustum_part(center: tuple, r_bottom: float, r_top: float, height: float, axis: int = 1) -> tuple:
    """The side of a (truncated) cone or cylinder along ``axis``: ``(sampler, area)``."""
    c = np.asarray(center, dtype=np.float64)
    slant = float(np.hypot(height, r_top - r_bottom))

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        # radius grows linearly with t, so draw t with density proportional to the radius
        u = rng.uniform(0.0, 1.0, size=n)
        if abs(r_top - r_bottom) < 1e-9:
            t = u
        else:
            r2 = r_bottom**2 + u * (r_top**2 - r_bottom**2)
            t = (np.sqrt(r2) - r_bottom) / (r_top - r_bottom)
        r = r_bottom + t * (r_top - r_bottom)
        a = rng.uniform(0.0, 2 * np.pi, size=n)
        local = np.stack([r * np.cos(a), (t - 0.5) * height, r * np.sin(a)], axis=1)
        return c + np.roll(local, axis - 1, axis=1)

    return sample, float(np.pi * (r_bottom + r_top) * slant)


def _disk_part(center: tuple, radius: float, axis: int = 1) -> tuple:
    """A flat disk normal to ``axis``: ``(sampler, area)``."""
    c = np.asarray(center, dtype=np.float64)

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        r = radius * np.sqrt(rng.uniform(0.0, 1.0, size=n))
        a = rng.uniform(0.0, 2 * np.pi, size=n)
        local = np.stack([r * np.cos(a), np.zeros(n), r * np.sin(a)], axis=1)
        return c + np.roll(local, axis - 1, axis=1)

    return sample, float(np.pi * radius**2)


def _sample_parts(rng: np.random.Generator, num_points: int, parts: list) -> np.ndarray:
    """``num_points`` points spread over ``parts`` in proportion to their areas: ``(N, 3)``."""
    areas = np.array([area for _, area in parts])
    counts = rng.multinomial(num_points, areas / areas.sum())
    return np.concatenate([sample(rng, k) for (sample, _), k in zip(parts, counts)], axis=0)


def _chair_parts() -> list:
    """Seat, backrest and four legs."""
    legs = [_box_part((x, 0.22, z), (0.04, 0.44, 0.04)) for x in (-0.2, 0.2) for z in (-0.2, 0.2)]
    return [_box_part((0, 0.46, 0), (0.46, 0.04, 0.46)), _box_part((0, 0.72, -0.21), (0.46, 0.48, 0.04))] + legs


def _table_parts() -> list:
    """Table top and four legs."""
    legs = [_box_part((x, 0.36, z), (0.06, 0.72, 0.06)) for x in (-0.52, 0.52) for z in (-0.32, 0.32)]
    return [_box_part((0, 0.74, 0), (1.2, 0.04, 0.8))] + legs


def _airplane_parts() -> list:
    """Fuselage (cylinder + nose cone + tail cone) along x, wings along z, tail planes."""
    return [
        _frustum_part((0.0, 0.0, 0.0), 0.1, 0.1, 1.2, axis=0),
        _frustum_part((0.7, 0.0, 0.0), 0.1, 0.01, 0.2, axis=0),
        _frustum_part((-0.75, 0.02, 0.0), 0.04, 0.1, 0.3, axis=0),
        _box_part((0.05, 0.0, 0.0), (0.3, 0.03, 1.7)),
        _box_part((-0.8, 0.05, 0.0), (0.16, 0.02, 0.5)),
        _box_part((-0.8, 0.2, 0.0), (0.2, 0.3, 0.02)),
    ]


def _lamp_parts() -> list:
    """Round base, thin pole and an open conical shade."""
    return [
        _frustum_part((0, 0.015, 0), 0.15, 0.15, 0.03),
        _disk_part((0, 0.03, 0), 0.15),
        _frustum_part((0, 0.33, 0), 0.012, 0.012, 0.6),
        _frustum_part((0, 0.68, 0), 0.22, 0.1, 0.24),
    ]


_OBJECT_PARTS = {"chair": _chair_parts, "table": _table_parts, "airplane": _airplane_parts, "lamp": _lamp_parts}


def make_object(name: str, num_points: int, seed: int = 0) -> np.ndarray:
    """A cloud of a recognisable object (chair, table, airplane, lamp), y up, in metres.

    Points are spread uniformly by area over box, disk and cone parts. Not normalised.

    Returns:
        points: ``float32 (N, 3)`` with ``N = num_points``.
    """
    if name not in _OBJECT_PARTS:
        raise ValueError(f"unknown object {name!r}; valid: {', '.join(OBJECTS)}")
    rng = np.random.default_rng(seed)
    return _sample_parts(rng, num_points, _OBJECT_PARTS[name]()).astype(np.float32)


def _ring_strip(start_a: int, start_b: int, segments: int, closed: bool = True) -> list:
    """Triangles joining two vertex rings of ``segments`` vertices each."""
    faces = []
    for i in range(segments if closed else segments - 1):
        j = (i + 1) % segments
        faces += [(start_a + i, start_b + i, start_b + j), (start_a + i, start_b + j, start_a + j)]
    return faces


def make_mug_mesh(segments: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A mug as a triangle mesh: open cylinder body with a bottom and a half-torus handle.

    Returns:
        vertices: ``float32 (V, 3)``, y up; faces: ``int64 (F, 3)`` vertex indices.
    """
    radius, height = 0.4, 1.0
    a = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([radius * np.cos(a), np.zeros(segments), radius * np.sin(a)], axis=1)
    verts = [ring, ring + [0.0, height, 0.0], np.zeros((1, 3))]
    faces = _ring_strip(0, segments, segments)
    centre = 2 * segments
    faces += [(centre, (i + 1) % segments, i) for i in range(segments)]
    # handle: half a torus in the x-y plane on the +x side of the body
    tube, steps, big, small = 8, 9, 0.25, 0.05
    base = 2 * segments + 1
    for k, phi in enumerate(np.linspace(-np.pi / 2, np.pi / 2, steps)):
        c = np.array([radius + big * np.cos(phi), 0.5 * height + big * np.sin(phi), 0.0])
        radial = np.array([np.cos(phi), np.sin(phi), 0.0])
        t = np.linspace(0.0, 2 * np.pi, tube, endpoint=False)[:, None]
        verts.append(c + small * (np.cos(t) * radial + np.sin(t) * [0.0, 0.0, 1.0]))
        if k:
            faces += _ring_strip(base + (k - 1) * tube, base + k * tube, tube)
    return np.concatenate(verts).astype(np.float32), np.asarray(faces, dtype=np.int64)
