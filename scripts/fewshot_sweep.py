"""Few-shot accuracy vs shots: ``pointcalip fewshot`` for K = 1, 2, 4, 8, 16 and several seeds.

    python scripts/fewshot_sweep.py --config modelnet40_fewshot --output out/sweep \
        [--shots 1,2,4,8,16] [--seeds 0,1,2] [--epochs 250] [--cache-features] [--head adapter] \
        [--dataset ... --data-root ... --backbone ... --pretrained ... --device ...]

Writes ``OUTPUT/k{K}_seed{S}/`` (one few-shot run each; an interrupted sweep resumes, finished
runs are skipped), ``OUTPUT/zeroshot/`` (``pointcalip eval`` on the same data and weights),
``OUTPUT/sweep.csv`` (one row per run), ``OUTPUT/sweep_summary.csv`` (mean ± std per K) and
``OUTPUT/accuracy_vs_shots.png`` (mean ± std per K, zero-shot accuracy as a dashed line).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

PASS_THROUGH = ("dataset", "variant", "data_root", "backbone", "pretrained", "device", "epochs", "head", "num_points",
                "batch_size", "val_per_class", "feature_cache_dir")


def _ints(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="few-shot preset or YAML file (default modelnet40_fewshot)")
    p.add_argument("--zero-shot-config", help="zero-shot preset or YAML for the reference line (default "
                                              "the PointCLIP preset pointclip_<dataset> when there is one)")
    p.add_argument("--output", default="out/fewshot_sweep")
    p.add_argument("--shots", type=_ints, default=[1, 2, 4, 8, 16], help="comma-separated K values")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma-separated seeds")
    for name in PASS_THROUGH:
        p.add_argument("--" + name.replace("_", "-"), type=int if name in ("epochs", "num_points", "batch_size",
                                                                           "val_per_class") else str)
    p.add_argument("--cache-features", action="store_true")
    p.add_argument("--no-zero-shot", action="store_true", help="skip the zero-shot reference")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _options(args: argparse.Namespace, names: Sequence[str]) -> List[str]:
    out: List[str] = []
    for name in names:
        value = getattr(args, name)
        if value is not None:
            out += ["--" + name.replace("_", "-"), str(value)]
    if args.no_progress:
        out.append("--no-progress")
    return out


def run_one(args: argparse.Namespace, shots: int, seed: int) -> Dict[str, object]:
    """One few-shot run (skipped when its results.json exists); its row for ``sweep.csv``."""
    from pointcalip.cli import main

    out = Path(args.output) / f"k{shots}_seed{seed}"
    if not (out / "results.json").is_file():
        argv = ["fewshot", *(["--config", args.config] if args.config else []), "--shots", str(shots),
                "--seed", str(seed), "--output", str(out), *_options(args, PASS_THROUGH)]
        if args.cache_features:
            argv.append("--cache-features")
        if main(argv) != 0:
            raise SystemExit(f"fewshot_sweep: run K={shots} seed={seed} failed")
    res = json.loads((out / "results.json").read_text())
    tr = res.get("training", {})
    return {"shots": shots, "seed": seed, "top1": res["metrics"]["top1"],
            "mean_class_accuracy": res["metrics"]["mean_class_accuracy"], "best_epoch": tr.get("best_epoch"),
            "best_val_accuracy": tr.get("best_val_accuracy"), "seconds_per_epoch": tr.get("seconds_per_epoch")}


def zero_shot_top1(args: argparse.Namespace, dataset: str) -> Optional[float]:
    """Zero-shot top-1 of ``pointcalip eval`` on the same data and weights (run programmatically)."""
    from pointcalip.cli import main

    from pointcalip.config import preset_names

    cfg = args.zero_shot_config
    if cfg is None and f"pointclip_{dataset}" in preset_names():
        cfg = f"pointclip_{dataset}"
    out = Path(args.output) / "zeroshot"
    names = ("dataset", "variant", "data_root", "backbone", "pretrained", "device", "num_points")
    argv = ["eval", *(["--config", cfg] if cfg else []), "--output", str(out), *_options(args, names)]
    if main(argv) != 0:
        print("fewshot_sweep: zero-shot evaluation failed; no reference line", file=sys.stderr)
        return None
    return float(json.loads((out / "results.json").read_text())["metrics"]["top1"])


def summarise(rows: List[Dict[str, object]], zero: Optional[float]) -> List[Dict[str, object]]:
    """Mean and (population) std of top-1 per K."""
    out = []
    for k in sorted({int(r["shots"]) for r in rows}):
        acc = np.array([float(r["top1"]) for r in rows if int(r["shots"]) == k])
        out.append({"shots": k, "runs": len(acc), "top1_mean": float(acc.mean()), "top1_std": float(acc.std()),
                    "zero_shot_top1": "" if zero is None else zero})
    return out


def write_csv(path: Path, rows: List[Dict[str, object]]) -> None:
    from pointcalip.atomic import atomic_open

    with atomic_open(path, "w") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def plot(path: Path, summary: List[Dict[str, object]], zero: Optional[float], title: str) -> None:
    """Accuracy vs shots (log2 x axis) with mean ± std error bars and the zero-shot line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pointcalip.atomic import atomic_open

    k = [s["shots"] for s in summary]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.errorbar(k, [s["top1_mean"] for s in summary], yerr=[s["top1_std"] for s in summary], marker="o",
                capsize=4, label="few-shot (mean ± std over seeds)")
    if zero is not None:
        ax.axhline(zero, color="gray", linestyle="--", label=f"zero-shot ({zero:.2f} %)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(k, labels=[str(x) for x in k])
    ax.set_xlabel("shots per class (K)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = [run_one(args, k, s) for k in args.shots for s in args.seeds]
    first = json.loads((out / f"k{args.shots[0]}_seed{args.seeds[0]}" / "results.json").read_text())
    dataset = first["config"]["dataset"]
    zero = None if args.no_zero_shot else zero_shot_top1(args, dataset)
    summary = summarise(rows, zero)
    write_csv(out / "sweep.csv", rows)
    write_csv(out / "sweep_summary.csv", summary)
    title = f"{dataset} · {Path(first['config']['backbone']).name} · {first['config']['head']}"
    plot(out / "accuracy_vs_shots.png", summary, zero, title)
    for s in summary:
        print(f"K={s['shots']:>2}: {s['top1_mean']:.2f} ± {s['top1_std']:.2f} % ({s['runs']} seeds)")
    if zero is not None:
        print(f"zero-shot: {zero:.2f} %")
    print(f"wrote {out / 'sweep.csv'}, sweep_summary.csv, accuracy_vs_shots.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
