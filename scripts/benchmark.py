#!/usr/bin/env python
"""Zero-shot engine benchmark (CPU or CUDA), printed as a Markdown table.

Measured side by side in one run:
  * end-to-end: clouds -> projection -> dense features -> CALIP components -> logits;
  * bare ``encode_image`` (open_clip's own forward) on the same number of view images;
  * the overhead ratio end-to-end / encode_image (target <= 1.10);
  * peak memory; the 4^6 view-weight search and the 200 x 200 beta search on
    2,468 clouds x 40 classes (ModelNet40 test size), from cached components.

RN50-size model with random weights (explicit: nothing here is an accuracy).
Usage: python scripts/benchmark.py [--backbone RN50-quickgelu] [--clouds 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from typing import Callable, List

import torch

from pointcalip.aggregation import logits_from_components, run_search
from pointcalip.encoders import CLIPEncoder, WeightsInfo, resolve_device
from pointcalip.engine import ZeroShotEngine
from pointcalip.projection import get_preset, project_images
from pointcalip.synthetic import make_class_cloud


def interleaved_best(fns: List[Callable[[], object]], repeats: int) -> List[float]:
    """Fastest of ``repeats`` runs of each function, in seconds, after one warm-up each.

    The functions run in turn (a, b, c, a, b, c, ...) so that a noisy machine slows all
    of them alike and their ratio stays meaningful.
    """
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="RN50-quickgelu")
    ap.add_argument("--clouds", type=int, default=16)
    ap.add_argument("--classes", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--search-clouds", type=int, default=2468)
    args = ap.parse_args()

    import open_clip

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = open_clip.create_model(args.backbone, pretrained=None)  # random weights, on purpose
    encoder = CLIPEncoder(model, open_clip.get_tokenizer(args.backbone),
                          WeightsInfo(args.backbone, "random", None, "random"), device)
    engine = ZeroShotEngine(encoder, get_preset("pointclip"))
    text = torch.nn.functional.normalize(torch.randn(args.classes, encoder.embed_dim), dim=-1).to(device)
    points = torch.from_numpy(
        __import__("numpy").stack([make_class_cloud(i % 40, 1024, seed=i) for i in range(args.clouds)]))
    images = project_images(points, engine.projection).flatten(0, 1).to(device)
    weights = [1.0] * engine.num_views

    def end_to_end() -> torch.Tensor:
        with torch.no_grad():
            return logits_from_components(engine.components(points, text), weights, 1.12, 0.02)

    def bare_encode() -> torch.Tensor:
        with torch.no_grad():
            return encoder.model.encode_image(images)

    def projection_only() -> torch.Tensor:
        return project_images(points.to(device), engine.projection)

    t_proj, t_enc, t_e2e = interleaved_best([projection_only, bare_encode, end_to_end], args.repeats)
    peak = peak_memory_mib(device)

    g = torch.Generator().manual_seed(0)
    comps = torch.randn(args.search_clouds, engine.num_views, 3, args.classes, generator=g)
    labels = torch.randint(0, args.classes, (args.search_clouds,), generator=g)
    t0 = time.perf_counter()
    res = run_search(comps, labels, "calip", weights, 1.12, 0.02, "test")
    t_search = time.perf_counter() - t0

    n_img = images.shape[0]
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, device {device}, "
          f"threads {torch.get_num_threads()}")
    print(f"model: {args.backbone} (random weights), {args.clouds} clouds x {engine.num_views} views "
          f"= {n_img} images, best of {args.repeats}\n")
    print("| stage | time (s) | clouds/s | images/s |")
    print("|---|---|---|---|")
    print(f"| bare `encode_image` ({n_img} images) | {t_enc:.3f} | {args.clouds / t_enc:.2f} | {n_img / t_enc:.1f} |")
    print(f"| end-to-end (projection + dense features + CALIP + aggregation) | {t_e2e:.3f} | "
          f"{args.clouds / t_e2e:.2f} | {n_img / t_e2e:.1f} |")
    print(f"| projection alone | {t_proj:.4f} | {args.clouds / t_proj:.0f} | |")
    print(f"\n**overhead ratio end-to-end / encode_image: {t_e2e / t_enc:.3f}** (target <= 1.10)")
    print(f"peak memory: {peak:.0f} MiB ({'CUDA allocated' if device.type == 'cuda' else 'process RSS'})\n")
    print(f"| search on {args.search_clouds} clouds x {args.classes} classes | candidates | time (s) |")
    print("|---|---|---|")
    print(f"| beta2 x beta3 grid | 200 x 200 = 40,000 | {res.seconds_betas:.2f} |")
    print(f"| view weights grid | 4^6 = 4,096 | {res.seconds_view_weights:.2f} |")
    print(f"| both (run_search) | | {t_search:.2f} |")


if __name__ == "__main__":
    main()
