"""Untrusted files: lying headers, special files, bombs, pickles, encodings, fuzzed files (CPU, fast)."""

from __future__ import annotations

import io
import os
import pickle
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pointcalip import errors
from pointcalip.clouds import ReadLimits, load_point_cloud, read_point_cloud
from pointcalip.clouds.readers.pcd import LZF_MAX_RATIO, lzf_decompress

XYZ = "property float x\nproperty float y\nproperty float z\n"


def one_line(excinfo: pytest.ExceptionInfo, name: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and name in message
    return message


def expect(path: Path, cls: type, match: str | None = None, **kwargs) -> str:
    with pytest.raises(cls, match=match) as excinfo:
        load_point_cloud(path, num_points=64, **kwargs)
    return one_line(excinfo, path.name)


def cloud(n: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)


def ply_binary(n_claimed: int, points: np.ndarray) -> bytes:
    head = f"ply\nformat binary_little_endian 1.0\nelement vertex {n_claimed}\n{XYZ}end_header\n"
    return head.encode() + points.astype("<f4").tobytes()


def pcd_head(points: int, data: str, width: int | None = None, height: int = 1) -> bytes:
    width = points if width is None else width
    return (f"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {width}\nHEIGHT {height}\n"
            f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {points}\nDATA {data}\n").encode()


def npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


# ------------------------------------------------------------------------ lying headers


LIARS = {
    # name: (bytes, expected error, text in the message)
    "vertex_count.ply": (ply_binary(10_000_000, cloud()), errors.UnreadableFileError, "truncated"),
    "vertex_count_huge.ply": (ply_binary(3_000_000_000, cloud()), errors.ReadLimitError, "--max-points"),
    "negative.ply": (ply_binary(0, cloud()).replace(b"vertex 0", b"vertex -5"), errors.UnreadableFileError,
                     "bad PLY header line"),
    "ascii_count.ply": ((f"ply\nformat ascii 1.0\nelement vertex 40000000\n{XYZ}end_header\n1 2 3\n").encode(),
                        errors.UnreadableFileError, "truncated"),
    "points.pcd": (pcd_head(5_000_000, "binary") + cloud().tobytes(), errors.UnreadableFileError, "truncated"),
    "points_huge.pcd": (pcd_head(400_000_000, "binary") + cloud().tobytes(), errors.ReadLimitError, "--max-points"),
    "width_height.pcd": (pcd_head(50, "binary", width=1000, height=1000) + cloud().tobytes(),
                         errors.UnreadableFileError, "disagrees"),
    "negative.pcd": (pcd_head(-5, "ascii") + b"1 2 3\n", errors.UnreadableFileError, "negative"),
    "ascii_points.pcd": (pcd_head(9_000_000, "ascii") + b"1 2 3\n4 5 6\n", errors.UnreadableFileError, "truncated"),
    # binary_compressed claiming 300M points (3.6 GB) from 20 bytes
    "compressed_huge.pcd": (pcd_head(300_000_000, "binary_compressed") + struct.pack("<II", 12, 3_600_000_000)
                            + b"\0" * 12, errors.ReadLimitError, "--max-points"),
    "compressed_size.pcd": (pcd_head(50, "binary_compressed") + struct.pack("<II", 12, 4_000_000) + b"\0" * 12,
                            errors.UnreadableFileError, "inflates to"),
    "compressed_ratio.pcd": (pcd_head(1_000_000, "binary_compressed") + struct.pack("<II", 12, 12_000_000)
                             + b"\0" * 12, errors.UnreadableFileError, "LZF"),
    "compressed_short.pcd": (pcd_head(50, "binary_compressed") + struct.pack("<II", 5000, 600) + b"\0" * 12,
                             errors.UnreadableFileError, "truncated"),
    "counts.off": (b"OFF\n90000000 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", errors.ReadLimitError, "--max-points"),
    "counts_big.off": (b"OFF\n9000000 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", errors.UnreadableFileError, "truncated"),
    "negative.off": (b"OFF\n-3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", errors.UnreadableFileError, "negative"),
    # the header says 3 vertices, the body has 4: the 4th vertex is read as a face
    "disagrees.off": (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n0.5 0.5 1\n3 0 1 2\n", errors.UnreadableFileError,
                      "not a face"),
    "bad_index.off": (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", errors.UnreadableFileError, "does not exist"),
    "shape.npy": (npy_header((100_000_000, 3)) + cloud().tobytes(), errors.ReadLimitError, "--max-points"),
    "shape_small.npy": (npy_header((1_000_000, 3)) + cloud().tobytes(), errors.UnreadableFileError, "truncated"),
    "negative.npy": (npy_header((-5, 3)) + cloud().tobytes(), errors.UnreadableFileError, ""),
    "count.pts": (b"900000000\n1 2 3\n", errors.ReadLimitError, "--max-points"),
    "count_big.pts": (b"9000000\n1 2 3\n", errors.UnreadableFileError, "truncated"),
    "negative.pts": (b"-5\n1 2 3\n", errors.UnreadableFileError, "point count"),
    "count.stl": (b"\0" * 80 + struct.pack("<I", 50_000_000) + b"\0" * 100, errors.UnreadableFileError, "truncated"),
    "index.obj": (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 99\n", errors.UnreadableFileError, "does not exist"),
}


@pytest.mark.parametrize("name", sorted(LIARS))
def test_lying_header(tmp_path: Path, name: str) -> None:
    content, cls, text = LIARS[name]
    path = tmp_path / name
    path.write_bytes(content)
    message = expect(path, cls)
    assert text in message
    assert type(cls) is type


def test_limit_messages_say_how_to_raise_them(tmp_path: Path) -> None:
    path = tmp_path / "big.npy"
    np.save(path, cloud(200))
    message = expect(path, errors.ReadLimitError, limits=ReadLimits(max_points=100))
    assert "--max-points" in message and "ReadLimits(max_points=" in message
    message = expect(path, errors.ReadLimitError, limits=ReadLimits(max_bytes=1000))
    assert "--max-bytes" in message
    assert load_point_cloud(path, limits=ReadLimits(max_points=200)).shape == (200, 3)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10", True])
def test_read_limits_reject_bad_values(bad: object) -> None:
    with pytest.raises(errors.ConfigError):
        ReadLimits(max_points=bad)
    with pytest.raises(errors.ConfigError):
        ReadLimits(max_bytes=bad)


# ------------------------------------------------------------------------- special files


def _fails_quickly(path: Path, cls: type) -> str:
    """load_point_cloud(path) must raise ``cls`` within 20 s (run in a thread as a guard)."""
    result: dict = {}

    def run() -> None:
        try:
            load_point_cloud(path)
        except Exception as exc:  # recorded for the assertions below
            result["exc"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive() and path.is_fifo():  # unblock the reader before failing
        with open(os.open(path, os.O_WRONLY | os.O_NONBLOCK), "wb"):
            pass
    assert not thread.is_alive(), f"reading {path.name} blocked"
    assert isinstance(result.get("exc"), cls), result
    message = str(result["exc"])
    assert "\n" not in message and path.name in message
    return message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.xyz"
    os.mkfifo(fifo)
    assert "named pipe" in _fails_quickly(fifo, errors.UnreadableFileError)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_char_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "zero.xyz"
    link.symlink_to("/dev/zero")
    assert "character device" in _fails_quickly(link, errors.UnreadableFileError)


def test_directory_and_dangling_link(tmp_path: Path) -> None:
    (tmp_path / "dir.ply").mkdir()
    assert "directory" in _fails_quickly(tmp_path / "dir.ply", errors.UnreadableFileError)
    dangling = tmp_path / "gone.ply"
    dangling.symlink_to(tmp_path / "missing.ply")
    assert "broken symbolic link" in _fails_quickly(dangling, errors.MissingFileError)


# ---------------------------------------------------------------------------------- bombs


@pytest.mark.parametrize("name", ["nul.txt", "nul.xyz", "nul.obj", "nul.off", "nul.ply", "nul.pcd", "nul.npy",
                                  "nul.npz", "nul.stl", "nul.pts", "nul.csv"])
def test_sparse_gigabyte_of_nul_bytes(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with open(path, "wb") as fh:
        fh.truncate(1 << 30)  # sparse: 1 GiB that takes no disk space
    _fails_quickly(path, errors.UnreadableFileError)
    expect(path, errors.ReadLimitError, "--max-bytes", limits=ReadLimits(max_bytes=1 << 20))


def test_npz_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, points=np.zeros((2_000_000, 3), np.float32))  # 24 MB of zeros
    assert path.stat().st_size < 100_000
    message = expect(path, errors.ReadLimitError, limits=ReadLimits(max_bytes=1 << 20))
    assert "inflates to" in message and "--max-bytes" in message


def test_npz_member_size_lie_is_bounded(tmp_path: Path) -> None:
    """A member whose .npy header claims more data than the zip entry holds."""
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("points.npy", npy_header((1_000_000, 3)) + cloud().tobytes())
    assert "truncated" in expect(path, errors.UnreadableFileError)


def test_npz_with_a_non_array_member(tmp_path: Path) -> None:
    path = tmp_path / "notes.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes.txt", "hello")
    assert "not a .npy array" in expect(path, errors.UnreadableFileError)
    path = tmp_path / "fake.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("points.npy", "not numpy at all")
    assert "not a valid .npy" in expect(path, errors.UnreadableFileError)


class _Boom:
    def __reduce__(self):
        return (os.getpid, ())  # would run code if unpickled


def test_pickled_object_arrays_are_never_loaded(tmp_path: Path) -> None:
    obj = np.empty((3, 3), dtype=object)
    obj[:] = _Boom()
    path = tmp_path / "objects.npy"
    np.save(path, obj, allow_pickle=True)
    assert "pickled" in expect(path, errors.UnreadableFileError)
    path = tmp_path / "objects.npz"
    np.savez(path, points=obj)
    assert "pickled" in expect(path, errors.UnreadableFileError)
    path = tmp_path / "raw_pickle.npy"
    path.write_bytes(pickle.dumps(cloud()))
    expect(path, errors.UnreadableFileError)


def test_lzf_output_is_bounded() -> None:
    literal = bytes([2]) + b"abc"
    assert lzf_decompress(literal, 3) == b"abc"
    repeat = literal + bytes([(7 << 5) | 0, 250, 2])  # back-reference of 259 bytes, distance 3
    assert lzf_decompress(repeat, 3 + 259) == b"abc" * 87 + b"a"
    with pytest.raises(ValueError):
        lzf_decompress(repeat, 100)  # would write past the output
    with pytest.raises(ValueError):
        lzf_decompress(bytes([0x20, 9]), 10)  # reference before the start
    assert LZF_MAX_RATIO * 3 >= 264


def _lzf_reference(data: bytes) -> bytes:
    """Byte-by-byte LZF decoder (obviously correct, slow)."""
    out, ip = bytearray(), 0
    while ip < len(data):
        ctrl = data[ip]
        ip += 1
        if ctrl < 32:
            out += data[ip: ip + ctrl + 1]
            ip += ctrl + 1
            continue
        length = ctrl >> 5
        if length == 7:
            length += data[ip]
            ip += 1
        ref = len(out) - ((ctrl & 0x1F) << 8) - data[ip] - 1
        ip += 1
        for k in range(length + 2):
            out.append(out[ref + k])
    return bytes(out)


def test_lzf_matches_byte_by_byte_reference() -> None:
    rng = np.random.default_rng(5)
    for _ in range(30):
        stream, size = bytearray(), 0
        for _ in range(40):
            if size == 0 or rng.random() < 0.4:
                run = int(rng.integers(1, 33))
                stream += bytes([run - 1]) + rng.bytes(run)
                size += run
            else:
                dist = int(rng.integers(1, min(size, 8192) + 1))
                length = int(rng.integers(3, 200))
                code = length - 2
                off = dist - 1
                if code < 7:
                    stream += bytes([(code << 5) | (off >> 8), off & 0xFF])
                else:
                    stream += bytes([(7 << 5) | (off >> 8), code - 7, off & 0xFF])
                size += length
        want = _lzf_reference(bytes(stream))
        assert len(want) == size
        assert lzf_decompress(bytes(stream), size) == want


# ------------------------------------------------------------------------------ encodings


def test_latin1_names_load(tmp_path: Path) -> None:
    obj = tmp_path / "caf\u00e9.obj"
    obj.write_bytes("# mod\u00e8le caf\u00e9\no Chaise_\u00e9l\u00e9gante\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\n"
                    "g pi\u00e8ce\nf 1 2 3\nf 1 2 4\n".encode("latin-1"))
    assert load_point_cloud(obj, num_points=64).shape == (64, 3)
    ply = tmp_path / "latin.ply"
    ply.write_bytes(f"ply\nformat ascii 1.0\ncomment auteur: Jos\u00e9 M\u00fcller\nelement vertex 3\n{XYZ}"
                    "end_header\n0 0 0\n1 0 0\n0 1 1\n".encode("latin-1"))
    assert load_point_cloud(ply).shape == (3, 3)
    xyz = tmp_path / "utf8.xyz"
    xyz.write_text("# point cloud \u2013 \u00e9t\u00e9\n0 0 0\n1 2 3\n", encoding="utf-8")
    assert load_point_cloud(xyz).shape == (2, 3)


@pytest.mark.parametrize("ext", [".txt", ".xyz", ".obj", ".off", ".pts", ".csv", ".xyzn"])
def test_binary_junk_is_refused(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"junk{ext}"
    path.write_bytes(b"1 2 3\n" + bytes(range(256)) * 4)
    assert "binary" in expect(path, errors.UnreadableFileError)


# ------------------------------------------------------------------------- fuzzed files


def _good_files(tmp_path: Path) -> dict:
    import open3d as o3d

    pts = cloud(80, seed=3)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.astype(np.float64)))
    mesh = o3d.geometry.TriangleMesh.create_box(1.0, 2.0, 3.0)
    mesh.compute_triangle_normals()
    out = {}
    for name, kwargs in [("b.ply", {}), ("a.ply", {"write_ascii": True}), ("b.pcd", {}),
                         ("a.pcd", {"write_ascii": True}), ("c.pcd", {"compressed": True}), ("c.xyz", {}),
                         ("c.pts", {})]:
        o3d.io.write_point_cloud(str(tmp_path / name), pc, **kwargs)
        out[name] = (tmp_path / name).read_bytes()
    for name in ("m.obj", "m.off", "m.stl", "m.ply"):
        o3d.io.write_triangle_mesh(str(tmp_path / name), mesh, write_ascii=name != "m.stl")
        out[name] = (tmp_path / name).read_bytes()
    buf = io.BytesIO()
    np.save(buf, pts)
    out["c.npy"] = buf.getvalue()
    buf = io.BytesIO()
    np.savez_compressed(buf, points=pts)
    out["c.npz"] = buf.getvalue()
    out["c.csv"] = "x,y,z\n".encode() + "\n".join(",".join(f"{v:.5f}" for v in p) for p in pts).encode()
    out["c.txt"] = "\n".join(" ".join(f"{v:.5f}" for v in p) for p in pts).encode()
    return out


def _mutations(data: bytes, rng: np.random.Generator, count: int) -> list:
    out = []
    for i in range(count):
        kind = i % 5
        if kind == 0:  # random garbage of a similar size
            out.append(rng.bytes(int(rng.integers(1, max(2, len(data))))))
        elif kind == 1:  # truncated
            out.append(data[: int(rng.integers(0, len(data)))])
        elif kind == 2:  # a few bytes flipped
            arr = bytearray(data)
            for pos in rng.integers(0, len(arr), size=int(rng.integers(1, 8))):
                arr[pos] = int(rng.integers(0, 256))
            out.append(bytes(arr))
        elif kind == 3:  # digits in the header changed (counts, sizes)
            arr = bytearray(data)
            head = min(len(arr), 400)
            digits = [j for j in range(head) if chr(arr[j]).isdigit()]
            for pos in rng.choice(digits, size=min(3, len(digits)), replace=False) if digits else []:
                arr[pos] = ord(str(int(rng.integers(0, 10))))
            out.append(bytes(arr))
        else:  # a chunk duplicated or removed in the middle
            a, b = sorted(rng.integers(0, len(data), size=2))
            out.append(data[:a] + data[a:b] * int(rng.integers(0, 3)) + data[b:])
    return out


def test_fuzzed_files_raise_only_point_cloud_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(1234)
    good = _good_files(tmp_path)
    fuzz = tmp_path / "fuzz"
    fuzz.mkdir()
    failures = 0
    for name, data in good.items():
        assert load_point_cloud(tmp_path / name if (tmp_path / name).exists() else _write(fuzz, name, data)) is not None
        for i, mutated in enumerate(_mutations(data, rng, 20)):
            path = _write(fuzz, f"{i:02d}_{name}", mutated)
            try:
                points, n = read_point_cloud(path, num_points=64)
            except errors.PointCloudError as exc:
                message = str(exc)
                assert "\n" not in message and path.name in message, message
                failures += 1
            else:
                assert points.dtype == np.float32 and points.ndim == 2 and points.shape[1] == 3 and n >= 1
    assert failures > 100  # most mutations break the file


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path
