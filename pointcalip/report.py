"""Evaluation outputs: ``results.json``, ``predictions.npz``, ``confusion.png``, ``confusion.npy``,
``per_class.csv`` and a summary. Figures are drawn on ``matplotlib.figure.Figure`` objects with an
Agg canvas: no pyplot state and no global backend change."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from pointcalip.atomic import atomic_open


def package_versions() -> Dict[str, str]:
    """Versions of the packages that decide the numbers."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("pointcalip", "torch", "open_clip_torch", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """``data`` as indented JSON (numpy scalars / arrays and tuples converted), atomically."""
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=2, default=_json_default)
        f.write("\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_predictions(
    path: Path,
    labels: np.ndarray,
    logits: np.ndarray,
    view_components: np.ndarray,
    view_weights: Sequence[float],
    betas: Sequence[float],
    extra: Optional[Mapping[str, np.ndarray]] = None,
) -> None:
    """``predictions.npz``: labels ``[B]``, logits ``[B, K]``, view_components ``[B, V, C, K]``,
    view_weights ``[V]``, betas ``[2]`` (and any ``extra`` arrays)."""
    with atomic_open(path) as f:
        np.savez(
            f,
            labels=np.asarray(labels, dtype=np.int64),
            logits=np.asarray(logits, dtype=np.float32),
            view_components=np.asarray(view_components, dtype=np.float32),
            view_weights=np.asarray(view_weights, dtype=np.float32),
            betas=np.asarray(betas, dtype=np.float32),
            **(extra or {}),
        )


MATRIX_MAX_CLASSES = 60
TOP_PAIRS = 30


def _save(fig, path: Path) -> None:
    """Write a ``matplotlib.figure.Figure`` as PNG (Agg canvas; no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_open(path) as f:
        fig.savefig(f, format="png")


def plot_confusion(
    path: Path,
    confusion: np.ndarray,
    classes: Sequence[str],
    title: str,
    max_matrix_classes: int = MATRIX_MAX_CLASSES,
    top_pairs: int = TOP_PAIRS,
) -> None:
    """``confusion.png`` from ``(K, K)`` counts: the row-normalised matrix up to
    ``max_matrix_classes`` classes, else the ``top_pairs`` most confused pairs
    (:func:`plot_confused_pairs`); the full matrix belongs in ``confusion.npy``."""
    if len(classes) > max_matrix_classes:
        plot_confused_pairs(path, confusion, classes, title, top_pairs)
    else:
        plot_confusion_matrix(path, confusion, classes, title)


def plot_confusion_matrix(path: Path, confusion: np.ndarray, classes: Sequence[str], title: str) -> None:
    """Row-normalised ``(K, K)`` confusion matrix as a PNG; readable up to about 60 classes."""
    from matplotlib.figure import Figure

    k = len(classes)
    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape, dtype=np.float32), where=rows > 0)
    side = max(5.0, 0.22 * k + 2.5)
    fig = Figure(figsize=(side + 1.2, side), dpi=120)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fs = 9 if k <= 15 else (7 if k <= 40 else 6)
    support = rows.ravel()
    ax.set_xticks(range(k), labels=list(classes), rotation=90, fontsize=fs)
    ax.set_yticks(range(k), labels=[f"{c} ({n})" for c, n in zip(classes, support)], fontsize=fs)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (clouds)")
    ax.set_title(title, fontsize=10)
    if k > 15:  # faint grid so a cell can be followed to its labels
        ax.set_xticks(np.arange(-0.5, k, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, k, 1), minor=True)
        ax.grid(which="minor", color="0.9", linewidth=0.3)
        ax.tick_params(which="minor", length=0)
    for i in range(k):
        for j in range(k):
            if norm[i, j] >= (0.005 if k <= 15 else 0.1):
                ax.text(j, i, f"{norm[i, j]:.2f}" if k <= 15 else f"{100 * norm[i, j]:.0f}", ha="center",
                        va="center", fontsize=7 if k <= 15 else 4.5,
                        color="white" if norm[i, j] > 0.5 else "black")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cbar.set_label("fraction of the true class" + ("" if k <= 15 else " (cells >= 10 % in percent)"))
    fig.tight_layout()
    _save(fig, path)


def plot_confused_pairs(path: Path, confusion: np.ndarray, classes: Sequence[str], title: str,
                        top_pairs: int = TOP_PAIRS) -> None:
    """Horizontal bars of the ``top_pairs`` largest off-diagonal counts of ``(K, K)`` counts,
    each labelled "true -> predicted" with its share of the true class."""
    from matplotlib.figure import Figure

    from pointcalip.metrics import confused_pairs

    pairs = confused_pairs(confusion, top_pairs)
    support = confusion.sum(axis=1)
    total = int(confusion.sum())
    acc = 100.0 * float(np.trace(confusion)) / total if total else 0.0
    n = max(len(pairs), 1)
    fig = Figure(figsize=(9.5, 1.2 + 0.28 * n), dpi=120)
    ax = fig.add_subplot()
    if pairs:
        counts = [c for _, _, c in pairs]
        labels = [f"{_short(classes[t])} \u2192 {_short(classes[p])}" for t, p, _ in pairs]
        y = np.arange(len(pairs))
        ax.barh(y, counts, color="#4a7ab5")
        ax.set_yticks(y, labels=labels, fontsize=8)
        ax.invert_yaxis()
        for yi, (t, _, c) in zip(y, pairs):
            ax.text(c, yi, f" {c}  ({100.0 * c / support[t]:.0f} % of {support[t]})", va="center", fontsize=7)
        ax.set_xlim(0, max(counts) * 1.35)
    else:
        ax.text(0.5, 0.5, "no confusions", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.set_xlabel("clouds of the true class predicted as the other class")
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"{title}\n{len(pairs)} most confused pairs (true \u2192 predicted) of {len(classes)} classes\n"
                 f"{total} clouds \u00b7 top-1 {acc:.1f} % \u00b7 full matrix in confusion.npy, "
                 f"per class in per_class.csv", fontsize=9, x=0.01, ha="left")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    _save(fig, path)


def _short(name: str, n: int = 34) -> str:
    return name if len(name) <= n else name[: n - 1] + "\u2026"


def write_metric_files(out_dir: Path, confusion: np.ndarray, classes: Sequence[str]) -> Dict[str, Path]:
    """``confusion.npy`` (``(K, K)`` int64 counts, row = true class) and ``per_class.csv``
    (class, support, correct, accuracy, predicted, precision, most_confused_with,
    most_confused_count; accuracies in percent, empty when undefined). Returns the paths."""
    import csv
    import io

    from pointcalip.metrics import per_class_table

    out_dir = Path(out_dir)
    rows = per_class_table(np.asarray(confusion), classes)
    npy = out_dir / "confusion.npy"
    with atomic_open(npy) as f:
        np.save(f, np.asarray(confusion, dtype=np.int64))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class", "support", "correct", "accuracy", "predicted", "precision", "most_confused_with",
                "most_confused_count"])
    for r in rows:
        w.writerow([r.name, r.support, r.correct, "" if r.accuracy is None else f"{r.accuracy:.4f}", r.predicted,
                    "" if r.precision is None else f"{r.precision:.4f}", r.most_confused_with or "",
                    r.most_confused_count])
    csv_path = out_dir / "per_class.csv"
    with atomic_open(csv_path, "w") as f:
        f.write(buf.getvalue())
    return {"confusion": npy, "per_class": csv_path}


def summary_table(rows: Sequence[Sequence[str]]) -> str:
    """A two-column plain-text table."""
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{r[0]:<{width}}  {r[1]}" for r in rows)
