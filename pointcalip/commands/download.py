"""`pointcalip download {modelnet40,scanobjectnn}`: fetch, verify and install a dataset."""

from __future__ import annotations

import argparse

HELP = "download and install a dataset (modelnet40; scanobjectnn from its archive)"

DATASETS = ("modelnet40", "modelnet10", "scanobjectnn")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset",
        choices=DATASETS,
        help="modelnet40 (modelnet10 is read from the same files) or scanobjectnn",
    )
    parser.add_argument("--root", default="data", metavar="DIR", help="data root that will contain the dataset folder (default: data)")
    parser.add_argument(
        "--from-file",
        metavar="ZIP",
        help="install this archive instead of downloading (modelnet40_ply_hdf5_2048.zip or ScanObjectNN's h5_files.zip)",
    )
    parser.add_argument(
        "--mirror",
        action="append",
        metavar="URL",
        help="download from this URL instead of the built-in mirror list (repeatable, tried in order)",
    )
    parser.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the archive (checked after download)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="connect timeout in seconds (default: 5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pointcalip.download import download_dataset
    from pointcalip.errors import ConfigError

    if not args.timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.dataset == "modelnet10":
        print("ModelNet10 is read from the ModelNet40 files; installing modelnet40")
    download_dataset(
        args.dataset,
        args.root,
        from_file=args.from_file,
        mirrors=args.mirror,
        sha256=args.sha256,
        connect_timeout=args.timeout,
        progress=False if args.no_progress else None,
    )
    return 0
