"""`pointcalip render`: view PNGs, contact sheet and raw depth maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pointcalip.clouds import read_point_cloud
from pointcalip.cli import main
from pointcalip.clouds import load_point_cloud
from pointcalip.projection import get_preset, maps_to_images, project_depth
from pointcalip.render import MIN_BRIGHTNESS, shade_depth

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def _depth_of(path: Path, preset: str = "pointclip", num_points: int = 1024) -> np.ndarray:
    pts = torch.from_numpy(load_point_cloud(path, num_points=num_points)[None])
    return project_depth(pts, get_preset(preset)).numpy()[0]


def test_render_writes_views_sheet_and_depth(tmp_path, capsys) -> None:
    out = tmp_path / "chair"
    assert main(["render", str(SAMPLES / "chair.ply"), "--out", str(out)]) == 0
    assert "6 views" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"view_{k:02d}.png" for k in range(6)] + ["depth.npy", "views.png"])
    depth = np.load(out / "depth.npy")
    assert depth.shape == (6, 128, 128) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, _depth_of(SAMPLES / "chair.ply"), atol=1e-5)
    for k in range(6):
        with Image.open(out / f"view_{k:02d}.png") as im:
            im.verify()
        with Image.open(out / f"view_{k:02d}.png") as im:
            assert im.format == "PNG" and im.size == (128, 128)
            grey = np.asarray(im.convert("L"))
        _check_shading(depth[k], grey)
    with Image.open(out / "views.png") as sheet:
        assert sheet.format == "PNG" and sheet.width >= 3 * 128 and sheet.height >= 2 * 128


def _check_shading(depth: np.ndarray, grey: np.ndarray) -> None:
    """Black background, every point visible, nearer pixels at least as bright as farther ones."""
    filled = depth > 0
    assert filled.any() and (grey[~filled] == 0).all()
    assert (grey[filled] >= round(255 * MIN_BRIGHTNESS)).all()
    z, g = depth[filled], grey[filled].astype(int)
    order = np.argsort(z)
    assert (np.diff(g[order]) <= 0).all()
    assert g[np.argmin(z)] == 255 and g[np.argmax(z)] == round(255 * MIN_BRIGHTNESS)


def test_render_preset_and_num_points(tmp_path, capsys) -> None:
    out = tmp_path / "plane"
    args = ["render", str(SAMPLES / "airplane.xyz"), "--out", str(out), "--preset", "pointclip10", "--num-points", "256"]
    assert main(args) == 0
    depth = np.load(out / "depth.npy")
    assert depth.shape == (10, 224, 224)
    assert len(list(out.glob("view_*.png"))) == 10
    # 256 FPS points of a 1024-point cloud, picked like the classifier picks them.
    points, n = read_point_cloud(SAMPLES / "airplane.xyz", 256)
    assert n == 1024 and points.shape == (256, 3)
    want = project_depth(torch.from_numpy(points[None]), get_preset("pointclip10")).numpy()[0]
    np.testing.assert_allclose(depth, want, atol=1e-5)
    with Image.open(out / "views.png") as sheet:
        assert sheet.width >= 4 * 224 and sheet.height >= 3 * 224  # 3 x 4 grid


def test_render_mesh(tmp_path, capsys) -> None:
    assert main(["render", str(SAMPLES / "mug.obj"), "--out", str(tmp_path / "mug")]) == 0
    depth = np.load(tmp_path / "mug" / "depth.npy")
    assert depth.shape == (6, 128, 128) and (depth > 0).sum() > 100


@pytest.mark.parametrize("name, content", [("missing.ply", None), ("bad.foo", b"1 2 3\n"),
                                           ("broken.ply", b"ply\nformat ascii 1.0\nelement vertex 9\n")])
def test_render_errors_are_one_line(tmp_path, capsys, name, content) -> None:
    src = tmp_path / name
    if content is not None:
        src.write_bytes(content)
    out = tmp_path / "out"
    assert main(["render", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and name in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_shade_depth() -> None:
    d = np.zeros((2, 3, 3), dtype=np.float32)
    d[0, 0, 0], d[0, 1, 1], d[0, 2, 2] = 1.0, 1.5, 2.0
    d[1, 1, 1] = 1.3
    g = shade_depth(d)
    assert g.dtype == np.uint8 and g.shape == d.shape
    assert g[0, 0, 0] == 255 and g[0, 2, 2] == round(255 * MIN_BRIGHTNESS)
    assert g[0, 0, 0] > g[0, 1, 1] > g[0, 2, 2] > 0
    assert g[1, 1, 1] == 255 and (g[1][d[1] == 0] == 0).all()


def test_view_labels() -> None:
    labels = get_preset("pointclip").view_labels()
    assert len(labels) == 6 and labels[0] == "view 0 (0, 0, 90)"


def test_render_realistic_is_what_the_encoder_sees(tmp_path, capsys) -> None:
    out = tmp_path / "real"
    assert main(["render", str(SAMPLES / "chair.ply"), "--out", str(out), "--preset", "realistic"]) == 0
    projection = get_preset("realistic")
    pts = torch.from_numpy(load_point_cloud(SAMPLES / "chair.ply", num_points=1024)[None])
    preview = projection.preview(pts)[0].numpy()
    depth = np.load(out / "depth.npy")
    assert depth.shape == preview.shape and depth.shape[0] == 10
    np.testing.assert_allclose(depth, projection.maps(pts)[0].numpy(), atol=1e-6)
    # the encoder's input is exactly these pictures, resized to its input size, in all three channels
    images = projection.images(pts, 224)
    torch.testing.assert_close(images, maps_to_images(torch.from_numpy(preview)[None], 224), rtol=0, atol=0)
    for k in range(10):
        with Image.open(out / f"view_{k:02d}.png") as im:
            np.testing.assert_array_equal(np.asarray(im.convert("L")), np.round(preview[k] * 255).astype(np.uint8))


def test_render_up_axis_and_robust(tmp_path, capsys) -> None:
    a = np.random.default_rng(0).normal(size=(600, 3)).astype(np.float32) * [1.0, 0.3, 2.0]
    b = np.stack([a[:, 0], a[:, 2], -a[:, 1]], axis=1)  # a stored z-up, turned y-up
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    assert main(["render", str(tmp_path / "a.npy"), "--out", str(tmp_path / "ra"), "--up-axis", "z"]) == 0
    assert "up axis z" in capsys.readouterr().out
    assert main(["render", str(tmp_path / "b.npy"), "--out", str(tmp_path / "rb")]) == 0
    assert main(["render", str(tmp_path / "a.npy"), "--out", str(tmp_path / "ry")]) == 0
    da, db, dy = (np.load(tmp_path / d / "depth.npy") for d in ("ra", "rb", "ry"))
    np.testing.assert_array_equal(da, db)
    assert not np.array_equal(da, dy)
    spiky = np.concatenate([a, [[200.0, 0, 0], [0, 0, -150.0]]]).astype(np.float32)
    np.save(tmp_path / "spiky.npy", spiky)
    capsys.readouterr()
    assert main(["render", str(tmp_path / "spiky.npy"), "--out", str(tmp_path / "rs"), "--robust-normalize"]) == 0
    assert "2 outliers dropped" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(tmp_path / "rs" / "depth.npy"), np.load(tmp_path / "ry" / "depth.npy"),
                               atol=1e-6)
    with pytest.raises(SystemExit):
        main(["render", str(tmp_path / "a.npy"), "--out", str(tmp_path / "rx"), "--up-axis", "auto"])
