"""`pointcalip download DATASET`: fetch, verify and install a dataset, or check a local copy.

The dataset choices and what each one needs come from :mod:`pointcalip.datasets` (the
registry); this module has no per-dataset code.
"""

from __future__ import annotations

import argparse

HELP = "download and install a dataset, or check and install a local copy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pointcalip.datasets import dataset_names, get_dataset_info

    names = dataset_names()
    parser.add_argument(
        "dataset",
        choices=names,
        help="; ".join(f"{n}: {get_dataset_info(n).description}" for n in names if get_dataset_info(n).description)
        or "the dataset",
    )
    parser.add_argument("--root", default="data", metavar="DIR", help="data root that will contain the dataset folder (default: data)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--from-file",
        metavar="ZIP",
        help="install this archive instead of downloading (modelnet40_ply_hdf5_2048.zip or ScanObjectNN's h5_files.zip)",
    )
    source.add_argument(
        "--from-dir",
        metavar="DIR",
        help="check a local copy of the dataset (the dataset folder or a folder above it) and install it under --root "
        "(very large datasets such as objaverse_lvis are linked, not copied)",
    )
    parser.add_argument(
        "--mirror",
        action="append",
        metavar="URL",
        help="download from this URL instead of the built-in mirror list (repeatable, tried in order)",
    )
    parser.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the archive (checked after download)")
    parser.add_argument("--check-all", action="store_true",
                        help="with --from-dir: read every file of the copy, not a sample")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="connect timeout in seconds (default: 5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pointcalip.datasets import download_dataset
    from pointcalip.errors import ConfigError

    if not args.timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.check_all and not args.from_dir:
        raise ConfigError("--check-all applies to --from-dir only")
    download_dataset(
        args.dataset,
        args.root,
        from_file=args.from_file,
        from_dir=args.from_dir,
        mirrors=args.mirror,
        sha256=args.sha256,
        full_check=args.check_all,
        connect_timeout=args.timeout,
        progress=False if args.no_progress else None,
    )
    return 0
