"""Write tiny synthetic datasets in the exact on-disk layout of the real releases.

For tests, scripts and offline demos: ``write_modelnet40`` mimics
``modelnet40_ply_hdf5_2048/`` (sharded ``ply_data_{train,test}{i}.h5``, file lists whose paths
are relative to a foreign root, ``shape_names.txt``, ``uint8 [n, 1]`` labels) and
``write_scanobjectnn`` mimics ``h5_files/``. The clouds come from
:func:`pointcalip.testing.shapes.make_class_cloud`; nothing here is real data.
``write_objaverse_lvis`` mimics OpenShape's processed Objaverse-LVIS (a split JSON and one
pickled-dict ``.npy`` per object).
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from pointcalip.datasets.modelnet import MODELNET40_CLASSES, MODELNET40_DIR, SPLITS
from pointcalip.datasets.objaverse_lvis import OBJAVERSE_LVIS_DIR
from pointcalip.datasets.scanobjectnn import SCANOBJECTNN_CLASSES, SCANOBJECTNN_DIR, SCANOBJECTNN_VARIANTS
from pointcalip.testing.shapes import make_class_cloud
from pointcalip._types import PathLike


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
    :data:`pointcalip.datasets.scanobjectnn.SCANOBJECTNN_VARIANTS`) with keys ``data float32 [n, num_points, 3]``,
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


# --------------------------------------------------------------------------- Objaverse-LVIS

# Where OpenShape's split file says the objects are (the authors' machine).
OPENSHAPE_PREFIX = "/mnt/data/objaverse-processed/merged_for_training_final/Objaverse"
LVIS_TEST_CATEGORIES = ("Band_Aid", "apple", "chair", "fire_alarm", "mug")  # capitals sort first


def write_openshape_npy(path: PathLike, xyz: np.ndarray, seed: int = 0, extra: Optional[Mapping] = None) -> Path:
    """Write one object file like OpenShape's: ``np.save`` of a dict (a pickled 0-d object array).

    The dict holds ``xyz`` (``float32 (N, 3)``), ``rgb`` (``float32 (N, 3)`` in [0, 1]) and
    small stand-ins for the other entries of the release (ids, texts, feature arrays,
    nested dicts), so that readers meet the same kinds of pickled values.
    """
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    xyz = np.asarray(xyz, dtype=np.float32)
    record = {
        "dataset": "Objaverse",
        "group": path.parent.name,
        "id": path.stem,
        "xyz": xyz,
        "rgb": rng.uniform(0, 1, size=xyz.shape).astype(np.float32),
        "image_feat": rng.normal(size=(12, 8)).astype(np.float32),
        "thumbnail_feat": rng.normal(size=(8,)).astype(np.float32),
        "text": [f"synthetic object {path.stem}"],
        "text_feat": [{"original": rng.normal(size=(1, 8)).astype(np.float16),
                       "prompt_avg": rng.normal(size=(1, 8)).astype(np.float16)}],
        "blip_caption": "",
        "retrieval_text": [],
        "num": np.int64(len(xyz)),
    }  # fmt: skip
    record.update(extra or {})
    with open(path, "wb") as f:
        np.save(f, np.array(record, dtype=object), allow_pickle=True)
    return path


def write_objaverse_lvis(
    root: PathLike,
    categories: Sequence[str] = LVIS_TEST_CATEGORIES,
    per_category: int = 2,
    num_points: int = 2048,
    seed: int = 0,
    folder_name: str = OBJAVERSE_LVIS_DIR,
    parts: int = 3,
) -> Path:
    """Write a synthetic Objaverse-LVIS into ``root/<folder_name>/`` and return that folder.

    Layout as after unpacking OpenShape's release: ``meta_data/split/lvis.json`` (a list of
    ``{"uid", "category", "data_path"}`` in a shuffled order, ``data_path`` absolute under
    :data:`OPENSHAPE_PREFIX`) and
    ``objaverse-processed/merged_for_training_final/Objaverse/000-<part>/<uid>.npy`` written
    by :func:`write_openshape_npy`, the objects spread over ``parts`` part folders. Object
    ``j`` of category ``c`` (index ``k`` in ``categories``) is ``make_class_cloud(k, ...)``
    scaled by 0.9 (xyz stays in [-1, 1], y-up).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / folder_name
    pairs = [(k, c) for k, c in enumerate(categories) for _ in range(per_category)]
    order = rng.permutation(len(pairs))
    entries = []
    for n, i in enumerate(order):
        k, category = pairs[int(i)]
        uid = f"{int(rng.integers(0, 16**8)):08x}{n:024x}"
        group = f"000-{n % max(1, parts):03d}"
        cloud = 0.9 * make_class_cloud(k, num_points, int(rng.integers(0, 2**31 - 1)))
        write_openshape_npy(folder / "objaverse-processed" / "merged_for_training_final" / "Objaverse" / group / f"{uid}.npy",
                            cloud, seed=n)  # fmt: skip
        entries.append({"uid": uid, "category": category, "data_path": f"{OPENSHAPE_PREFIX}/{group}/{uid}.npy"})
    split = folder / "meta_data" / "split" / "lvis.json"
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    return folder
