"""Evaluation outputs: ``results.json``, ``predictions.npz``, ``confusion.png`` and a summary."""

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


def plot_confusion(path: Path, confusion: np.ndarray, classes: Sequence[str], title: str) -> None:
    """Row-normalised confusion matrix as a PNG, readable at 40 classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape, dtype=float), where=rows > 0)
    side = max(5.0, 0.3 * k + 3.0)
    fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fs = 10 if k <= 15 else 7
    ax.set_xticks(range(k), labels=classes, rotation=90, fontsize=fs)
    ax.set_yticks(range(k), labels=classes, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    if k <= 15:
        for i in range(k):
            for j in range(k):
                if norm[i, j] > 0:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    with atomic_open(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def summary_table(rows: Sequence[Sequence[str]]) -> str:
    """A two-column plain-text table."""
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{r[0]:<{width}}  {r[1]}" for r in rows)
