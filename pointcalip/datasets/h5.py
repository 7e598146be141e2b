"""Reading the h5 shards of the PointNet-style releases (ModelNet40, ScanObjectNN), docs/method.md §7.

Each file holds ``data`` (``float32 [n, P, 3]``) and ``label`` (``[n]`` or ``[n, 1]``);
clouds are used as stored, the first ``num_points`` of the ``P`` stored points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from pointcalip.errors import ConfigError, DatasetError


def open_h5(path: Path):
    """Open ``path`` read-only with h5py (imported lazily: importing the datasets stays light)."""
    import h5py

    return h5py.File(path, "r")


def check_labels(path: Path, raw: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """``raw`` labels (``[n]`` or ``[n, 1]``, any numeric dtype) as ``int64 [n]`` in ``0..K-1``."""
    labels = raw.reshape(-1)
    if labels.shape[0] != n:
        raise DatasetError(f"{path}: 'label' has {labels.shape[0]} entries but 'data' has {n} clouds")
    if n and (not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels))):
        raise DatasetError(f"{path}: 'label' holds non-integer values")
    labels = labels.astype(np.int64)
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"{path}: labels range {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}"
        )
    return labels


def read_h5(path: Path, num_points: Optional[int], num_classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Read one h5 file.

    Returns:
        points: ``float32 [n, num_points, 3]`` (``[n, 0, 3]`` when ``num_points`` is None,
            i.e. only shapes and labels are checked), labels: ``int64 [n]``, and the number of
            points stored per cloud.
    """
    try:
        with open_h5(path) as f:
            missing = [k for k in ("data", "label") if k not in f]
            if missing:
                raise DatasetError(f"{path}: missing key(s) {', '.join(missing)}; found {', '.join(sorted(f.keys()))}")
            data = f["data"]
            if data.ndim != 3 or data.shape[2] < 3:
                raise DatasetError(f"{path}: 'data' has shape {data.shape}, expected [n, points, 3]")
            stored = int(data.shape[1])
            if num_points is not None and num_points > stored:
                raise ConfigError(
                    f"num_points={num_points} but {path.name} stores {stored} points per cloud; "
                    f"use num_points <= {stored}"
                )
            if num_points is None:
                points = np.empty((data.shape[0], 0, 3), dtype=np.float32)
            else:
                points = np.asarray(data[:, :num_points, :3], dtype=np.float32)
            raw = np.asarray(f["label"][()])
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise DatasetError(f"cannot read {path}: corrupt or not an HDF5 file ({exc})") from exc
    return points, check_labels(path, raw, len(points), num_classes), stored


def load_files(files: Sequence[Path], num_points: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate h5 shards in order. Returns ``float32 [n, num_points, 3]``, ``int64 [n]``."""
    pts, labs = [], []
    for path in files:
        p, lab, _ = read_h5(path, num_points, num_classes)
        pts.append(p)
        labs.append(lab)
    points = np.ascontiguousarray(np.concatenate(pts, axis=0), dtype=np.float32)
    return points, np.concatenate(labs, axis=0).astype(np.int64)


def count_clouds(path: Path, num_classes: int) -> int:
    """Clouds in one h5 file, after checking its keys, shapes and labels (no points read)."""
    return len(read_h5(path, None, num_classes)[1])
