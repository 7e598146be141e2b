"""Command-line options shared by several commands, and the config they fill in.

Choices come from the registries (datasets, projections) and the config modules, so a
registered dataset or projection appears in every command without touching this file.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, Sequence, Tuple


def parse_floats(text: str) -> Tuple[float, ...]:
    """``"1,0.5,0.25"`` -> ``(1.0, 0.5, 0.25)``."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def parse_ints(text: str) -> Tuple[int, ...]:
    """``"3,4,5"`` -> ``(3, 4, 5)``."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def dataset_choices() -> Tuple[str, ...]:
    from pointcalip.datasets import dataset_names

    return tuple(dataset_names())


def variant_choices() -> Tuple[str, ...]:
    from pointcalip.datasets import dataset_names, get_dataset_info

    return tuple(dict.fromkeys(v for name in dataset_names() for v in get_dataset_info(name).variants))


def projection_choices() -> Tuple[str, ...]:
    from pointcalip.projection import projection_names

    return projection_names()


def add_config_argument(p: argparse.ArgumentParser, default: str) -> None:
    from pointcalip.config import preset_names

    p.add_argument("--config", metavar="PRESET|FILE",
                   help=f"a preset name or a YAML file (default {default}); presets: {', '.join(preset_names())}")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """``--dataset --variant --data-root`` (choices from the dataset registry)."""
    p.add_argument("--dataset", choices=dataset_choices())
    p.add_argument("--variant", choices=variant_choices(), help="dataset variant (ScanObjectNN: obj_bg, obj_only, pb_t50_rs)")
    p.add_argument("--data-root", help="folder holding the dataset (default data/)")


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    """``--device --runtime --precision --batch-size``: where and how the encoder runs."""
    from pointcalip.config import PRECISIONS, RUNTIMES

    g = p.add_argument_group("runtime")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--runtime", choices=RUNTIMES,
                   help="image-encoder runtime: auto (fastest exact one for the device), torch, compile, openvino")
    g.add_argument("--precision", choices=PRECISIONS, help="encoder precision (default fp32, exact)")
    g.add_argument("--batch-size", type=int, help="clouds per batch")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``eval`` and ``classify``: model, weights, method, betas, views, prompts."""
    g = p.add_argument_group("model")
    g.add_argument("--backbone", help="open_clip model name (RN50, RN50-quickgelu, ViT-B-16, ...) or a model-config .json")
    g.add_argument("--pretrained", help="open_clip tag (openai, laion2b_...), a local checkpoint file, or 'random'")
    g.add_argument("--method", choices=("pointclip", "calip"), help="zero-shot method (default calip)")
    g.add_argument("--beta2", type=float, help="weight of the visual-guided text term")
    g.add_argument("--beta3", type=float, help="weight of the text-aware visual term")
    g.add_argument("--alpha", type=float, help="CALIP attention scale (default 2)")
    g.add_argument("--view-weights", type=parse_floats, metavar="W1,W2,...", help="one weight per view")
    g.add_argument("--projection", choices=projection_choices(), help="projection preset")
    g.add_argument("--normalize-images", action="store_const", const=True, default=None,
                   help="apply CLIP mean/std normalisation to depth images (the reference does not)")
    g.add_argument("--templates", nargs="+", metavar="TEMPLATE", help="prompt templates with '{}' for the class")
    g.add_argument("--prompts", metavar="FILE.json",
                   help="sentences per class: {class: [sentence, ...]}; each class's feature is their mean")
    g.add_argument("--num-points", type=int, help="points per cloud (default 1024)")
    add_runtime_arguments(p)


def overrides_from_args(args: argparse.Namespace, names: Sequence[str]) -> Dict[str, Any]:
    """The config fields given on the command line (``None`` = not given)."""
    return {k: getattr(args, k, None) for k in names}
