"""``pointcalip eval``: zero-shot evaluation of a dataset split (docs/method.md §2-§5).

Components are cached on disk (see :mod:`pointcalip.cache`); hyper-parameters are the
config's, or selected by ``search: val`` (held-out training clouds, the honest protocol)
or ``search: test`` (the reference's protocol, an oracle tuned on test labels).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from pointcalip.aggregation import ORACLE_LABEL, SearchResult, logits_from_components, run_search
from pointcalip.components import EvalModel, dataset_components
from pointcalip.config import EvalConfig
from pointcalip.metrics import classification_metrics
from pointcalip.report import (
    package_versions,
    plot_confusion,
    summary_table,
    write_json,
    write_metric_files,
    write_predictions,
)
from pointcalip.datasets.splits import stratified_holdout

@dataclass
class Selection:
    """The hyper-parameters used for the reported numbers, and how they were chosen."""

    view_weights: Tuple[float, ...]
    beta2: float
    beta3: float
    how: str
    search: Optional[SearchResult] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"view_weights": list(self.view_weights), "beta2": self.beta2, "beta3": self.beta3,
                               "selected_by": self.how}
        if self.search is not None:
            out["search"] = dataclasses.asdict(self.search)
        return out


def select(cfg: EvalConfig, test_comps: torch.Tensor, test_labels: np.ndarray, val: Optional[Tuple[torch.Tensor, np.ndarray]]) -> Selection:
    """Hyper-parameters per ``cfg.search``."""
    weights = cfg.resolved_view_weights()
    b2, b3 = cfg.effective_betas()
    if cfg.search == "none":
        return Selection(weights, b2, b3, "config")
    comps, labels, split = (val[0], val[1], "val") if cfg.search == "val" else (test_comps, test_labels, "test")
    res = run_search(comps, torch.from_numpy(labels), cfg.method, weights, b2, b3, split,
                     cfg.view_weight_grid, cfg.beta2_range, cfg.beta3_range, cfg.beta_steps,
                     search_views=cfg.search_views, strategy=cfg.search_strategy)
    how = (f"search on a held-out {cfg.val_fraction:.0%} of the training split ({res.num_samples} clouds)"
           if split == "val" else ORACLE_LABEL)
    return Selection(res.view_weights, res.beta2, res.beta3, how, res)


def write_outputs(
    out_dir: Path,
    classes: Sequence[str],
    labels: np.ndarray,
    logits: np.ndarray,
    components: np.ndarray,
    selection: Selection,
    results: Dict[str, Any],
    title: str,
) -> Dict[str, Any]:
    """Metrics + the three output files; returns the full results mapping."""
    metrics = classification_metrics(logits, labels, classes)
    confusion = metrics.pop("confusion")
    results = {**results, "metrics": metrics, "selection": selection.to_dict(), "versions": package_versions()}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "predictions.npz", labels, logits, components, selection.view_weights,
                      (selection.beta2, selection.beta3))
    plot_confusion(out_dir / "confusion.png", confusion, classes, title)
    write_metric_files(out_dir, confusion, classes)
    write_json(out_dir / "results.json", results)
    return results


def write_html_report(path: str, results: Dict[str, Any], dataset: Any, logits: np.ndarray, projection: Any,
                      confusion_png: Path, gallery_size: int = 24) -> Path:
    """``--report``: summary, confusion plot, per-class accuracy and the most confidently wrong
    clouds with their views as the encoder saw them (docs/method.md §13)."""
    from pointcalip.htmlreport import ReportItem, most_confident_wrong, write_eval_report

    labels = dataset.labels
    probs = _softmax(logits)
    wrong = most_confident_wrong(probs, labels, gallery_size)
    items = []
    if len(wrong):
        points = dataset.points_of(np.asarray(wrong))
        views = projection.preview(torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))).cpu().numpy()
        for j, i in enumerate(wrong):
            order = np.argsort(-probs[i], kind="stable")[:5]
            items.append(ReportItem(f"{results['dataset']['split']} #{int(i)}", views=views[j], points=points[j],
                                    topk=[(dataset.classes[c], float(probs[i, c])) for c in order],
                                    true_label=dataset.classes[int(labels[i])]))
    m, sel = results["metrics"], results["selection"]
    summary = {"top-1": f"{m['top1']:.2f} %", "top-5": f"{m['top5']:.2f} %",
               "mean class accuracy": f"{m['mean_class_accuracy']:.2f} %", "clouds": str(m["num_samples"]),
               "selected by": sel["selected_by"]}
    acc = m["per_class_accuracy"]  # percent; None for a class without test clouds
    per_class = [(c, int(m["support"][c]), acc[c] / 100.0) for c in dataset.classes if acc[c] is not None]
    cfg = results["config"]
    settings = {k: str(cfg[k]) for k in ("dataset", "variant", "split", "backbone", "pretrained", "method",
                                         "projection", "search") if k in cfg}
    return write_eval_report(path, summary=summary, per_class=per_class, gallery=items, confusion_png=confusion_png,
                             title=f"pointcalip eval · {cfg.get('dataset')}", settings=settings)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def select_prompts_on_val(cfg: EvalConfig, model: EvalModel, train: Any, idx: np.ndarray) -> Dict[str, Any]:
    """``prompt_select: val``: one sentence (or the mean) per class, chosen on held-out training clouds."""
    from pointcalip.components import global_features
    from pointcalip.prompts import select_prompts

    sentences = model.sentences
    feats = model.encoder.sentence_features(sentences)
    glob = global_features(model, train, idx, cfg.batch_size, cfg.progress)
    sel = select_prompts(glob, torch.from_numpy(train.labels[idx]), feats, cfg.resolved_view_weights())
    model.set_text(sel.text, {"prompts_selected": [s[c] if c >= 0 else "mean" for s, c in zip(sentences, sel.chosen)]})
    return {"selected_by": f"greedy per class, 2 passes, on {len(idx)} held-out training clouds",
            "val_accuracy_before": sel.accuracy_before, "val_accuracy_after": sel.accuracy_after,
            "chosen": {c: (s[i] if i >= 0 else "mean of all sentences")
                       for c, s, i in zip(model.classes, sentences, sel.chosen)}}


def run_eval(cfg: EvalConfig) -> Optional[Dict[str, Any]]:
    """Evaluate per ``cfg``; writes ``cfg.output``/{results.json,predictions.npz,confusion.png}.

    Under ``torchrun`` (docs/method.md §10) every rank encodes its share of the clouds on
    ``cuda:LOCAL_RANK`` (or the CPU); rank 0 alone searches, scores, writes the files and
    returns the results, the other ranks return ``None``.
    """
    from pointcalip import distributed

    return distributed.on_ranks(cfg, _run_eval_ranked)


def _run_eval_ranked(cfg: EvalConfig) -> Optional[Dict[str, Any]]:
    """The body of :func:`run_eval` once the process group (if any) is running."""
    from pointcalip import distributed
    from pointcalip.datasets import build_dataset

    t_start = time.perf_counter()
    test = build_dataset(cfg.dataset, cfg.data_root, cfg.split, num_points=cfg.num_points, variant=cfg.variant)
    model = EvalModel(cfg, test.classes)
    train, idx, prompts = None, None, None
    if cfg.search == "val" or cfg.prompt_select == "val":
        train = build_dataset(cfg.dataset, cfg.data_root, "train", num_points=cfg.num_points, variant=cfg.variant)
        idx = stratified_holdout(train.labels, cfg.val_fraction, cfg.seed)
    if cfg.prompt_select == "val":
        prompts = select_prompts_on_val(cfg, model, train, idx)
    t0 = time.perf_counter()
    comps, labels, cached = dataset_components(cfg, model, test, cfg.split)
    t_encode = time.perf_counter() - t0
    val = None
    if cfg.search == "val":
        val_comps, val_labels, _ = dataset_components(cfg, model, train, "train", idx)
        val = (val_comps, val_labels)
    if not distributed.is_main():  # the other ranks have sent their components to rank 0
        return None
    t0 = time.perf_counter()
    selection = select(cfg, comps, labels, val)
    t_search = time.perf_counter() - t0
    logits = logits_from_components(comps, selection.view_weights, selection.beta2, selection.beta3).numpy()
    results: Dict[str, Any] = {
        "config": cfg.to_dict(),
        "dataset": {"name": cfg.dataset, "variant": getattr(test, "variant", None), "split": cfg.split,
                    "num_samples": int(len(labels)), "classes": list(test.classes)},
        "weights": dataclasses.asdict(model.encoder.info),
        "oracle": cfg.search == "test",
        "validation": _validation_note(cfg, train, idx, len(labels)),
        "prompts": prompts,
        "timings": {"load_model_s": model.seconds_load, "encode_s": t_encode, "components_from_cache": cached,
                    "search_s": t_search, "total_s": time.perf_counter() - t_start},
    }
    tag = f" [{ORACLE_LABEL}]" if cfg.search == "test" else ""
    title = f"{cfg.dataset} {cfg.split} · {Path(cfg.backbone).name} · {cfg.method}{tag}"
    results = write_outputs(Path(cfg.output), test.classes, labels, logits, comps.numpy(), selection, results, title)
    if cfg.report:
        write_html_report(cfg.report, results, test, logits, model.engine.projection, Path(cfg.output) / "confusion.png")
    return results


def _validation_note(cfg: EvalConfig, train: Any, idx: Optional[np.ndarray], num_test: int) -> Optional[Dict[str, Any]]:
    """How large the held-out selection split is, next to the test split (its extra encoding cost)."""
    if idx is None:
        return None
    return {"source": "training split, class-stratified hold-out", "fraction": cfg.val_fraction, "seed": cfg.seed,
            "num_samples": int(len(idx)), "num_train": int(len(train)),
            "extra_encoding_vs_test": round(len(idx) / max(num_test, 1), 3)}


def format_summary(results: Dict[str, Any]) -> str:
    """The short table printed after an evaluation."""
    m, s, c = results["metrics"], results["selection"], results["config"]
    rows: List[Tuple[str, str]] = [
        ("dataset", f"{c['dataset']} ({results['dataset']['split']}, {m['num_samples']} clouds)"),
        ("model", f"{Path(c['backbone']).name} / {Path(c['pretrained']).name} · {c['method']}"),
        ("top-1", f"{m['top1']:.2f} %"),
        ("top-5", f"{m['top5']:.2f} %"),
        ("mean class acc", f"{m['mean_class_accuracy']:.2f} %"),
        ("beta2, beta3", f"{s['beta2']:.4g}, {s['beta3']:.4g}"),
        ("view weights", ", ".join(f"{w:g}" for w in s["view_weights"])),
        ("selected by", s["selected_by"]),
    ]
    if s.get("search"):
        rows.append(("view-weight search", f"{s['search']['strategy']} ({s['search']['view_candidates']:,} candidates)"))
    return summary_table(rows)
