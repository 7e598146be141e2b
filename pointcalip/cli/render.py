"""``pointcalip render``: save the depth maps PointCLIP feeds to CLIP as pictures."""

from __future__ import annotations

import argparse

from pointcalip.errors import ConfigError

from pointcalip.cli.options import projection_choices

HELP = "save a point cloud's multi-view depth maps as PNG images and depth.npy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="a point-cloud or mesh file (.ply .pcd .xyz .npy .obj ...)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--preset", default="pointclip", choices=projection_choices(),
                   help="projection preset: pointclip (6 views, 128 px), pointclip10 (10 views, 224 px), ...")
    p.add_argument("--num-points", type=int, default=1024, help="points kept by farthest point sampling (default 1024)")


def run(args: argparse.Namespace) -> int:
    from pointcalip.render import render_file

    if args.num_points < 1:
        raise ConfigError(f"--num-points must be a positive integer, got {args.num_points}")
    out = render_file(args.path, args.out, args.preset, args.num_points)
    v, h, w = out.shape
    print(f"{args.path}: wrote {v} views ({h}x{w}) to {args.out}: "
          f"{out.views[0].name} ... {out.views[-1].name}, {out.sheet.name}, {out.depth.name}")
    return 0
