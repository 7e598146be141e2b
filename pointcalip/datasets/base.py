"""The dataset contract (docs/method.md §7): labelled point clouds of a fixed size.

A :class:`PointCloudDataset` holds ``n`` clouds of ``num_points`` points each and their
labels. It is a ``torch.utils.data.Dataset`` (``dataset[i]`` is ``(torch.float32
[num_points, 3], int)``) and offers a batch read, :meth:`PointCloudDataset.points_of`,
which is how every pipeline reads clouds: in-memory datasets slice their ``.points``
array, lazy datasets read their files there.

``fingerprint()`` is a short hash (16 hex characters) that changes when the data used
changes; caches key on it. ``subset(indices)`` gives a dataset of those rows whose
fingerprint is derived from the parent's fingerprint and the indices.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


def as_indices(indices: object, n: int, what: str = "indices") -> np.ndarray:
    """``indices`` as ``int64 (M,)`` within ``[0, n)`` (negative values count from the end).

    Raises:
        IndexError: an index is out of range.
        ValueError: ``indices`` is not a 1-D array of integers.
    """
    idx = np.asarray(indices)
    if idx.ndim == 0:
        idx = idx.reshape(1)
    if idx.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {idx.shape}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{what} must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"{what} out of range for a dataset of {n} clouds: {idx.min()}..{idx.max()}")
    return np.where(idx < 0, idx + n, idx)


def hash16(*parts: object) -> str:
    """First 16 hex digits of SHA-256 over ``parts`` (JSON for plain values, raw bytes for arrays)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, (bytes, bytearray)):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


class PointCloudDataset(Dataset):
    """Base class of every dataset: ``n`` clouds ``float32 [num_points, 3]`` with labels ``int64 [n]``.

    Subclasses set ``name``, ``split``, ``variant``, ``classes`` (``K`` names in label order),
    ``labels`` and ``num_points`` and implement :meth:`points_of` and :meth:`fingerprint`.
    """

    name: str = "pointclouds"
    split: str
    variant: Optional[str]
    classes: list[str]
    labels: np.ndarray
    num_points: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(torch.float32 [num_points, 3], int)`` of cloud ``index``."""
        idx = as_indices(np.asarray([int(index)]), len(self), "index")
        return torch.from_numpy(np.array(self.points_of(idx)[0], dtype=np.float32)), int(self.labels[idx[0]])

    def __repr__(self) -> str:
        extra = f", variant={self.variant!r}" if self.variant else ""
        return f"{type(self).__name__}(split={self.split!r}, n={len(self)}, num_points={self.num_points}{extra})"

    def points_of(self, indices: np.ndarray) -> np.ndarray:
        """Clouds ``indices`` (``int (M,)``) as ``float32 (M, num_points, 3)``, in that order."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """16 hex characters identifying exactly the data this dataset yields."""
        raise NotImplementedError

    def subset(self, indices: np.ndarray) -> "PointCloudDataset":
        """A dataset of rows ``indices`` (``int (M,)``), in that order.

        Its fingerprint hashes this dataset's fingerprint and the indices.
        """
        return SubsetDataset(self, indices)


class InMemoryDataset(PointCloudDataset):
    """A dataset held in memory: ``.points float32 [n, num_points, 3]``, ``.labels int64 [n]``.

    ``files`` are the source files; their names and sizes enter the fingerprint (with the
    bytes of ``.points`` and ``.labels``), their folder does not, so a moved copy keeps it.
    """

    def __init__(
        self,
        points: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str],
        split: str,
        num_points: int,
        files: Sequence[Path] = (),
        variant: Optional[str] = None,
        name: Optional[str] = None,
    ) -> None:
        if points.ndim != 3 or points.shape[2] != 3 or points.shape[1] != num_points:
            raise ValueError(f"points must have shape (n, {num_points}, 3), got {points.shape}")
        if labels.shape != (points.shape[0],):
            raise ValueError(f"labels must have shape ({points.shape[0]},), got {labels.shape}")
        if name is not None:
            self.name = name
        self.points = points
        self.labels = labels
        self.classes = list(classes)
        self.split = split
        self.num_points = num_points
        self.variant = variant
        self.files = [Path(f) for f in files]
        self._file_meta = [[f.name, f.stat().st_size if f.exists() else -1] for f in self.files]
        self._fingerprint: Optional[str] = None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.points[index].copy()), int(self.labels[index])

    def points_of(self, indices: np.ndarray) -> np.ndarray:
        return self.points[as_indices(indices, len(self))]

    def fingerprint(self) -> str:
        """SHA-256 (16 hex) of name, split, variant, ``num_points``, classes, file names/sizes, points, labels.

        Any changed sample or label changes it; a moved copy of the same files does not.
        """
        if self._fingerprint is None:
            meta = {
                "dataset": self.name,
                "split": self.split,
                "variant": self.variant,
                "num_points": self.num_points,
                "classes": self.classes,
                "files": self._file_meta,
                "shape": list(self.points.shape),
            }
            h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode("utf-8"))
            h.update(np.ascontiguousarray(self.points, dtype=np.float32))
            h.update(np.ascontiguousarray(self.labels, dtype=np.int64))
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def subset(self, indices: np.ndarray) -> "InMemoryDataset":
        """An in-memory dataset of rows ``indices`` (a copy of those clouds)."""
        idx = as_indices(indices, len(self))
        sub = InMemoryDataset(
            np.ascontiguousarray(self.points[idx]), self.labels[idx].copy(), self.classes, self.split,
            self.num_points, self.files, self.variant, self.name,
        )  # fmt: skip
        sub._fingerprint = hash16("subset", self.fingerprint(), idx)
        return sub


class SubsetDataset(PointCloudDataset):
    """Rows ``indices`` of ``parent``, read through ``parent.points_of`` (no copy)."""

    def __init__(self, parent: PointCloudDataset, indices: np.ndarray) -> None:
        self.parent = parent
        self.indices = as_indices(indices, len(parent))
        self.name = parent.name
        self.split = parent.split
        self.variant = parent.variant
        self.classes = list(parent.classes)
        self.num_points = parent.num_points
        self.labels = parent.labels[self.indices]

    def points_of(self, indices: np.ndarray) -> np.ndarray:
        return self.parent.points_of(self.indices[as_indices(indices, len(self))])

    def fingerprint(self) -> str:
        return hash16("subset", self.parent.fingerprint(), self.indices)
