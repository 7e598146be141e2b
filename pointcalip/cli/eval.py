"""``pointcalip eval``: zero-shot accuracy on a registered dataset (ModelNet40, ScanObjectNN, ...)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pointcalip.cli.options import (
    add_config_argument,
    add_data_arguments,
    add_model_arguments,
    overrides_from_args,
    parse_ints,
)

HELP = "evaluate zero-shot (or a trained few-shot head) on a dataset split"

OVERRIDES = ("dataset", "variant", "data_root", "split", "backbone", "pretrained", "method", "beta2", "beta3",
             "alpha", "view_weights", "projection", "normalize_images", "templates", "prompts", "prompt_select",
             "num_points", "batch_size", "workers", "device", "runtime", "precision", "search", "search_views",
             "search_strategy", "val_fraction", "seed", "head", "output", "report", "cache_dir", "use_cache",
             "progress")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pointcalip.config import DEFAULT_CONFIG

    add_config_argument(p, DEFAULT_CONFIG)
    add_data_arguments(p)
    p.add_argument("--split", choices=("train", "test"))
    add_model_arguments(p)
    p.add_argument("--workers", type=int, help="DataLoader processes reading the dataset (default 0: in-process)")
    s = p.add_argument_group("selection")
    s.add_argument("--search", choices=("none", "val", "test"),
                   help="select betas/view weights: none, val (held-out train, honest), test (oracle)")
    s.add_argument("--search-views", type=parse_ints, metavar="I,J,...",
                   help="views whose weight is searched (default all; the others keep their weight)")
    s.add_argument("--search-strategy", choices=("auto", "exhaustive", "coordinate"),
                   help="view-weight search: exhaustive grid, or coordinate ascent for grids too large (auto)")
    s.add_argument("--prompt-select", choices=("none", "val"),
                   help="val: pick one sentence per class of --prompts on the held-out training clouds")
    s.add_argument("--val-fraction", type=float, help="held-out fraction of the training split for --search val")
    s.add_argument("--seed", type=int)
    p.add_argument("--head", help="a trained few-shot head (best.safetensors from `pointcalip fewshot`)")
    p.add_argument("--output", help="output folder (default out/eval)")
    p.add_argument("--report", metavar="FILE.html", help="also write a self-contained HTML report")
    p.add_argument("--cache-dir", help="component cache folder (default ~/.cache/pointcalip)")
    p.add_argument("--no-cache", dest="use_cache", action="store_const", const=False, default=None,
                   help="do not read or write the component cache")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=None)


def run(args: argparse.Namespace) -> int:
    from pointcalip.config import DEFAULT_CONFIG, build_config

    cfg = build_config(args.config or DEFAULT_CONFIG, overrides_from_args(args, OVERRIDES))
    if cfg.head:
        from pointcalip.fewshot.evaluate import run_head_eval

        results = run_head_eval(cfg)
    else:
        from pointcalip.evaluate import run_eval

        results = run_eval(cfg)
    if results is None:  # a non-zero rank of a distributed run
        return 0
    from pointcalip.evaluate import format_summary

    print(format_summary(results))
    print(f"wrote {Path(cfg.output) / 'results.json'}, predictions.npz, confusion.png")
    return 0
