"""``pointcalip render``: save the pictures a projection feeds to CLIP, as the encoder sees them."""

from __future__ import annotations

import argparse

from pointcalip.cli.options import projection_choices
from pointcalip.errors import ConfigError

HELP = "save a point cloud's multi-view pictures (as the encoder sees them) as PNG images and depth.npy"

FIXED_UP_AXES = ("y", "z", "x", "-y", "-z", "-x")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="a point-cloud or mesh file (.ply .pcd .xyz .npy .obj ...)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--preset", default="pointclip", choices=projection_choices(),
                   help="projection preset: pointclip (6 scatter views, 128 px), pointclip10 (10 views, 224 px), "
                        "realistic (PointCLIP V2's 10 dense views)")
    p.add_argument("--num-points", type=int, default=1024, help="points kept by farthest point sampling (default 1024)")
    p.add_argument("--up-axis", choices=FIXED_UP_AXES, default="y",
                   help="the axis that points up in the file (default y); 'auto' needs a model: use "
                        "'pointcalip classify --up-axis auto --report r.html' to see the chosen orientation's views")
    p.add_argument("--robust-normalize", action="store_true",
                   help="drop far outliers before normalising (as classify --robust-normalize)")


def run(args: argparse.Namespace) -> int:
    from pointcalip.render import render_file

    if args.num_points < 1:
        raise ConfigError(f"--num-points must be a positive integer, got {args.num_points}")
    out = render_file(args.path, args.out, args.preset, args.num_points, up_axis=args.up_axis,
                      robust=args.robust_normalize)
    v, h, w = out.shape
    dropped = f", {out.outliers} outliers dropped" if args.robust_normalize else ""
    print(f"{args.path}: wrote {v} views ({h}x{w}, up axis {args.up_axis}{dropped}) to {args.out}: "
          f"{out.views[0].name} ... {out.views[-1].name}, {out.sheet.name}, {out.depth.name}")
    return 0
