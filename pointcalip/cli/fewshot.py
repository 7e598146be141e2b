"""``pointcalip fewshot``: train a few-shot head (inter-view adapter, CALIP-FS or both) on K shots."""

from __future__ import annotations

import argparse
from pathlib import Path

from pointcalip.cli.options import add_config_argument, add_data_arguments, overrides_from_args, projection_choices

HELP = "train a few-shot head (adapter / CALIP-FS) on K clouds per class and test it"

OVERRIDES = ("dataset", "variant", "data_root", "num_points", "shots", "seed", "val_per_class", "backbone",
             "pretrained", "projection", "normalize_images", "templates", "head", "alpha", "beta2", "beta3",
             "epochs", "batch_size", "lr", "momentum", "weight_decay", "warmup_epochs", "label_smoothing",
             "cache_features", "feature_cache_dir", "encode_batch_size", "device", "runtime", "precision", "output", "progress")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pointcalip.config import PRECISIONS, RUNTIMES
    from pointcalip.fewshot.config import DEFAULT_FEWSHOT_CONFIG

    add_config_argument(p, DEFAULT_FEWSHOT_CONFIG)
    d = p.add_argument_group("data")
    add_data_arguments(d)
    d.add_argument("--num-points", type=int, help="points per cloud (default 1024)")
    d.add_argument("--shots", type=int, help="K clouds per class from the training split (1, 2, 4, 8, 16)")
    d.add_argument("--seed", type=int, help="seed of the K-shot draw, the head's init and the batches")
    d.add_argument("--val-per-class", type=int,
                   help="validation clouds per class, held out from the rest of the training split (0 = none)")
    m = p.add_argument_group("model")
    m.add_argument("--backbone", help="open_clip model name (RN101, RN50, ViT-B-16, ...) or a model-config .json")
    m.add_argument("--pretrained", help="open_clip tag (openai, ...) or a local checkpoint file")
    m.add_argument("--projection", choices=projection_choices(), help="projection preset (default pointclip10)")
    m.add_argument("--normalize-images", action="store_const", const=True, default=None,
                   help="apply CLIP mean/std normalisation to depth images")
    m.add_argument("--templates", nargs="+", metavar="TEMPLATE", help="prompt templates with '{}' for the class")
    m.add_argument("--head", choices=("adapter", "calip_fs", "both"),
                   help="adapter (PointCLIP), calip_fs (CALIP-FS), both (sum of the two heads' logits)")
    m.add_argument("--alpha", type=float, help="CALIP attention scale")
    m.add_argument("--beta2", type=float, help="CALIP-FS initial beta2")
    m.add_argument("--beta3", type=float, help="CALIP-FS initial beta3")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, help="epochs (default 250)")
    t.add_argument("--batch-size", type=int, help="clouds per training batch (default 32)")
    t.add_argument("--lr", type=float, help="peak learning rate (default 0.01)")
    t.add_argument("--momentum", type=float)
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--warmup-epochs", type=int, help="epochs at the warm-up lr (default 1)")
    t.add_argument("--label-smoothing", type=float, help="epsilon spread over the other K-1 classes (default 0.2)")
    t.add_argument("--cache-features", action="store_const", const=True, default=None,
                   help="encode the K-shot set once without augmentation and train on those features (fast on CPU)")
    t.add_argument("--feature-cache-dir", help="also keep the encoded features on disk in this folder")
    t.add_argument("--encode-batch-size", type=int, help="clouds per batch when only encoding")
    t.add_argument("--restart", action="store_true", help="ignore DIR/state.pt and train from scratch")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--runtime", choices=RUNTIMES, help="image-encoder runtime (default auto)")
    p.add_argument("--precision", choices=PRECISIONS, help="encoder precision (default fp32)")
    p.add_argument("--output", help="run folder (default out/fewshot); an interrupted run there is resumed")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=None)


def run(args: argparse.Namespace) -> int:
    from pointcalip.evaluate import format_summary
    from pointcalip.fewshot.config import DEFAULT_FEWSHOT_CONFIG, build_fewshot_config
    from pointcalip.fewshot.train import run_fewshot

    cfg = build_fewshot_config(args.config or DEFAULT_FEWSHOT_CONFIG, overrides_from_args(args, OVERRIDES))
    results = run_fewshot(cfg, restart=args.restart)
    if results is None:  # a non-zero rank of a torchrun launch: rank 0 reports
        return 0
    tr = results["training"]
    print(format_summary(results))
    val = tr["best_val_accuracy"]
    print(f"best epoch {tr['best_epoch']} (val acc {'-' if val is None else f'{val:.2f} %'}), "
          f"{tr['seconds_per_epoch']:.2f} s/epoch")
    out = Path(cfg.output)
    print(f"wrote {out / 'best.safetensors'}, last.safetensors, log.csv, kshot_indices.json, results.json, "
          f"predictions.npz, confusion.png")
    return 0
