#!/usr/bin/env python
"""Realistic (PointCLIP V2) projection benchmark, printed as a Markdown table.

Time per cloud (10 views, 1,024 points) of:
  (a) pointcalip's vectorised projection (``realistic_maps``);
  (b) the reference algorithm's structure, written out with torch on the same device: one
      batched scatter, ``nn.MaxPool3d((1, 7, 7), padding (0, 2, 2))``, ``nn.Conv3d`` with the
      Gaussian kernel, max over depth (what the official code runs, with ``scatter_reduce_``
      standing in for torch_scatter);
  (c) the loop reference ``realistic_maps_naive`` on a few clouds;
and, measured in the same run, open_clip ``encode_image`` on the same 10 views (random
weights: nothing here is an accuracy) for ViT-B-16 and RN50, to give the projection's share
of the encoder time.

Usage: python scripts/bench_projection.py [--clouds 16] [--naive-clouds 2] [--repeats 3]
``projection_rows(num_clouds)`` returns the table rows for scripts/benchmark.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
import torch.nn as nn

from pointcalip.projection.realistic import (
    REALISTIC,
    RealisticProjection,
    gaussian_weights,
    realistic_maps,
    realistic_maps_naive,
    view_rotations,
)
from pointcalip.testing.shapes import make_class_cloud


def best_times(fns: Sequence[Callable[[], object]], repeats: int) -> List[float]:
    """Fastest of ``repeats`` interleaved runs of each function (seconds), after one warm-up each."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


class ReferenceStructure:
    """The reference algorithm as the official code lays it out (per batch, 3-D pooling/conv).

    ``__call__(points (B, N, 3)) -> (B, V, H, W)``. Same float32 geometry and cells as
    :func:`realistic_maps`; the convolution is a library ``Conv3d``, so images agree to ~1e-7.
    """

    def __init__(self, projection: RealisticProjection = REALISTIC) -> None:
        self.p = projection
        m1, m2 = view_rotations(projection)
        self.m1t, self.m2t = m1.transpose(1, 2), m2.transpose(1, 2)
        self.t = torch.tensor(projection.translation, dtype=torch.float32)
        ps, pp, gs, gp = projection.pool_size, projection.pool_padding, projection.gauss_size, projection.gauss_padding
        self.pool = nn.MaxPool3d((1, ps, ps), stride=1, padding=(0, pp, pp))
        self.conv = nn.Conv3d(1, 1, (1, gs, gs), stride=1, padding=(0, gp, gp), bias=True)
        with torch.no_grad():
            self.conv.weight.copy_(gaussian_weights(projection).view(1, 1, 1, gs, gs))
            self.conv.bias.zero_()

    @torch.no_grad()
    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        p = self.p
        b, v, r, s = points.shape[0], p.num_views, p.resolution, p.depth_slices
        q = torch.matmul(points.float().repeat_interleave(v, dim=0), self.m1t.repeat(b, 1, 1))
        q = torch.matmul(q, self.m2t.repeat(b, 1, 1)) - self.t
        pmax, pmin = q.max(dim=1)[0], q.min(dim=1)[0]
        centre = ((pmax + pmin) / 2)[:, None, :]
        extent = (pmax - pmin).max(dim=-1)[0][:, None, None]
        q = (q - centre) / extent * 2.0
        q[:, :, :2] = q[:, :, :2] * p.obj_ratio
        fx = ((q[:, :, 0] + 1) / 2 * r).ceil().clip(1, r - 2)
        fy = ((q[:, :, 1] + 1) / 2 * r).ceil().clip(1, r - 2)
        fz = ((q[:, :, 2] + 1) / 2 + p.depth_bias) / (1 + p.depth_bias) * (s - 2)
        index = fz.ceil() * r * r + fy * r + fx
        grid = torch.zeros(b * v, s * r * r)
        grid.scatter_reduce_(1, index.long(), fz.clip(1, s - 2), reduce="amax", include_self=True)
        grid = grid.view(b * v, s, r, r).permute(0, 1, 3, 2)
        x = self.conv(self.pool(grid.unsqueeze(1)))
        img = x.max(dim=2)[0][:, 0]
        img = img / img.amax(dim=(-2, -1), keepdim=True)
        return (1 - img).view(b, v, p.map_size, p.map_size)


def _clouds(num_clouds: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([make_class_cloud(i % 40, 1024, seed=i) for i in range(num_clouds)]))


def projection_rows(
    num_clouds: int, naive_clouds: int = 2, repeats: int = 3, encoders: Sequence[str] = ("ViT-B-16", "RN50")
) -> List[Dict[str, object]]:
    """Rows ``{"what", "ms_per_cloud", "share_of_<encoder>" ...}`` of the benchmark table (CPU).

    ``share_of_<encoder>`` is the row's time over ``encode_image`` time on the same 10 views
    (one cloud's images at once). Encoder rows have ``share`` keys of ``None``.
    """
    import open_clip

    points = _clouds(num_clouds)
    ref = ReferenceStructure()
    fast_out, ref_out = realistic_maps(points), ref(points)
    max_diff = float((fast_out - ref_out).abs().max())
    images = REALISTIC.images(points[:1]).flatten(0, 1)  # (10, 3, 224, 224): one cloud's views

    models = {}
    for name in encoders:
        torch.manual_seed(0)
        models[name] = open_clip.create_model(name, pretrained=None).eval()  # random weights, on purpose

    def encode(model: torch.nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return model.encode_image(images)

        return run

    fns: List[Callable[[], object]] = [lambda: realistic_maps(points), lambda: ref(points)]
    fns += [encode(m) for m in models.values()]
    times = best_times(fns, repeats)
    naive_pts = points[:naive_clouds].numpy()
    t0 = time.perf_counter()
    realistic_maps_naive(naive_pts)
    t_naive = (time.perf_counter() - t0) / naive_clouds

    per_cloud = {
        "(a) pointcalip `realistic_maps` (vectorised)": times[0] / num_clouds,
        "(b) reference structure (scatter, MaxPool3d, Conv3d, max)": times[1] / num_clouds,
        f"(c) loop reference `realistic_maps_naive` ({naive_clouds} clouds)": t_naive,
    }
    enc = {name: t for name, t in zip(models, times[2:])}
    rows: List[Dict[str, object]] = []
    for what, t in per_cloud.items():
        row: Dict[str, object] = {"what": what, "ms_per_cloud": 1e3 * t}
        for name, te in enc.items():
            row[f"share_of_{name}"] = t / te
        rows.append(row)
    for name, te in enc.items():
        row = {"what": f"{name} `encode_image`, 10 views (random weights)", "ms_per_cloud": 1e3 * te}
        row.update({f"share_of_{n}": None for n in enc})
        rows.append(row)
    rows[1]["max_abs_diff_vs_a"] = max_diff
    return rows


def markdown(rows: List[Dict[str, object]]) -> str:
    """The rows as a Markdown table."""
    shares = [k for k in rows[0] if k.startswith("share_of_")]
    head = "| what | ms / cloud | " + " | ".join(f"share of {k[9:]}" for k in shares) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(shares)]
    for row in rows:
        cells = [f"{row[k]:.1%}" if row.get(k) is not None else "" for k in shares]
        lines.append(f"| {row['what']} | {row['ms_per_cloud']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clouds", type=int, default=16)
    ap.add_argument("--naive-clouds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = projection_rows(args.clouds, args.naive_clouds, args.repeats)
    print(f"machine: {_cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}; {args.clouds} clouds x 10 views x 1024 points, "
          f"best of {args.repeats} interleaved runs\n")
    print(markdown(rows))
    print(f"\n(b) vs (a): max |difference| {rows[1]['max_abs_diff_vs_a']:.2e}")


if __name__ == "__main__":
    main()
