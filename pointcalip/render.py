"""Depth maps as pictures: one PNG per view, a labelled contact sheet, the raw maps.

Symbols: ``V`` views, ``H x W`` depth-map size.

Each projection decides how its maps are shown (``Projection.preview``). Scatter depth maps
(docs/method.md §2, before resizing) get a black background and **nearer = brighter**: on the
non-empty pixels of a view, ``value = 0.2 + 0.8 * (zmax - z) / (zmax - zmin)`` so the farthest
point is still visible. Realistic images (§9) are already pictures: shown exactly as the
encoder sees them (white background, nearer is darker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np

from pointcalip.atomic import atomic_open
from pointcalip._types import PathLike

__all__ = ["RenderOutput", "contact_sheet", "render_cloud", "render_file", "shade_depth"]

MIN_BRIGHTNESS = 0.2
_LABEL_HEIGHT = 16
_PAD = 4
_SHEET_BACKGROUND = 48


@dataclass(frozen=True)
class RenderOutput:
    """What :func:`render_cloud` wrote: the ``V`` view PNGs, the contact sheet, ``depth.npy``."""

    views: Tuple[Path, ...]
    sheet: Path
    depth: Path
    shape: Tuple[int, int, int]
    outliers: int = 0


def shade_depth(depth: np.ndarray) -> np.ndarray:
    """Grey levels of depth maps: ``(..., H, W)`` float -> ``uint8 (..., H, W)``.

    Empty pixels (depth 0) are 0 (black); per map, the nearest point is 255 and the
    farthest ``round(255 * MIN_BRIGHTNESS)``; a map with one depth value is all 255.
    """
    d = np.asarray(depth, dtype=np.float64)
    flat = d.reshape(-1, d.shape[-2] * d.shape[-1])
    out = np.zeros(flat.shape, dtype=np.uint8)
    for row, dst in zip(flat, out):
        filled = row > 0
        if not filled.any():
            continue
        z = row[filled]
        span = z.max() - z.min()
        rel = (z.max() - z) / span if span > 0 else np.ones_like(z)
        dst[filled] = np.round(255.0 * (MIN_BRIGHTNESS + (1.0 - MIN_BRIGHTNESS) * rel)).astype(np.uint8)
    return out.reshape(d.shape)


def _grid(v: int) -> Tuple[int, int]:
    """``(rows, cols)`` of a near-square grid for ``v`` tiles (6 -> 2 x 3, 10 -> 3 x 4)."""
    rows = max(1, int(math.floor(math.sqrt(v))))
    return rows, -(-v // rows)


def contact_sheet(images: np.ndarray, labels: Sequence[str]):
    """A PIL image of ``uint8 (V, H, W)`` grey views in a grid, each with its label above it."""
    from PIL import Image, ImageDraw

    v, h, w = images.shape
    rows, cols = _grid(v)
    cell_w, cell_h = w + 2 * _PAD, h + _LABEL_HEIGHT + 2 * _PAD
    sheet = Image.new("L", (cols * cell_w, rows * cell_h), color=_SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for k in range(v):
        x0, y0 = (k % cols) * cell_w + _PAD, (k // cols) * cell_h + _PAD
        draw.text((x0, y0 + 2), labels[k], fill=255)
        sheet.paste(Image.fromarray(images[k], mode="L"), (x0, y0 + _LABEL_HEIGHT))
    return sheet


def _save_png(image, path: Path) -> Path:
    with atomic_open(path, "wb") as f:
        image.save(f, format="PNG")
    return path


def render_cloud(points: np.ndarray, out_dir: PathLike, projection) -> RenderOutput:
    """Project one prepared cloud ``(N, 3)`` and write its pictures into ``out_dir``.

    Writes ``view_00.png`` ... (one per view, ``H x W`` grey: ``projection.preview``, the
    pictures as the encoder sees them, before resizing to its input size), ``views.png``
    (contact sheet) and ``depth.npy`` (``float32 (V, H, W)``, the raw maps).
    """
    import torch
    from PIL import Image

    out = Path(out_dir)
    pts = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))[None]
    depth = projection.maps(pts)[0].cpu().numpy()  # (V, H, W)
    grey = np.round(projection.preview(pts)[0].cpu().numpy() * 255.0).astype(np.uint8)
    views = tuple(_save_png(Image.fromarray(g, mode="L"), out / f"view_{k:02d}.png") for k, g in enumerate(grey))
    sheet = _save_png(contact_sheet(grey, projection.view_labels()), out / "views.png")
    depth_path = out / "depth.npy"
    with atomic_open(depth_path, "wb") as f:
        np.save(f, depth.astype(np.float32))
    return RenderOutput(views, sheet, depth_path, tuple(depth.shape))


def render_file(
    path: PathLike,
    out_dir: PathLike,
    preset: str = "pointclip",
    num_points: int = 1024,
    up_axis: str = "y",
    robust: bool = False,
) -> RenderOutput:
    """Load ``path`` as the classifier does (:func:`pointcalip.clouds.load_prepared`: rotate ``up_axis``
    onto +y, optionally drop outliers, normalise, FPS) and :func:`render_cloud` it."""
    import dataclasses

    from pointcalip.clouds import load_prepared
    from pointcalip.projection import get_projection

    projection = get_projection(preset)
    prepared = load_prepared(path, num_points, up_axis=up_axis, robust=robust)
    out = render_cloud(prepared.points, out_dir, projection)
    return dataclasses.replace(out, outliers=prepared.num_outliers)
