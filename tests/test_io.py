"""Point-cloud I/O, validation, normalisation and farthest point sampling (CPU, fast)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
import torch

from pointcalip import errors
from pointcalip.clouds import (
    MESH_EXTENSIONS,
    POINT_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    load_point_cloud,
    mesh_sample_count,
    normalize_cloud,
    prepare_cloud,
    resample_cloud,
    validate_cloud,
)
from pointcalip.clouds.sampling import (
    farthest_point_sample,
    farthest_point_sample_numpy,
    farthest_point_sample_torch,
)

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


# ------------------------------------------------------------------ reference FPS


def reference_fps(points: np.ndarray, k: int) -> list[int]:
    """Obviously-correct FPS with plain Python loops: start at 0, ties to the lowest index."""
    pts = [tuple(float(v) for v in row[:3]) for row in points]
    dist = [math.inf] * len(pts)
    chosen = [0]
    while len(chosen) < k:
        lx, ly, lz = pts[chosen[-1]]
        best, best_d = 0, -1.0
        for i, (x, y, z) in enumerate(pts):
            d = (x - lx) * (x - lx) + (y - ly) * (y - ly) + (z - lz) * (z - lz)
            if d < dist[i]:
                dist[i] = d
            if dist[i] > best_d:
                best, best_d = i, dist[i]
        chosen.append(best)
    return chosen


# --------------------------------------------------------------------- helpers


@pytest.fixture
def cloud() -> np.ndarray:
    """A known float32 cloud ``(300, 3)`` away from the origin, not normalised."""
    rng = np.random.default_rng(7)
    return (rng.normal(size=(300, 3)) * [1.0, 2.0, 0.5] + [3.0, -1.0, 2.0]).astype(np.float32)


def o3d_cloud(points: np.ndarray, normals: bool = False, colors: bool = False) -> o3d.geometry.PointCloud:
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    if normals:
        pc.normals = o3d.utility.Vector3dVector(np.tile([0.0, 0.0, 1.0], (len(points), 1)))
    if colors:
        pc.colors = o3d.utility.Vector3dVector(np.full((len(points), 3), 0.5))
    return pc


def write_cloud(path: Path, points: np.ndarray, **kwargs) -> Path:
    assert o3d.io.write_point_cloud(str(path), o3d_cloud(points, **kwargs.pop("extra", {})), **kwargs)
    return path


def box_mesh() -> o3d.geometry.TriangleMesh:
    mesh = o3d.geometry.TriangleMesh.create_box(width=1.0, height=2.0, depth=3.0)
    mesh.compute_triangle_normals()
    return mesh


def one_line_error(excinfo: pytest.ExceptionInfo, name: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    assert name in message
    assert "; " in message  # problem; what to do
    return message


# ------------------------------------------------------------------- round trips


WRITERS = {
    "binary.ply": lambda p, c: write_cloud(p, c),
    "ascii.ply": lambda p, c: write_cloud(p, c, write_ascii=True),
    "upper.PLY": lambda p, c: write_cloud(p, c),
    "binary.pcd": lambda p, c: write_cloud(p, c),
    "ascii.pcd": lambda p, c: write_cloud(p, c, write_ascii=True),
    "compressed.pcd": lambda p, c: write_cloud(p, c, compressed=True),
    "cloud.xyz": lambda p, c: write_cloud(p, c),
    "cloud.xyzn": lambda p, c: write_cloud(p, c, extra={"normals": True}),
    "cloud.xyzrgb": lambda p, c: write_cloud(p, c, extra={"colors": True}),
    "cloud.pts": lambda p, c: write_cloud(p, c),
    "plain.txt": lambda p, c: np.savetxt(p, c, fmt="%.7g"),
    "header.txt": lambda p, c: np.savetxt(p, c, fmt="%.7g", header="x y z", comments=""),
    "comma.csv": lambda p, c: np.savetxt(p, np.hstack([c, np.ones_like(c)]), fmt="%.7g", delimiter=",",
                                         header="x,y,z,r,g,b", comments=""),
    "semicolon.csv": lambda p, c: np.savetxt(p, c, fmt="%.7g", delimiter=";"),
    "cloud.npy": lambda p, c: np.save(p, c),
    "wide.npy": lambda p, c: np.save(p, np.hstack([c, np.zeros((len(c), 3), np.float32)]).astype(np.float64)),
    "keyed.npz": lambda p, c: np.savez(p, points=c, labels=np.arange(len(c))),
    "single.npz": lambda p, c: np.savez_compressed(p, xyz=c),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_round_trip(tmp_path: Path, cloud: np.ndarray, name: str) -> None:
    path = tmp_path / name
    WRITERS[name](path, cloud)
    raw = load_point_cloud(path, normalize=False)
    assert raw.dtype == np.float32 and raw.shape == cloud.shape
    text = name.endswith(("ascii.ply",))  # open3d's ASCII PLY keeps 6 significant digits
    np.testing.assert_allclose(raw, cloud, rtol=1e-5 if text else 1e-6, atol=1e-4 if text else 1e-6)
    normed = load_point_cloud(path)
    np.testing.assert_allclose(normed, normalize_cloud(raw), atol=1e-6)
    assert load_point_cloud(str(path), num_points=64).shape == (64, 3)


def test_every_extension_has_a_round_trip() -> None:
    covered = {Path(name).suffix.lower() for name in WRITERS}
    assert covered == set(POINT_EXTENSIONS)
    assert set(SUPPORTED_EXTENSIONS) == set(POINT_EXTENSIONS) | set(MESH_EXTENSIONS)


def test_open3d_console_is_silent(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 5\nproperty float x\n"
                    b"property float y\nproperty float z\nend_header\n" + b"\0" * 59)
    with pytest.raises(errors.UnreadableFileError):
        load_point_cloud(bad)
    (tmp_path / "bad.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1\n")
    with pytest.raises(errors.UnreadableFileError, match=r"'3 0 1' is not a face"):
        load_point_cloud(tmp_path / "bad.off")
    print("after")
    out, err = capfd.readouterr()
    assert out == "after\n" and err == ""


# ------------------------------------------------------------------------ meshes


@pytest.mark.parametrize("ext", [".obj", ".off", ".stl", ".ply", ".OBJ"])
def test_mesh_points_lie_on_the_surface(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"box{ext}"
    assert o3d.io.write_triangle_mesh(str(path), box_mesh())
    points = load_point_cloud(path, normalize=False)
    assert points.shape == (mesh_sample_count(None), 3)
    size = np.array([1.0, 2.0, 3.0])
    assert (points >= -1e-6).all() and (points <= size + 1e-6).all()
    gap = np.minimum(np.abs(points), np.abs(points - size)).min(axis=1)  # distance to nearest face
    assert gap.max() < 1e-5
    # uniform by area: the two 2x3 faces (x = 0 or 1) hold 12 / 22 of the area
    share = np.mean((np.abs(points[:, 0]) < 1e-6) | (np.abs(points[:, 0] - 1) < 1e-6))
    assert abs(share - 12 / 22) < 0.04
    np.testing.assert_array_equal(points, load_point_cloud(path, normalize=False))  # fixed seed
    assert load_point_cloud(path, num_points=300).shape == (300, 3)


def test_mesh_without_faces_gives_its_vertices(tmp_path: Path, cloud: np.ndarray) -> None:
    path = tmp_path / "verts.obj"
    path.write_text("".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in cloud[:50]))
    np.testing.assert_allclose(load_point_cloud(path, normalize=False), cloud[:50], atol=1e-5)


# ----------------------------------------------------------- normalise, resample


def test_normalize_centres_and_scales(cloud: np.ndarray) -> None:
    out = normalize_cloud(cloud)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-6)
    assert abs(np.linalg.norm(out, axis=1).max() - 1.0) < 1e-6
    np.testing.assert_allclose(normalize_cloud(cloud * 5.0 - 2.0), out, atol=1e-5)


def test_resample_only_when_larger(cloud: np.ndarray) -> None:
    normed = normalize_cloud(cloud)
    small = prepare_cloud(cloud, num_points=100)
    ordered = normed[np.lexsort((normed[:, 2], normed[:, 1], normed[:, 0]))]  # sorted by x, y, z
    np.testing.assert_array_equal(small, ordered[sorted(reference_fps(ordered, 100))])
    np.testing.assert_array_equal(prepare_cloud(cloud, num_points=1000), normed)
    np.testing.assert_array_equal(prepare_cloud(cloud, num_points=300), normed)
    assert resample_cloud(normed, 299).shape == (299, 3)


def test_resample_ignores_point_order(cloud: np.ndarray) -> None:
    perm = np.random.default_rng(3).permutation(len(cloud))
    np.testing.assert_array_equal(resample_cloud(cloud, 64), resample_cloud(cloud[perm], 64))


@pytest.mark.parametrize("bad", [0, -5, 2.5, "10", True])
def test_bad_num_points(cloud: np.ndarray, bad: object) -> None:
    with pytest.raises(errors.ConfigError, match="num_points"):
        prepare_cloud(cloud, num_points=bad)


# ---------------------------------------------------------------- bad inputs


def _ply(n: int, body: bytes) -> bytes:
    return (b"ply\nformat binary_little_endian 1.0\nelement vertex %d\nproperty float x\nproperty float y\n"
            b"property float z\nend_header\n" % n) + body


def _pcd(n: int, data: str, body: bytes) -> bytes:
    head = (f"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\n"
            f"HEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {data}\n")
    return head.encode() + body


def _npy_bytes(tmp_path: Path, array: np.ndarray) -> bytes:
    np.save(tmp_path / "_tmp.npy", array)
    return (tmp_path / "_tmp.npy").read_bytes()


def _good(tmp_path: Path, name: str, **kwargs) -> bytes:
    rng = np.random.default_rng(0)
    path = write_cloud(tmp_path / f"_good_{name}", rng.normal(size=(100, 3)).astype(np.float32), **kwargs)
    return path.read_bytes()


def _stl(tmp_path: Path) -> bytes:
    path = tmp_path / "_good.stl"
    o3d.io.write_triangle_mesh(str(path), box_mesh())
    return path.read_bytes()


BAD_FILES = {
    # name: (content builder, expected error)
    "truncated.ply": (lambda t: _good(t, "a.ply")[:1500], errors.UnreadableFileError),
    "truncated_ascii.ply": (lambda t: _good(t, "b.ply", write_ascii=True)[:900], errors.UnreadableFileError),
    "cut_header.ply": (lambda t: _good(t, "c.ply")[:60], errors.UnreadableFileError),
    "garbage.ply": (lambda t: np.random.default_rng(1).bytes(400), errors.UnreadableFileError),
    "no_xyz.ply": (lambda t: b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float a\nend_header\n1\n",
                   errors.UnreadableFileError),
    "empty_file.ply": (lambda t: b"", errors.UnreadableFileError),
    "zero_points.ply": (lambda t: _ply(0, b""), errors.EmptyCloudError),
    "truncated.pcd": (lambda t: _good(t, "a.pcd")[:700], errors.UnreadableFileError),
    "truncated_ascii.pcd": (lambda t: _good(t, "b.pcd", write_ascii=True)[:1000], errors.UnreadableFileError),
    "garbage.pcd": (lambda t: np.random.default_rng(2).bytes(400), errors.UnreadableFileError),
    "zero_points.pcd": (lambda t: _pcd(0, "ascii", b""), errors.EmptyCloudError),
    "garbage.npy": (lambda t: np.random.default_rng(3).bytes(400), errors.UnreadableFileError),
    "truncated.npy": (lambda t: _npy_bytes(t, np.ones((100, 3)))[:500], errors.UnreadableFileError),
    "strings.npy": (lambda t: _npy_bytes(t, np.array([["a", "b", "c"]])), errors.UnreadableFileError),
    "flat.npy": (lambda t: _npy_bytes(t, np.arange(9.0)), errors.UnreadableFileError),
    "two_columns.npy": (lambda t: _npy_bytes(t, np.ones((10, 2))), errors.UnreadableFileError),
    "no_rows.npy": (lambda t: _npy_bytes(t, np.zeros((0, 3))), errors.EmptyCloudError),
    "nan.npy": (lambda t: _npy_bytes(t, np.array([[0, 0, 0], [1, np.nan, 0.0]])), errors.NonFiniteError),
    "inf.npy": (lambda t: _npy_bytes(t, np.array([[0, 0, 0], [1, 2, -np.inf]])), errors.NonFiniteError),
    "huge.npy": (lambda t: _npy_bytes(t, np.array([[0, 0, 0], [1e39, 0, 0]])), errors.NonFiniteError),
    "same.npy": (lambda t: _npy_bytes(t, np.ones((50, 3))), errors.DegenerateCloudError),
    "one_point.npy": (lambda t: _npy_bytes(t, np.ones((1, 3))), errors.DegenerateCloudError),
    "garbage.npz": (lambda t: b"PK\x03\x04" + np.random.default_rng(4).bytes(200), errors.UnreadableFileError),
    "empty_file.txt": (lambda t: b"", errors.EmptyCloudError),
    "header_only.csv": (lambda t: b"x,y,z\n", errors.EmptyCloudError),
    "two_columns.txt": (lambda t: b"1 2\n3 4\n5 6\n", errors.UnreadableFileError),
    "words.txt": (lambda t: b"x y z\n1 2 3\n4 five 6\n", errors.UnreadableFileError),
    "binary.txt": (lambda t: b"\xff\xfe\x00\x81" * 20, errors.UnreadableFileError),
    "nan.txt": (lambda t: b"1 2 3\nnan 0 0\n", errors.NonFiniteError),
    "same.csv": (lambda t: b"1,2,3\n1,2,3\n1,2,3\n", errors.DegenerateCloudError),
    "empty_file.xyz": (lambda t: b"", errors.EmptyCloudError),
    "words.xyz": (lambda t: b"1 2 3\nhello world\n", errors.UnreadableFileError),
    "inf.xyz": (lambda t: b"1 2 3\ninf 2 3\n", errors.NonFiniteError),
    "short_rows.xyzn": (lambda t: b"1 2 3\n4 5 6\n", errors.UnreadableFileError),
    "truncated.pts": (lambda t: b"5\n1 2 3\n4 5 6\n", errors.UnreadableFileError),
    "no_count.pts": (lambda t: b"1 2 3\n4 5 6\n", errors.UnreadableFileError),
    "truncated.stl": (lambda t: _stl(t)[:300], errors.UnreadableFileError),
    "truncated.off": (lambda t: b"OFF\n8 12 0\n0 0 0\n1 0 0\n", errors.UnreadableFileError),
    "empty_file.obj": (lambda t: b"", errors.EmptyCloudError),
    "empty_file.stl": (lambda t: b"", errors.UnreadableFileError),
    "empty_file.npy": (lambda t: b"", errors.UnreadableFileError),
    "empty.obj": (lambda t: b"# nothing here\n", errors.EmptyCloudError),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file(tmp_path: Path, name: str) -> None:
    build, expected = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(build(tmp_path))
    with pytest.raises(expected) as excinfo:
        load_point_cloud(path, num_points=64)
    assert type(excinfo.value) is expected
    one_line_error(excinfo, name)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(errors.MissingFileError) as excinfo:
        load_point_cloud(tmp_path / "nowhere.ply")
    assert "no such file" in one_line_error(excinfo, "nowhere.ply")


def test_unknown_extension_lists_the_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "cloud.las"
    path.write_bytes(b"data")
    with pytest.raises(errors.UnsupportedFormatError) as excinfo:
        load_point_cloud(path)
    message = one_line_error(excinfo, "cloud.las")
    assert all(ext in message for ext in SUPPORTED_EXTENSIONS)


def test_directory_is_unreadable(tmp_path: Path) -> None:
    folder = tmp_path / "folder.ply"
    folder.mkdir()
    with pytest.raises(errors.UnreadableFileError) as excinfo:
        load_point_cloud(folder)
    one_line_error(excinfo, "folder.ply")


def test_npz_with_several_arrays_needs_points_key(tmp_path: Path, cloud: np.ndarray) -> None:
    path = tmp_path / "many.npz"
    np.savez(path, a=cloud, b=cloud)
    with pytest.raises(errors.UnreadableFileError, match="'points'"):
        load_point_cloud(path)


def test_errors_are_pointcalip_errors(tmp_path: Path) -> None:
    for cls in (errors.MissingFileError, errors.UnreadableFileError, errors.EmptyCloudError):
        assert issubclass(cls, errors.PointCloudError) and issubclass(cls, errors.PointcalipError)


# -------------------------------------------------------------- validate_cloud


@pytest.mark.parametrize(
    "points, expected",
    [
        (np.zeros((0, 3)), errors.EmptyCloudError),
        ([], errors.EmptyCloudError),
        (np.array([[0.0, 0.0, 0.0], [np.nan, 1.0, 2.0]]), errors.NonFiniteError),
        (np.array([[0.0, 0.0, 0.0], [np.inf, 1.0, 2.0]]), errors.NonFiniteError),
        (np.full((10, 3), 2.5), errors.DegenerateCloudError),
        (np.ones((10, 2)), errors.PointCloudError),
        (np.ones((2, 10, 3)), errors.PointCloudError),
        (np.array([["a", "b", "c"]]), errors.PointCloudError),
    ],
)
def test_validate_cloud_rejects(points: object, expected: type) -> None:
    with pytest.raises(expected) as excinfo:
        validate_cloud(points, "my_array")
    one_line_error(excinfo, "my_array")


def test_validate_cloud_accepts_and_drops_extra_columns() -> None:
    arr = np.arange(24, dtype=np.int64).reshape(4, 6)
    out = validate_cloud(arr, "x")
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, arr[:, :3])
    np.testing.assert_array_equal(validate_cloud(torch.ones(3, 3).cumsum(0)), np.ones((3, 3)).cumsum(0))


# ---------------------------------------------------------------------- FPS


@pytest.mark.parametrize("seed, n, k", [(11, 400, 100), (12, 1000, 257), (13, 64, 64), (14, 50, 1)])
def test_fps_matches_reference(seed: int, n: int, k: int) -> None:
    points = np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)
    ref = reference_fps(points, k)
    np.testing.assert_array_equal(farthest_point_sample_numpy(points, k), ref)
    fast = farthest_point_sample(points, k)
    assert fast.dtype == np.int64
    np.testing.assert_array_equal(fast, sorted(ref))  # open3d: same set, ascending


def test_fps_ties_go_to_the_lowest_index() -> None:
    grid = np.stack(np.meshgrid(*[np.arange(4.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ref = reference_fps(grid, 20)
    np.testing.assert_array_equal(farthest_point_sample_numpy(grid, 20), ref)
    np.testing.assert_array_equal(farthest_point_sample(grid, 20), sorted(ref))
    torch_idx = farthest_point_sample_torch(torch.from_numpy(grid)[None], 20)
    np.testing.assert_array_equal(torch_idx[0].numpy(), ref)


def test_fps_with_fewer_distinct_points_than_k() -> None:
    points = np.repeat(np.random.default_rng(5).normal(size=(3, 3)), 4, axis=0)
    ref = reference_fps(points, 6)
    assert ref[3:] == [0, 0, 0]
    np.testing.assert_array_equal(farthest_point_sample(points, 6), sorted(ref))


@pytest.mark.parametrize("k", [0, 11])
def test_fps_rejects_bad_k(k: int) -> None:
    with pytest.raises(ValueError):
        farthest_point_sample(np.random.default_rng(0).normal(size=(10, 3)), k)
    with pytest.raises(ValueError):
        farthest_point_sample_torch(torch.zeros(1, 10, 3), k)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_fps_matches_reference(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    points = torch.randn(3, 500, 3, generator=gen, dtype=torch.float64).to(dtype)
    idx = farthest_point_sample_torch(points, 128)
    assert idx.dtype == torch.long and idx.shape == (3, 128)
    for b in range(3):
        np.testing.assert_array_equal(idx[b].numpy(), reference_fps(points[b].numpy(), 128))


# -------------------------------------------------------------------- samples


@pytest.mark.parametrize("name", ["chair.ply", "table.pcd", "airplane.xyz", "lamp.npy", "mug.obj"])
def test_samples_load(name: str) -> None:
    path = SAMPLES / name
    assert path.stat().st_size < 32_000
    points = load_point_cloud(path, num_points=1024)
    assert points.shape == (1024, 3) and points.dtype == np.float32
    assert abs(np.linalg.norm(points, axis=1).max() - 1.0) < 0.05
    assert len(load_point_cloud(path, normalize=False)) <= mesh_sample_count(None)
