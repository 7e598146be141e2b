"""``pointcalip eval``: zero-shot accuracy on ModelNet40 / ModelNet10 / ScanObjectNN."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Optional, Tuple


HELP = "evaluate zero-shot (or a trained few-shot head) on a dataset split"


def parse_floats(text: str) -> Tuple[float, ...]:
    """``"1,0.5,0.25"`` -> ``(1.0, 0.5, 0.25)``."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``eval`` and ``classify``: model, weights, method, betas, views, templates."""
    g = p.add_argument_group("model")
    g.add_argument("--backbone", help="open_clip model name (RN50, RN50-quickgelu, ViT-B-16, ...) or a model-config .json")
    g.add_argument("--pretrained", help="open_clip tag (openai, laion2b_...), a local checkpoint file, or 'random'")
    g.add_argument("--method", choices=("pointclip", "calip"), help="zero-shot method (default calip)")
    g.add_argument("--beta2", type=float, help="weight of the visual-guided text term")
    g.add_argument("--beta3", type=float, help="weight of the text-aware visual term")
    g.add_argument("--alpha", type=float, help="CALIP attention scale (default 2)")
    g.add_argument("--view-weights", type=parse_floats, metavar="W1,W2,...", help="one weight per view")
    g.add_argument("--projection", choices=("pointclip", "pointclip10"), help="projection preset")
    g.add_argument("--normalize-images", action="store_const", const=True, default=None,
                   help="apply CLIP mean/std normalisation to depth images (the reference does not)")
    g.add_argument("--templates", nargs="+", metavar="TEMPLATE", help="prompt templates with '{}' for the class")
    g.add_argument("--num-points", type=int, help="points per cloud (default 1024)")
    g.add_argument("--batch-size", type=int, help="clouds per batch")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (default configs/modelnet40_zeroshot.yaml)")
    p.add_argument("--dataset", choices=("modelnet40", "modelnet10", "scanobjectnn"))
    p.add_argument("--variant", choices=("obj_bg", "obj_only", "pb_t50_rs"), help="ScanObjectNN variant")
    p.add_argument("--data-root", help="folder holding the dataset (default data/)")
    p.add_argument("--split", choices=("train", "test"))
    add_model_arguments(p)
    p.add_argument("--search", choices=("none", "val", "test"),
                   help="select betas/view weights: none, val (held-out train, honest), test (oracle)")
    p.add_argument("--val-fraction", type=float, help="held-out fraction of the training split for --search val")
    p.add_argument("--seed", type=int)
    p.add_argument("--head", help="a trained few-shot head (best.safetensors from `pointcalip fewshot`)")
    p.add_argument("--output", help="output folder (default out/eval)")
    p.add_argument("--cache-dir", help="component cache folder (default ~/.cache/pointcalip)")
    p.add_argument("--no-cache", dest="use_cache", action="store_const", const=False, default=None,
                   help="do not read or write the component cache")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=None)


OVERRIDES = ("dataset", "variant", "data_root", "split", "backbone", "pretrained", "method", "beta2", "beta3",
             "alpha", "view_weights", "projection", "normalize_images", "templates", "num_points", "batch_size",
             "device", "search", "val_fraction", "seed", "head", "output", "cache_dir", "use_cache", "progress")


def overrides_from_args(args: argparse.Namespace, names=OVERRIDES) -> Dict[str, Any]:
    return {k: getattr(args, k, None) for k in names}


def default_config_path(explicit: Optional[str]) -> Optional[str]:
    from pointcalip.config import DEFAULT_CONFIG

    if explicit:
        return explicit
    return str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None


def run(args: argparse.Namespace) -> int:
    from pointcalip.config import build_config

    cfg = build_config(default_config_path(args.config), overrides_from_args(args))
    if cfg.head:
        from pointcalip.fewshot.evaluate import run_head_eval  # arrives with the few-shot issue

        results = run_head_eval(cfg)
    else:
        from pointcalip.evaluate import run_eval

        results = run_eval(cfg)
    from pointcalip.evaluate import format_summary

    print(format_summary(results))
    print(f"wrote {Path(cfg.output) / 'results.json'}, predictions.npz, confusion.png")
    return 0
