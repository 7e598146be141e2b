"""Regenerate the sample clouds in ``data/samples/`` (deterministic, no network).

    python scripts/make_samples.py [--out data/samples]

Writes chair.ply (binary PLY, float32), table.pcd (binary PCD via open3d),
airplane.xyz (text), lamp.npy (float32 array) and mug.obj (triangle mesh), all y up,
in metres, not normalised (``load_point_cloud`` normalises them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pointcalip.testing.shapes import make_mug_mesh, make_object

NUM_POINTS = 1024
SEEDS = {"chair": 1, "table": 2, "airplane": 3, "lamp": 4}


def write_ply(path: Path, points: np.ndarray, comment: str) -> None:
    """Binary little-endian PLY with float32 x y z; ``points: (N, 3)``."""
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"comment {comment}\nelement vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\nend_header\n"
    )
    path.write_bytes(header.encode("ascii") + np.asarray(points, dtype="<f4").tobytes())


def write_pcd(path: Path, points: np.ndarray) -> None:
    """Binary PCD written by open3d; ``points: (N, 3)``."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    if not o3d.io.write_point_cloud(str(path), cloud, write_ascii=False, compressed=False):
        raise RuntimeError(f"open3d could not write {path}")


def write_xyz(path: Path, points: np.ndarray) -> None:
    """One ``x y z`` line per point, 4 decimals; ``points: (N, 3)``."""
    np.savetxt(path, points, fmt="%.4f")


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, comment: str) -> None:
    """Wavefront OBJ; ``vertices: (V, 3)``, ``faces: (F, 3)`` zero-based."""
    lines = [f"# {comment}"]
    lines += [f"v {x:.5f} {y:.5f} {z:.5f}" for x, y, z in vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    """Write the five sample files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "samples")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    clouds = {name: make_object(name, NUM_POINTS, seed) for name, seed in SEEDS.items()}
    write_ply(out / "chair.ply", clouds["chair"], "pointcalip synthetic chair, y up")
    write_pcd(out / "table.pcd", clouds["table"])
    write_xyz(out / "airplane.xyz", clouds["airplane"])
    np.save(out / "lamp.npy", clouds["lamp"])
    write_obj(out / "mug.obj", *make_mug_mesh(), "pointcalip synthetic mug, y up")
    for path in sorted(out.iterdir()):
        print(f"{path.name:14s} {path.stat().st_size:7d} bytes")


if __name__ == "__main__":
    main()
