"""Datasets (SPEC §7): ModelNet40, ModelNet10 (from the ModelNet40 files) and ScanObjectNN.

Every dataset reads the standard h5 releases and yields ``(points, label)`` with ``points``
a ``torch.float32 [num_points, 3]`` tensor (the first ``num_points`` of the 2,048 stored
points, in stored order, as the reference code does) and ``label`` an ``int``. For fast
batched access each dataset also exposes ``.points`` (numpy ``float32 [n, num_points, 3]``)
and ``.labels`` (numpy ``int64 [n]``).

``root`` is lenient: either the data root that *contains* ``modelnet40_ply_hdf5_2048/``
(or ``h5_files/``), or that dataset folder itself. A missing or partial dataset raises
:class:`DatasetError` with the expected layout and the ``pointcalip download`` command.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from pointcalip.errors import ConfigError, DatasetError

PathLike = Union[str, Path]

DEFAULT_ROOT = Path("data")
DEFAULT_NUM_POINTS = 1024
SPLITS = ("train", "test")
DATASET_NAMES = ("modelnet40", "modelnet10", "scanobjectnn")

MODELNET40_DIR = "modelnet40_ply_hdf5_2048"
SCANOBJECTNN_DIR = "h5_files"

MODELNET40_CLASSES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair",
    "cone", "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar",
    "keyboard", "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano",
    "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent",
    "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)  # fmt: skip
MODELNET10_CLASSES = (
    "bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table",
    "toilet",
)  # fmt: skip
SCANOBJECTNN_CLASSES = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table",
    "bed", "pillow", "sink", "sofa", "toilet",
)  # fmt: skip

# ModelNet40 label of each ModelNet10 class, in ModelNet10 label order.
MODELNET10_SOURCE_LABELS = tuple(MODELNET40_CLASSES.index(c) for c in MODELNET10_CLASSES)


class ScanObjectNNVariant(NamedTuple):
    """Where one ScanObjectNN variant lives inside ``h5_files/``."""

    folder: str
    train_file: str
    test_file: str

    def file(self, split: str) -> str:
        """The h5 file name of ``split`` (``"train"`` or ``"test"``)."""
        return self.train_file if split == "train" else self.test_file


SCANOBJECTNN_VARIANTS = {
    "obj_bg": ScanObjectNNVariant("main_split", "training_objectdataset.h5", "test_objectdataset.h5"),
    "obj_only": ScanObjectNNVariant("main_split_nobg", "training_objectdataset.h5", "test_objectdataset.h5"),
    "pb_t50_rs": ScanObjectNNVariant(
        "main_split",
        "training_objectdataset_augmentedrot_scale75.h5",
        "test_objectdataset_augmentedrot_scale75.h5",
    ),
}
DEFAULT_SCANOBJECTNN_VARIANT = "obj_only"

_CLASSES = {
    "modelnet40": MODELNET40_CLASSES,
    "modelnet10": MODELNET10_CLASSES,
    "scanobjectnn": SCANOBJECTNN_CLASSES,
}


# --------------------------------------------------------------------------- choices


def _norm_dataset(name: str) -> str:
    key = str(name).strip().lower()
    if key not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}")
    return key


def _norm_split(split: str) -> str:
    key = str(split).strip().lower()
    if key not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return key


def _norm_variant(variant: Optional[str]) -> str:
    if variant is None:
        return DEFAULT_SCANOBJECTNN_VARIANT
    key = str(variant).strip().lower().replace("-", "_")
    if key not in SCANOBJECTNN_VARIANTS:
        raise ConfigError(
            f"unknown ScanObjectNN variant {variant!r}; valid: {', '.join(SCANOBJECTNN_VARIANTS)}"
        )
    return key


def _check_num_points(num_points: int) -> int:
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise ConfigError(f"num_points must be a positive integer, got {num_points!r}")
    return int(num_points)


def class_names(dataset: str) -> list[str]:
    """Class names of ``dataset`` in label order (``K`` names: 40, 10 or 15)."""
    return list(_CLASSES[_norm_dataset(dataset)])


# --------------------------------------------------------------------------- messages


def _data_root_for_display(root: Path, folder_name: str) -> Path:
    return root.parent if root.name == folder_name else root


def _modelnet_error(root: Path, problem: str, dataset: str = "ModelNet40") -> DatasetError:
    data_root = _data_root_for_display(root, MODELNET40_DIR)
    note = " (ModelNet10 is read from the ModelNet40 files)" if dataset == "ModelNet10" else ""
    return DatasetError(
        f"{dataset}{note}: {problem}\n"
        f"Expected layout:\n"
        f"  {data_root}/{MODELNET40_DIR}/\n"
        f"    ply_data_train0.h5 .. ply_data_train4.h5, ply_data_test0.h5, ply_data_test1.h5\n"
        f"    train_files.txt, test_files.txt, shape_names.txt\n"
        f"Get it with: pointcalip download modelnet40 --root {data_root}"
    )


def _scanobjectnn_error(root: Path, problem: str) -> DatasetError:
    data_root = _data_root_for_display(root, SCANOBJECTNN_DIR)
    base = f"{data_root}/{SCANOBJECTNN_DIR}"
    rows = [f"  {base}/{v.folder}/{v.train_file}, {v.test_file}  ({k})" for k, v in SCANOBJECTNN_VARIANTS.items()]
    return DatasetError(
        f"ScanObjectNN: {problem}\n"
        "Expected layout:\n" + "\n".join(rows) + "\n"
        "ScanObjectNN is released under terms of use: request h5_files.zip through the form at "
        "https://hkust-vgd.github.io/scanobjectnn/, then run: "
        f"pointcalip download scanobjectnn --root {data_root} --from-file PATH/h5_files.zip"
    )


# --------------------------------------------------------------------------- h5 reading


def _read_h5(path: Path, num_points: Optional[int], num_classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Read one h5 file.

    Returns:
        points: ``float32 [n, num_points, 3]`` (``[n, 0, 3]`` when ``num_points`` is None,
            i.e. only shapes and labels are checked), labels: ``int64 [n]``, and the number of
            points stored per cloud.
    """
    try:
        with _open_h5(path) as f:
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
    return points, _check_labels(path, raw, len(points), num_classes), stored


def _open_h5(path: Path):
    """Open ``path`` read-only with h5py (imported lazily: ``import pointcalip.data`` stays light)."""
    import h5py

    return h5py.File(path, "r")


def _check_labels(path: Path, raw: np.ndarray, n: int, num_classes: int) -> np.ndarray:
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


def _load_files(files: Sequence[Path], num_points: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate h5 shards in order. Returns ``float32 [n, num_points, 3]``, ``int64 [n]``."""
    pts, labs = [], []
    for path in files:
        p, lab, _ = _read_h5(path, num_points, num_classes)
        pts.append(p)
        labs.append(lab)
    points = np.ascontiguousarray(np.concatenate(pts, axis=0), dtype=np.float32)
    return points, np.concatenate(labs, axis=0).astype(np.int64)


# --------------------------------------------------------------------------- datasets


class PointCloudDataset(Dataset):
    """In-memory dataset of ``n`` clouds: ``.points float32 [n, num_points, 3]``, ``.labels int64 [n]``.

    ``dataset[i]`` is ``(torch.float32 [num_points, 3], int)``.
    """

    name = "pointclouds"

    def __init__(
        self,
        points: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str],
        split: str,
        num_points: int,
        files: Sequence[Path] = (),
        variant: Optional[str] = None,
    ) -> None:
        self.points = points
        self.labels = labels
        self.classes = list(classes)
        self.split = split
        self.num_points = num_points
        self.variant = variant
        self.files = [Path(f) for f in files]
        self._file_meta = [[f.name, f.stat().st_size if f.exists() else -1] for f in self.files]
        self._fingerprint: Optional[str] = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.points[index].copy()), int(self.labels[index])

    def __repr__(self) -> str:
        extra = f", variant={self.variant!r}" if self.variant else ""
        return f"{type(self).__name__}(split={self.split!r}, n={len(self)}, num_points={self.num_points}{extra})"

    def fingerprint(self) -> str:
        """A short stable hash (16 hex chars) of exactly the data used.

        SHA-256 over the dataset name, split, variant, ``num_points``, class names, the source
        file names and sizes, and the bytes of ``.points`` and ``.labels``; any changed sample or
        label changes it, a moved copy of the same files does not.
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


def _shard_index(path: Path) -> tuple[int, str]:
    m = re.search(r"(\d+)\.h5$", path.name)
    return (int(m.group(1)) if m else -1, path.name)


def find_modelnet40_dir(root: PathLike = DEFAULT_ROOT) -> Optional[Path]:
    """The ModelNet40 folder for ``root`` (data root or the folder itself), or None."""
    root = Path(root)
    markers = ("train_files.txt", "test_files.txt", "shape_names.txt")
    for cand in (root / MODELNET40_DIR, root):
        if cand.is_dir() and (any((cand / m).is_file() for m in markers) or any(cand.glob("ply_data_*.h5"))):
            return cand
    return None


def _modelnet40_split_files(folder: Path, split: str, dataset: str) -> list[Path]:
    """h5 shards of ``split`` in ``<split>_files.txt`` order, each resolved by file name in ``folder``."""
    listing = folder / f"{split}_files.txt"
    if listing.is_file():
        lines = [ln.strip() for ln in listing.read_text(encoding="utf-8", errors="replace").splitlines()]
        names = [ln.replace("\\", "/").rsplit("/", 1)[-1] for ln in lines if ln]
        if not names:
            raise _modelnet_error(folder, f"{listing} lists no h5 files", dataset)
        files = [folder / n for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise _modelnet_error(
                folder, f"incomplete folder {folder}: missing {', '.join(missing)} (listed in {listing.name})", dataset
            )
        return files
    files = sorted(folder.glob(f"ply_data_{split}*.h5"), key=_shard_index)
    if not files:
        raise _modelnet_error(folder, f"incomplete folder {folder}: no {listing.name} and no ply_data_{split}*.h5", dataset)
    return files


def _check_shape_names(folder: Path, dataset: str) -> None:
    path = folder / "shape_names.txt"
    if not path.is_file():
        return  # optional: the label order is the standard one
    names = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if tuple(names) != MODELNET40_CLASSES:
        raise _modelnet_error(
            folder, f"{path} does not list the 40 standard ModelNet40 classes in label order", dataset
        )


def _locate_modelnet40(root: PathLike, dataset: str) -> Path:
    root = Path(root)
    folder = find_modelnet40_dir(root)
    if folder is None:
        where = root / MODELNET40_DIR if root.name != MODELNET40_DIR else root
        raise _modelnet_error(root, f"not found (no dataset files in {where})", dataset)
    _check_shape_names(folder, dataset)
    return folder


def _read_modelnet40(root: PathLike, split: str, num_points: int, dataset: str):
    """``(folder, files, points [n, num_points, 3], labels [n])`` of a ModelNet40 split."""
    folder = _locate_modelnet40(root, dataset)
    files = _modelnet40_split_files(folder, split, dataset)
    points, labels = _load_files(files, num_points, len(MODELNET40_CLASSES))
    return folder, files, points, labels


class ModelNet40(PointCloudDataset):
    """ModelNet40 (PointNet h5 release): 9,843 train / 2,468 test clouds, ``K = 40``.

    Items are ``(torch.float32 [num_points, 3], int)``; ``.points`` is ``float32 [n, num_points, 3]``.
    """

    name = "modelnet40"

    def __init__(self, root: PathLike = DEFAULT_ROOT, split: str = "test", num_points: int = DEFAULT_NUM_POINTS) -> None:
        split, num_points = _norm_split(split), _check_num_points(num_points)
        folder, files, points, labels = _read_modelnet40(root, split, num_points, "ModelNet40")
        super().__init__(points, labels, MODELNET40_CLASSES, split, num_points, files)
        self.root = folder


class ModelNet10(PointCloudDataset):
    """ModelNet10: the 10 ModelNet10 classes taken from the ModelNet40 files, relabelled 0-9.

    Samples keep their stored order; ``K = 10``; ``.points`` is ``float32 [n, num_points, 3]``.
    """

    name = "modelnet10"

    def __init__(self, root: PathLike = DEFAULT_ROOT, split: str = "test", num_points: int = DEFAULT_NUM_POINTS) -> None:
        split, num_points = _norm_split(split), _check_num_points(num_points)
        folder, files, points, labels40 = _read_modelnet40(root, split, num_points, "ModelNet10")
        remap = np.full(len(MODELNET40_CLASSES), -1, dtype=np.int64)
        remap[list(MODELNET10_SOURCE_LABELS)] = np.arange(len(MODELNET10_CLASSES))
        keep = remap[labels40] >= 0
        points = np.ascontiguousarray(points[keep])
        super().__init__(points, remap[labels40[keep]], MODELNET10_CLASSES, split, num_points, files)
        self.root = folder


def find_scanobjectnn_dir(root: PathLike = DEFAULT_ROOT) -> Optional[Path]:
    """The ScanObjectNN ``h5_files`` folder for ``root`` (data root or the folder itself), or None."""
    root = Path(root)
    folders = {v.folder for v in SCANOBJECTNN_VARIANTS.values()}
    for cand in (root / SCANOBJECTNN_DIR, root):
        if cand.is_dir() and any((cand / d).is_dir() for d in folders):
            return cand
    return None


class ScanObjectNN(PointCloudDataset):
    """ScanObjectNN (``obj_bg``, ``obj_only`` or ``pb_t50_rs``), ``K = 15``.

    Items are ``(torch.float32 [num_points, 3], int)``; ``.points`` is ``float32 [n, num_points, 3]``.
    """

    name = "scanobjectnn"

    def __init__(
        self,
        root: PathLike = DEFAULT_ROOT,
        split: str = "test",
        num_points: int = DEFAULT_NUM_POINTS,
        variant: Optional[str] = None,
    ) -> None:
        split, num_points, variant = _norm_split(split), _check_num_points(num_points), _norm_variant(variant)
        root = Path(root)
        folder = find_scanobjectnn_dir(root)
        if folder is None:
            where = root / SCANOBJECTNN_DIR if root.name != SCANOBJECTNN_DIR else root
            raise _scanobjectnn_error(root, f"not found (no main_split/ or main_split_nobg/ in {where})")
        spec = SCANOBJECTNN_VARIANTS[variant]
        path = folder / spec.folder / spec.file(split)
        if not path.is_file():
            raise _scanobjectnn_error(folder, f"incomplete folder {folder}: missing {spec.folder}/{path.name} ({variant}, {split})")
        points, labels = _load_files([path], num_points, len(SCANOBJECTNN_CLASSES))
        super().__init__(points, labels, SCANOBJECTNN_CLASSES, split, num_points, [path], variant=variant)
        self.root = folder


def build_dataset(
    name: str,
    root: PathLike = DEFAULT_ROOT,
    split: str = "test",
    num_points: int = DEFAULT_NUM_POINTS,
    variant: Optional[str] = None,
) -> PointCloudDataset:
    """Build ``name`` (one of :data:`DATASET_NAMES`) for ``split`` with ``num_points`` points per cloud.

    ``variant`` is for ScanObjectNN only (one of :data:`SCANOBJECTNN_VARIANTS`, default
    ``obj_only``). Returns a dataset of ``(torch.float32 [num_points, 3], int)`` items.
    """
    key = _norm_dataset(name)
    if key == "scanobjectnn":
        return ScanObjectNN(root, split, num_points, variant)
    if variant is not None:
        raise ConfigError(f"variant {variant!r} applies to scanobjectnn only, not {key}")
    cls = ModelNet40 if key == "modelnet40" else ModelNet10
    return cls(root, split, num_points)


# --------------------------------------------------------------------------- validation


def scan_modelnet40(folder: PathLike) -> dict[str, int]:
    """Check a ModelNet40 folder structurally without loading the clouds.

    Checks both file lists, every shard's keys, shapes (``data [n, P, 3]``, ``label [n]``
    or ``[n, 1]``), label range and ``shape_names.txt``. Returns ``{"train": n, "test": n}``.
    Raises :class:`DatasetError` naming the problem.
    """
    folder = Path(folder)
    if not (folder / "shape_names.txt").is_file():
        raise _modelnet_error(folder, f"incomplete folder {folder}: missing shape_names.txt")
    _check_shape_names(folder, "ModelNet40")
    counts = {}
    for split in SPLITS:
        if not (folder / f"{split}_files.txt").is_file():
            raise _modelnet_error(folder, f"incomplete folder {folder}: missing {split}_files.txt")
        files = _modelnet40_split_files(folder, split, "ModelNet40")
        counts[split] = sum(len(_read_h5(f, None, len(MODELNET40_CLASSES))[1]) for f in files)
    return counts


def scan_scanobjectnn(folder: PathLike) -> dict[str, dict[str, int]]:
    """Check a ScanObjectNN ``h5_files`` folder structurally without loading the clouds.

    Returns ``{variant: {"train": n, "test": n}}`` for every variant whose two files are
    present (at least one is required). Raises :class:`DatasetError` naming the problem.
    """
    folder = Path(folder)
    found: dict[str, dict[str, int]] = {}
    for variant, spec in SCANOBJECTNN_VARIANTS.items():
        paths = {s: folder / spec.folder / spec.file(s) for s in SPLITS}
        if not all(p.is_file() for p in paths.values()):
            continue
        found[variant] = {s: len(_read_h5(p, None, len(SCANOBJECTNN_CLASSES))[1]) for s, p in paths.items()}
    if not found:
        raise _scanobjectnn_error(folder, f"no complete variant (train and test files) in {folder}")
    return found
