"""Mesh files ``.obj .off .stl`` and area-weighted surface sampling (docs/method.md §1).

A mesh becomes ``mesh_sample_count(num_points)`` points drawn uniformly by area with the
fixed seed :data:`MESH_SEED`: a triangle is drawn with probability proportional to its
area, then a point inside it with the square-root barycentric rule
``p = (1 - sqrt(u)) a + sqrt(u) (1 - v) b + sqrt(u) v c``, ``u, v ~ U[0, 1)``.
A mesh without faces (or with zero total area) gives its vertices. Polygons are split
into triangle fans ``(i0, ik, ik+1)``.

All three formats are parsed here with checked code: OFF counts are checked against the
file size and the body, OBJ face indices (1-based, negative = relative) and STL triangle
counts are checked before any array is allocated.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import numpy as np

from pointcalip.clouds._errors import corrupt, empty, quote
from pointcalip.clouds.files import ReadLimits, data_rows, open_regular, text_chunks
from pointcalip.clouds.readers.text import parse_block

__all__ = ["MESH_SEED", "mesh_sample_count", "sample_surface", "mesh_points", "fan_triangles",
           "read_obj", "read_off", "read_stl"]

MESH_SEED = 0


def mesh_sample_count(num_points: int | None) -> int:
    """Surface points drawn from a mesh: ``4 * max(num_points, 1024)`` (4,096 for ``None``).

    Drawing more than needed and then reducing by farthest point sampling spreads the
    points evenly over the surface.
    """
    return 4 * max(num_points or 0, 1024)


def fan_triangles(polygons: np.ndarray) -> np.ndarray:
    """``(F, n)`` polygons (vertex indices) -> ``(F * (n - 2), 3)`` fan triangles; none for ``n < 3``."""
    f, n = polygons.shape
    if n < 3 or f == 0:
        return np.zeros((0, 3), dtype=np.int64)
    k = np.arange(1, n - 1)
    tris = np.stack([np.broadcast_to(polygons[:, :1], (f, n - 2)), polygons[:, k], polygons[:, k + 1]], axis=-1)
    return tris.reshape(-1, 3).astype(np.int64)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = MESH_SEED) -> np.ndarray | None:
    """``count`` points uniform by area on a triangle mesh, or ``None`` when its area is 0.

    Args:
        vertices: ``float64 (V, 3)``.
        faces: ``int64 (F, 3)`` valid indices into ``vertices``.
        count: number of points to draw.
        seed: seed of the generator (fixed: the same file gives the same points).

    Returns:
        ``float64 (count, 3)``.
    """
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    with np.errstate(over="ignore", invalid="ignore"):
        area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
        total = float(area.sum())
    if not (total > 0.0 and np.isfinite(total)):
        return None
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(area)
    pick = np.minimum(np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right"), len(faces) - 1)
    su = np.sqrt(rng.random(count))[:, None]
    v = rng.random(count)[:, None]
    return (1.0 - su) * a[pick] + su * (1.0 - v) * b[pick] + su * v * c[pick]


def mesh_points(vertices: np.ndarray, faces: np.ndarray, source: str, num_points: int | None) -> np.ndarray:
    """Surface samples ``(M, 3)`` of a checked mesh, or its vertices ``(V, 3)`` when it has no area."""
    if len(vertices) == 0:
        raise empty(source, "the mesh has no vertices")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise corrupt(source, "a face refers to a vertex that does not exist")
    if len(faces) == 0 or not np.isfinite(vertices).all():
        return vertices  # validation reports non-finite vertices
    samples = sample_surface(vertices, faces, mesh_sample_count(num_points))
    return vertices if samples is None else samples


def _polygon_rows(polys: List[List[int]]) -> np.ndarray:
    """Fan triangles of polygons of any sizes, grouped by size."""
    by_size: dict = {}
    for p in polys:
        by_size.setdefault(len(p), []).append(p)
    tris = [fan_triangles(np.asarray(group, dtype=np.int64)) for group in by_size.values()]
    return np.concatenate(tris) if tris else np.zeros((0, 3), np.int64)


# ----------------------------------------------------------------------------- OBJ


def _obj_index(word: str, count: int) -> int:
    """0-based vertex index of an OBJ face corner ``i``, ``i/t``, ``i/t/n`` or ``i//n``."""
    i = int(word.split("/", 1)[0])
    if i > 0:
        return i - 1
    if i < 0:
        return count + i
    raise ValueError("OBJ indices start at 1")


def read_obj(file: Path, source: str, size: int, limits: ReadLimits, num_points: int | None) -> np.ndarray:
    """Surface samples of an OBJ mesh, or its vertices when it has no faces: ``(M, 3)``."""
    blocks, polys, count = [], [], 0
    with open_regular(file, source) as fh:
        for start, lines in text_chunks(fh, source):
            vrows = []
            for number, line in data_rows(lines, start):
                key = line.split(None, 1)[0]
                if key == "v":
                    vrows.append((number, line[1:]))
                    count += 1
                elif key == "f":
                    try:
                        polys.append([_obj_index(w, count) for w in line.split()[1:]])
                    except ValueError:
                        raise corrupt(source, f"line {number} {quote(line)} is not a face 'f i j k'") from None
            limits.check_points(count, source, "vertices")
            blocks.append(parse_block(vrows, None, source))
    if count == 0:
        raise empty(source, "the OBJ file has no vertices ('v x y z' lines)")
    vertices = np.concatenate(blocks)
    if not polys:
        return vertices
    return mesh_points(vertices, _polygon_rows(polys), source, num_points)


# ----------------------------------------------------------------------------- OFF

_OFF_HEADER = re.compile(r"^(ST)?C?N?4?n?OFF(.*)$")


def _off_counts(words: List[str], number: int, source: str) -> List[int]:
    try:
        counts = [int(w) for w in words[:3]]
    except ValueError:
        counts = []
    if len(counts) < 2:
        raise corrupt(source, f"line {number}: OFF counts should be 'vertices faces edges'")
    if min(counts) < 0:
        raise corrupt(source, f"line {number}: OFF counts {counts} are negative")
    return counts


def read_off(file: Path, source: str, size: int, limits: ReadLimits, num_points: int | None) -> np.ndarray:
    """Surface samples of an OFF mesh (or its vertices when it has no faces): ``(M, 3)``."""
    counts: List[int] | None = None
    header_seen = False
    blocks, polys, nv_have, nf_have = [], [], 0, 0
    with open_regular(file, source) as fh:
        for start, lines in text_chunks(fh, source):
            rows = data_rows(lines, start)
            vrows = []
            for number, line in rows:
                if not header_seen:
                    match = _OFF_HEADER.match(line)
                    if match is None:
                        raise corrupt(source, "not an OFF file (it does not start with 'OFF')")
                    header_seen = True
                    if match.group(2).split():  # "OFF 8 6 0" or "OFF8 6 0"
                        counts = _off_counts(match.group(2).split(), number, source)
                        _check_off(counts, size, source, limits)
                    continue
                if counts is None:
                    counts = _off_counts(line.split(), number, source)
                    _check_off(counts, size, source, limits)
                    continue
                if nv_have < counts[0]:
                    vrows.append((number, line))
                    nv_have += 1
                elif nf_have < counts[1]:
                    words = line.split()
                    try:
                        n = int(words[0])
                        if n < 0 or len(words) < n + 1:
                            raise ValueError
                        poly = [int(w) for w in words[1: n + 1]]
                    except ValueError:
                        raise corrupt(source, f"line {number} {quote(line)} is not a face 'n i1 ... in' "
                                      "(the OFF counts may not match the body)") from None
                    polys.append(poly)
                    nf_have += 1
                else:
                    break
            blocks.append(parse_block(vrows, None, source))
            if counts is not None and nv_have == counts[0] and nf_have == counts[1]:
                break
    if counts is None:
        raise corrupt(source, "OFF file has no 'vertices faces edges' counts line")
    if nv_have < counts[0] or nf_have < counts[1]:
        raise corrupt(source, f"file is truncated (the OFF header promises {counts[0]} vertices and "
                      f"{counts[1]} faces, found {nv_have} and {nf_have})")
    if counts[0] == 0:
        raise empty(source, "the OFF file has 0 vertices")
    return mesh_points(np.concatenate(blocks), _polygon_rows(polys), source, num_points)


def _check_off(counts: List[int], size: int, source: str, limits: ReadLimits) -> None:
    """OFF counts must fit the file: a vertex row takes at least 6 bytes, a face row 4."""
    limits.check_points(counts[0], source, "vertices")
    if counts[0] * 6 + counts[1] * 4 > size:
        raise corrupt(source, f"file is truncated (the OFF header promises {counts[0]:,} vertices and "
                      f"{counts[1]:,} faces, the file has only {size:,} bytes)")


# ----------------------------------------------------------------------------- STL

_STL_TRIANGLE = np.dtype([("normal", "<f4", (3,)), ("corners", "<f4", (3, 3)), ("attr", "<u2")])


def read_stl(file: Path, source: str, size: int, limits: ReadLimits, num_points: int | None) -> np.ndarray:
    """Surface samples of a binary or ASCII STL mesh: ``(M, 3)``."""
    limits.check_bytes(size, source)
    with open_regular(file, source) as fh:
        head = fh.read(84)
        triangles = int(np.frombuffer(head[80:84], dtype="<u4")[0]) if len(head) == 84 else -1
        # binary: exactly 84 + 50 T bytes (less than one triangle of trailing padding tolerated)
        binary = triangles >= 0 and 0 <= size - (84 + 50 * triangles) < 50
        if binary and (size == 84 + 50 * triangles or not head.lstrip().startswith(b"solid")):
            limits.check_points(3 * triangles, source, "vertices")
            data = fh.read(50 * triangles)
            if len(data) != 50 * triangles:
                raise corrupt(source, "STL file changed while it was read")
            corners = np.frombuffer(data, dtype=_STL_TRIANGLE, count=triangles)["corners"]
            vertices = corners.reshape(-1, 3).astype(np.float64)
        elif head.lstrip().startswith(b"solid"):
            fh.seek(0)
            vertices = _ascii_stl(fh, source, limits)
        else:
            raise corrupt(source, f"STL file is truncated or corrupt ({size:,} bytes do not match its "
                          f"{max(triangles, 0):,} triangles)")
    if len(vertices) == 0:
        raise empty(source, "the STL file has no triangles")
    faces = np.arange(len(vertices), dtype=np.int64).reshape(-1, 3)
    return mesh_points(vertices, faces, source, num_points)


def _ascii_stl(fh, source: str, limits: ReadLimits) -> np.ndarray:
    """Corners ``(3T, 3)`` of an ASCII STL file (``vertex x y z`` lines)."""
    blocks, count = [], 0
    for start, lines in text_chunks(fh, source):
        rows = [(n, line[6:]) for n, line in data_rows(lines, start) if line.startswith("vertex")]
        count += len(rows)
        limits.check_points(count, source, "vertices")
        blocks.append(parse_block(rows, None, source))
    if count % 3:
        raise corrupt(source, f"ASCII STL has {count} vertex lines, not a multiple of 3")
    return np.concatenate(blocks) if blocks else np.zeros((0, 3))
