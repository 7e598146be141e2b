"""Write tiny synthetic datasets in the exact on-disk layout of the real releases.

For tests, scripts and offline demos: ``write_modelnet40`` mimics
``modelnet40_ply_hdf5_2048/`` (sharded ``ply_data_{train,test}{i}.h5``, file lists whose paths
are relative to a foreign root, ``shape_names.txt``, ``uint8 [n, 1]`` labels) and
``write_scanobjectnn`` mimics ``h5_files/``. The clouds come from
:func:`pointcalip.synthetic.make_class_cloud`; nothing here is real data.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from pointcalip.data import (
    MODELNET40_CLASSES,
    MODELNET40_DIR,
    SCANOBJECTNN_CLASSES,
    SCANOBJECTNN_DIR,
    SCANOBJECTNN_VARIANTS,
    SPLITS,
)
from pointcalip.synthetic import make_class_cloud

PathLike = Union[str, Path]

# Foreign root used in the generated file lists, as in the real release.
LIST_PREFIX = "data/modelnet40_ply_hdf5_2048"


def _split_samples(num_classes: int, per_class: int, num_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` clouds of every class in a shuffled order.

    Returns ``float32 [num_classes * per_class, num_points, 3]`` and ``int64 [n]`` labels.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    seeds = rng.integers(0, 2**31 - 1, size=len(labels))
    points = np.stack([make_class_cloud(int(k), num_points, int(s)) for k, s in zip(labels, seeds)]) if len(labels) else (
        np.zeros((0, num_points, 3), np.float32)
    )
    return points.astype(np.float32), labels.astype(np.int64)


def _write_h5(path: Path, points: np.ndarray, labels: np.ndarray, label_dtype: str, label_2d: bool, mask: bool) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=points.astype(np.float32))
        lab = labels.reshape(-1, 1) if label_2d else labels.reshape(-1)
        f.create_dataset("label", data=lab.astype(label_dtype))
        if mask:
            f.create_dataset("mask", data=np.ones(points.shape[:2], dtype=np.int8))


def write_modelnet40(
    root: PathLike,
    train_per_class: int = 2,
    test_per_class: int = 1,
    num_points: int = 2048,
    seed: int = 0,
    files: Sequence[int] = (2, 1),
) -> Path:
    """Write a synthetic ModelNet40 into ``root/modelnet40_ply_hdf5_2048/`` and return that folder.

    ``files = (train_shards, test_shards)``; each split's ``40 * per_class`` clouds
    (``float32 [n, num_points, 3]``, labels ``uint8 [n, 1]``) are shuffled and cut into that
    many ``ply_data_<split><i>.h5`` shards, listed in ``<split>_files.txt`` as
    ``data/modelnet40_ply_hdf5_2048/<file>`` (a foreign root, like the real release).
    """
    folder = Path(root) / MODELNET40_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n", encoding="utf-8")
    for i, (split, per_class, shards) in enumerate(zip(SPLITS, (train_per_class, test_per_class), files)):
        points, labels = _split_samples(len(MODELNET40_CLASSES), per_class, num_points, seed * 1000 + i)
        names = []
        for j, idx in enumerate(np.array_split(np.arange(len(labels)), max(1, int(shards)))):
            name = f"ply_data_{split}{j}.h5"
            _write_h5(folder / name, points[idx], labels[idx], "uint8", label_2d=True, mask=False)
            names.append(f"{LIST_PREFIX}/{name}")
        (folder / f"{split}_files.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return folder


def write_scanobjectnn(
    root: PathLike,
    variants: Sequence[str] = ("obj_bg", "obj_only", "pb_t50_rs"),
    train_per_class: int = 2,
    test_per_class: int = 1,
    seed: int = 0,
    num_points: int = 2048,
) -> Path:
    """Write a synthetic ScanObjectNN into ``root/h5_files/`` and return that folder.

    Each variant gets ``<folder>/<train file>`` and ``<folder>/<test file>`` (see
    :data:`pointcalip.data.SCANOBJECTNN_VARIANTS`) with keys ``data float32 [n, num_points, 3]``,
    ``label int64 [n]`` and ``mask int8 [n, num_points]``; ``n = 15 * per_class``.
    """
    folder = Path(root) / SCANOBJECTNN_DIR
    for v_index, variant in enumerate(variants):
        if variant not in SCANOBJECTNN_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(SCANOBJECTNN_VARIANTS)}")
        spec = SCANOBJECTNN_VARIANTS[variant]
        (folder / spec.folder).mkdir(parents=True, exist_ok=True)
        for i, (split, per_class) in enumerate(zip(SPLITS, (train_per_class, test_per_class))):
            split_seed = seed * 1000 + 10 * (v_index + 1) + i
            points, labels = _split_samples(len(SCANOBJECTNN_CLASSES), per_class, num_points, split_seed)
            _write_h5(folder / spec.folder / spec.file(split), points, labels, "int64", label_2d=False, mask=True)
    return folder


def _zip_folder(folder: Path, zip_path: Path) -> Path:
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, arcname=str(Path(folder.name) / path.relative_to(folder)))
    return zip_path


def make_modelnet40_zip(path: PathLike, **kwargs) -> Path:
    """Build a ``modelnet40_ply_hdf5_2048.zip``-style archive at ``path``; returns ``path``.

    The archive holds one top folder ``modelnet40_ply_hdf5_2048/`` written by
    :func:`write_modelnet40` (``kwargs`` are passed on to it).
    """
    with tempfile.TemporaryDirectory() as tmp:
        return _zip_folder(write_modelnet40(tmp, **kwargs), Path(path))


def make_scanobjectnn_zip(path: PathLike, **kwargs) -> Path:
    """Build an ``h5_files.zip``-style archive (top folder ``h5_files/``) at ``path``; returns ``path``.

    ``kwargs`` are passed on to :func:`write_scanobjectnn`.
    """
    with tempfile.TemporaryDirectory() as tmp:
        return _zip_folder(write_scanobjectnn(tmp, **kwargs), Path(path))
