#!/usr/bin/env python
"""Encoder-runtime and engine benchmark (CPU or CUDA), printed as Markdown tables.

For each backbone (random weights: nothing here is an accuracy), measured side by side in
one run, the functions timed in turn (a, b, c, a, b, c, ...) so that a noisy machine slows
all of them alike and their ratios stay meaningful:

  * dense image features (global + spatial tokens) under every runtime and precision the
    machine offers: images/s, speed-up over eager torch fp32, largest relative difference
    of the outputs and of the final logits from eager torch fp32;
  * end-to-end zero-shot logits (projection + dense features + CALIP + aggregation) with
    ``--runtime torch`` and ``--runtime auto``, their ratio, and the overhead ratio
    end-to-end / open_clip's bare ``encode_image``;
  * the projection's and the CALIP attention's share of the end-to-end time;
  * FLOPs per image (counted with torch.utils.flop_counter on the eager tower), the
    device's peak FLOP/s (a large float32 matmul measured on the spot) and the fraction of
    it each runtime reaches; peak memory (process RSS, or CUDA allocated).

Usage: python scripts/benchmark.py [--backbones RN50-quickgelu ViT-B-16] [--clouds 4]
       [--device cpu] [--compile] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from pointcalip.aggregation import logits_from_components
from pointcalip.attention import calip_components
from pointcalip.encoders import CLIPEncoder, WeightsInfo, build_model, resolve_device, weights_fingerprint
from pointcalip.engine import build_engine
from pointcalip.projection import get_projection

BETA2, BETA3 = 1.12, 0.02


def interleaved_best(fns: Sequence[Callable[[], object]], repeats: int, device: torch.device) -> List[float]:
    """Fastest of ``repeats`` runs of each function (seconds), after one warm-up each, in turn."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in fns:
        fn()
    sync()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            sync()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def peak_matmul_flops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` float32 ``n x n`` matmuls (2 n^3 FLOPs each)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    (t,) = interleaved_best([lambda: a @ b], repeats, device)
    return 2 * n**3 / t


def flops_per_image(tower: torch.nn.Module, image_size: int, device: torch.device) -> float:
    """FLOPs of the dense-feature function on one image (matmuls, convolutions, attention).

    Counted on a copy with gradients on: without them ``nn.MultiheadAttention`` takes its
    fused inference path, whose FLOPs the counter does not see.
    """
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    twin = copy.deepcopy(tower).requires_grad_(True)
    x = torch.rand(1, 3, image_size, image_size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.enable_grad(), counter:
        twin(x)
    del twin
    return float(counter.get_total_flops())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|``."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def random_clouds(b: int, n: int = 1024, seed: int = 0) -> torch.Tensor:
    """``(B, N, 3)`` clouds: points of an ellipsoid surface of random axes, unit scale."""
    g = torch.Generator().manual_seed(seed)
    p = F.normalize(torch.randn(b, n, 3, generator=g), dim=-1) * (0.4 + torch.rand(b, 1, 3, generator=g))
    return p / p.norm(dim=-1).amax(dim=1, keepdim=True)[..., None]


def native_bf16(device: torch.device) -> bool:
    """Whether the device has bf16 arithmetic (CPUs without it emulate bf16, very slowly)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def variants(device: torch.device, with_compile: bool, bf16: bool) -> List[Tuple[str, str]]:
    """(runtime, precision) pairs this machine can run, eager torch fp32 first."""
    out = [("torch", "fp32")]
    if device.type == "cpu":
        try:
            from pointcalip.runtime import import_openvino

            import_openvino()
            out.append(("openvino", "fp32"))
        except ImportError:
            print("(openvino not installed: its rows are skipped)", file=sys.stderr)
    if with_compile:
        out.append(("compile", "fp32"))
    if bf16 or native_bf16(device):
        out.append(("torch", "bf16"))
    else:
        print("(no native bf16 on this device: bf16 rows skipped; --bf16 forces them)", file=sys.stderr)
    if device.type == "cuda":
        out.append(("torch", "fp16"))
    return out


def bench_backbone(backbone: str, args: argparse.Namespace, device: torch.device, peak: float) -> Dict[str, object]:
    model, tokenizer, _ = build_model(backbone, "random")
    torch.manual_seed(0)
    info = WeightsInfo(backbone, "random", None, weights_fingerprint(model, None, backbone))
    encs: Dict[Tuple[str, str], CLIPEncoder] = {}
    setup: Dict[Tuple[str, str], float] = {}
    for rt, prec in variants(device, args.compile, args.bf16):
        t0 = time.perf_counter()
        encs[(rt, prec)] = CLIPEncoder(model, tokenizer, info, device, runtime=rt, precision=prec,
                                       cache_dir=args.cache_dir)
        setup[(rt, prec)] = time.perf_counter() - t0
    eager = encs[("torch", "fp32")]
    auto_key = ("openvino", "fp32") if ("openvino", "fp32") in encs else ("torch", "fp32")
    projection = get_projection("pointclip")
    points = random_clouds(args.clouds)
    engines = {k: build_engine(backbone, "random", projection, encoder=e) for k, e in encs.items()}
    text = F.normalize(torch.randn(args.classes, eager.embed_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    text = text.to(device)
    images = engines[("torch", "fp32")].images(points).flatten(0, 1)
    n_img = images.shape[0]
    weights = [1.0] * projection.num_views
    feats = eager.encode_image_dense(images)

    def dense(key: Tuple[str, str]) -> Callable[[], object]:
        return lambda: encs[key].encode_image_dense(images)

    def e2e(key: Tuple[str, str]) -> Callable[[], torch.Tensor]:
        return lambda: logits_from_components(engines[key].components(points, text), weights, BETA2, BETA3)

    keys = list(encs)
    fns: List[Callable[[], object]] = [dense(k) for k in keys]
    fns += [lambda: eager.encode_image(images), e2e(("torch", "fp32")), e2e(auto_key),
            lambda: projection.images(points.to(device), eager.image_size),
            lambda: calip_components(feats.global_, feats.spatial, text, eager.logit_scale, 1.0)]
    times = interleaved_best(fns, args.repeats, device)
    t_dense = dict(zip(keys, times[: len(keys)]))
    t_bare, t_e2e_torch, t_e2e_auto, t_proj, t_att = times[len(keys):]

    flops = flops_per_image(eager.tower, eager.image_size, device)
    ref_logits = e2e(("torch", "fp32"))()
    rows = []
    for k in keys:
        out = encs[k].encode_image_dense(images)
        logits = e2e(k)()
        ips = n_img / t_dense[k]
        rows.append({"runtime": k[0], "precision": k[1], "setup_s": setup[k], "s": t_dense[k], "images_s": ips,
                     "speedup": t_dense[("torch", "fp32")] / t_dense[k],
                     "feat_diff": max(rel(out.global_raw, feats.global_raw), rel(out.spatial, feats.spatial)),
                     "logit_diff": rel(logits, ref_logits), "peak_frac": flops * ips / peak})
    auto_logits = e2e(auto_key)()
    return {"backbone": backbone, "images": n_img, "rows": rows, "flops": flops, "bare": t_bare,
            "e2e_torch": t_e2e_torch, "e2e_auto": t_e2e_auto, "auto": auto_key[0], "proj": t_proj, "att": t_att,
            "auto_logit_diff": rel(auto_logits, ref_logits), "mem": peak_memory_mib(device)}


def print_report(results: List[Dict[str, object]], args: argparse.Namespace, device: torch.device, peak: float) -> None:
    print(f"machine: {cpu_name() if device.type == 'cpu' else torch.cuda.get_device_name(device)}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"measured peak: {peak / 1e9:.1f} GFLOP/s (float32 2048x2048 matmul); best of {args.repeats}, "
          f"{args.clouds} clouds x 6 views per backbone, random weights\n")
    print("| backbone | runtime | precision | images/s | speed-up vs torch fp32 | max rel diff features | "
          "max rel diff logits | % of measured peak FLOP/s | first load (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for res in results:
        for r in res["rows"]:
            print(f"| {res['backbone']} | {r['runtime']} | {r['precision']} | {r['images_s']:.2f} | "
                  f"{r['speedup']:.2f}x | {r['feat_diff']:.1e} | {r['logit_diff']:.1e} | {100 * r['peak_frac']:.0f}% | "
                  f"{r['setup_s']:.1f} |")
    print("\n| backbone | GFLOPs / image | end-to-end torch (s) | end-to-end auto (s) | **auto speed-up** | "
          "auto logits max rel diff | overhead e2e torch / bare encode_image | projection share | "
          "CALIP attention share | peak memory (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for res in results:
        e2e = res["e2e_torch"]
        print(f"| {res['backbone']} | {res['flops'] / 1e9:.2f} | {e2e:.2f} | {res['e2e_auto']:.2f} ({res['auto']}) | "
              f"**{e2e / res['e2e_auto']:.2f}x** | {res['auto_logit_diff']:.1e} | {e2e / res['bare']:.3f} | "
              f"{100 * res['proj'] / e2e:.1f}% | {100 * res['att'] / e2e:.2f}% | {res['mem']:.0f} |")


def projection_table(clouds: int) -> None:
    """The realistic projection's rows, when scripts/bench_projection.py is there."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        from bench_projection import projection_rows
    except ImportError:
        return
    rows = projection_rows(clouds)
    if not rows:
        return
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()) + " |")


def search_table(num_clouds: int = 2468, num_classes: int = 40, repeats: int = 3) -> None:
    """Time the searches on synthetic cached components ``(B, V=10, 3, K)``, best of ``repeats``."""
    from pointcalip.aggregation import V2_SEARCH_VIEWS, logits_from_components, search_betas, search_view_weights

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, num_classes, (num_clouds,), generator=g)
    comps = torch.randn(num_clouds, 10, 3, num_classes, generator=g)
    comps[torch.arange(num_clouds), :, :, labels] += 0.15  # a weak signal: top-1 about 8 %, the hard case for pruning
    start = (0.75,) * 3 + (1.0,) * 7
    b2 = torch.linspace(0.001, 2.0, 200, dtype=torch.float64)
    b3 = torch.linspace(0.001, 0.1, 200, dtype=torch.float64)
    rows = [
        ("beta2 x beta3 grid", "200 x 200 = 40,000",
         lambda: search_betas(comps, labels, start, b2, b3)),
        ("view weights, PointCLIP V2's grid (views 3-9), exhaustive", "4^7 = 16,384",
         lambda: search_view_weights(comps, labels, start=start, search_views=V2_SEARCH_VIEWS,
                                     strategy="exhaustive", betas=(1.12, 0.02))),
        ("view weights, all 10 views, coordinate ascent", "4^10 space",
         lambda: search_view_weights(comps, labels, start=start, strategy="coordinate", betas=(1.12, 0.02))),
    ]
    print(f"\n| search on {num_clouds:,} clouds x {num_classes} classes x 10 views (cached components) "
          f"| candidates | time (s) |\n|---|---:|---:|")
    times = interleaved_best([fn for _, _, fn in rows], repeats, torch.device("cpu"))
    for (name, cands, _), best in zip(rows, times):
        print(f"| {name} | {cands} | {best:.2f} |")
    base = logits_from_components(comps, start, 1.12, 0.02).argmax(1)
    print(f"(top-1 of the synthetic components at the start values: {100 * float((base == labels).double().mean()):.1f} %)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["RN50-quickgelu", "ViT-B-16"])
    ap.add_argument("--clouds", type=int, default=4, help="clouds per backbone (x 6 views = images)")
    ap.add_argument("--classes", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile on a CPU)")
    ap.add_argument("--bf16", action="store_true", help="time bf16 even where the device emulates it")
    ap.add_argument("--cache-dir", default=None, help="pointcalip cache for converted runtimes (default: the usual)")
    ap.add_argument("--searches-only", action="store_true", help="only time the searches (no encoder)")
    ap.add_argument("--projection-clouds", type=int, default=0,
                    help="also print scripts/bench_projection.py's realistic-projection rows for this many clouds")
    args = ap.parse_args(argv)
    if args.searches_only:
        search_table(repeats=args.repeats)
        return
    device = resolve_device(args.device)
    peak = peak_matmul_flops(device)
    results = [bench_backbone(b, args, device, peak) for b in args.backbones]
    print_report(results, args, device, peak)
    if args.projection_clouds:
        projection_table(args.projection_clouds)
    search_table(repeats=args.repeats)


if __name__ == "__main__":
    main()
