"""ModelNet40 and ModelNet10 from the PointNet h5 release (docs/method.md §7).

``modelnet40_ply_hdf5_2048/`` holds ``ply_data_train0..4.h5``, ``ply_data_test0..1.h5``,
``train_files.txt`` / ``test_files.txt`` (one h5 path per line, relative to the original
authors' machine: each is resolved by its file name inside the folder) and
``shape_names.txt`` (the 40 names in label order). 9,843 train / 2,468 test clouds of
``[2048, 3]``; items are the first ``num_points`` stored points, in stored order.

ModelNet10 has no files of its own: its 10 classes are taken from the ModelNet40 files and
relabelled 0-9 in :data:`MODELNET10_CLASSES` order, samples in stored order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from pointcalip.datasets.base import InMemoryDataset
from pointcalip.datasets.fetch import ArchiveSpec
from pointcalip.datasets.h5 import count_clouds, load_files
from pointcalip.datasets.registry import (
    DEFAULT_NUM_POINTS,
    DEFAULT_ROOT,
    DatasetInfo,
    check_num_points,
    check_split,
    find_dataset_dir,
    register_dataset,
)
from pointcalip.errors import DatasetError
from pointcalip._types import PathLike

MODELNET40_DIR = "modelnet40_ply_hdf5_2048"
SPLITS = ("train", "test")

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

# ModelNet40 label of each ModelNet10 class, in ModelNet10 label order.
MODELNET10_SOURCE_LABELS = tuple(MODELNET40_CLASSES.index(c) for c in MODELNET10_CLASSES)

MODELNET40_ARCHIVE = "modelnet40_ply_hdf5_2048.zip"

# Mirrors of the PointNet release (the Stanford original is dead). The GitHub release is
# the one pointMLP's loader uses; its maintainer notes it is a copy of the Hugging Face
# file from Msun/modelnet40 (uploaded 2023-08-21). zhangtao-whu's dataset repo holds a
# second copy under pcm/.
MODELNET40_MIRRORS = (
    "https://github.com/ma-xu/pointMLP-pytorch/releases/download/Modenet40_dataset/modelnet40_ply_hdf5_2048.zip",
    "https://huggingface.co/datasets/Msun/modelnet40/resolve/main/modelnet40_ply_hdf5_2048.zip",
    "https://huggingface.co/datasets/zhangtao-whu/point_cloud_datasets/resolve/main/pcm/modelnet40_ply_hdf5_2048.zip",
)

# No trustworthy SHA-256 or exact byte size of modelnet40_ply_hdf5_2048.zip is published
# (the Hugging Face pages only show "435 MB"), so none is pinned here; the archive is verified
# by its zip CRCs and then structurally: the seven h5 shards listed in train_files.txt /
# test_files.txt, 40 classes in shape_names.txt, 9,843 train and 2,468 test clouds of
# [2048, 3] with labels 0..39. Users can pin a hash with --sha256.
MODELNET40_SPLIT_SIZES = {"train": 9843, "test": 2468}

# MD5s of the extracted shards as several third-party loaders (torchvision-style ModelNet40
# classes) record them for the original Stanford archive. Not authoritative, so a mismatch
# only prints a note; it never fails the install.
MODELNET40_REFERENCE_MD5 = {
    "ply_data_train0.h5": "3176385ffc31a7b6b5af22191fd920d1",
    "ply_data_train1.h5": "e3f613fb500559403b34925112754dc4",
    "ply_data_train2.h5": "0c56e233a090ff87c3049d4ce08e7d8b",
    "ply_data_train3.h5": "9d2af465adfa33a3285c369f3ca66c45",
    "ply_data_train4.h5": "dff38de489b2c41bfaeded86c2208984",
    "ply_data_test0.h5": "e9732e6d83b09e79e9a7617df058adee",
    "ply_data_test1.h5": "aba4b12a67c34391cc3c015a6f08ed4b",
}

MODELNET40 = ArchiveSpec(
    MODELNET40_ARCHIVE, MODELNET40_DIR, MODELNET40_MIRRORS,
    expected=MODELNET40_SPLIT_SIZES, reference_md5=MODELNET40_REFERENCE_MD5,
)  # fmt: skip


# --------------------------------------------------------------------------- messages


def _modelnet_error(root: Path, problem: str, dataset: str = "ModelNet40") -> DatasetError:
    data_root = root.parent if root.name == MODELNET40_DIR else root
    note = " (ModelNet10 is read from the ModelNet40 files)" if dataset == "ModelNet10" else ""
    return DatasetError(
        f"{dataset}{note}: {problem}\n"
        f"Expected layout:\n"
        f"  {data_root}/{MODELNET40_DIR}/\n"
        f"    ply_data_train0.h5 .. ply_data_train4.h5, ply_data_test0.h5, ply_data_test1.h5\n"
        f"    train_files.txt, test_files.txt, shape_names.txt\n"
        f"Get it with: pointcalip download modelnet40 --root {data_root}"
    )


# --------------------------------------------------------------------------- locating


def _shard_index(path: Path) -> tuple[int, str]:
    m = re.search(r"(\d+)\.h5$", path.name)
    return (int(m.group(1)) if m else -1, path.name)


def is_modelnet40_dir(folder: Path) -> bool:
    """Whether ``folder`` looks like ``modelnet40_ply_hdf5_2048/`` (a file list or shard in it)."""
    markers = ("train_files.txt", "test_files.txt", "shape_names.txt")
    return folder.is_dir() and (any((folder / m).is_file() for m in markers) or any(folder.glob("ply_data_*.h5")))


def find_modelnet40_dir(root: PathLike = DEFAULT_ROOT) -> Optional[Path]:
    """The ModelNet40 folder for ``root`` (data root or the folder itself), or None."""
    return find_dataset_dir(root, MODELNET40_DIR, is_modelnet40_dir)


def _split_files(folder: Path, split: str, dataset: str) -> list[Path]:
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


def _locate(root: PathLike, dataset: str) -> Path:
    root = Path(root)
    folder = find_modelnet40_dir(root)
    if folder is None:
        where = root / MODELNET40_DIR if root.name != MODELNET40_DIR else root
        raise _modelnet_error(root, f"not found (no dataset files in {where})", dataset)
    _check_shape_names(folder, dataset)
    return folder


def _read_split(root: PathLike, split: str, num_points: int, dataset: str):
    """``(folder, files, points [n, num_points, 3], labels [n])`` of a ModelNet40 split."""
    folder = _locate(root, dataset)
    files = _split_files(folder, split, dataset)
    points, labels = load_files(files, num_points, len(MODELNET40_CLASSES))
    return folder, files, points, labels


# --------------------------------------------------------------------------- datasets


class ModelNet40(InMemoryDataset):
    """ModelNet40 (PointNet h5 release): 9,843 train / 2,468 test clouds, ``K = 40``.

    Items are ``(torch.float32 [num_points, 3], int)``; ``.points`` is ``float32 [n, num_points, 3]``.
    """

    name = "modelnet40"

    def __init__(self, root: PathLike = DEFAULT_ROOT, split: str = "test", num_points: int = DEFAULT_NUM_POINTS) -> None:
        split, num_points = check_split(self.name, split), check_num_points(num_points)
        folder, files, points, labels = _read_split(root, split, num_points, "ModelNet40")
        super().__init__(points, labels, MODELNET40_CLASSES, split, num_points, files)
        self.root = folder


class ModelNet10(InMemoryDataset):
    """ModelNet10: the 10 ModelNet10 classes taken from the ModelNet40 files, relabelled 0-9.

    Samples keep their stored order; ``K = 10``; ``.points`` is ``float32 [n, num_points, 3]``.
    """

    name = "modelnet10"

    def __init__(self, root: PathLike = DEFAULT_ROOT, split: str = "test", num_points: int = DEFAULT_NUM_POINTS) -> None:
        split, num_points = check_split(self.name, split), check_num_points(num_points)
        folder, files, points, labels40 = _read_split(root, split, num_points, "ModelNet10")
        remap = np.full(len(MODELNET40_CLASSES), -1, dtype=np.int64)
        remap[list(MODELNET10_SOURCE_LABELS)] = np.arange(len(MODELNET10_CLASSES))
        keep = remap[labels40] >= 0
        points = np.ascontiguousarray(points[keep])
        super().__init__(points, remap[labels40[keep]], MODELNET10_CLASSES, split, num_points, files)
        self.root = folder


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
        files = _split_files(folder, split, "ModelNet40")
        counts[split] = sum(count_clouds(f, len(MODELNET40_CLASSES)) for f in files)
    return counts


def validate_modelnet40(folder: Path, expected: Optional[Mapping], full: bool = False) -> str:
    """:func:`scan_modelnet40`, then the counts against ``expected`` (``{"train": n, "test": n}``)."""
    found = scan_modelnet40(folder)
    if expected and dict(found) != {k: expected[k] for k in found}:
        raise DatasetError(
            f"not the expected release: {found['train']} train / {found['test']} test clouds, "
            f"expected {expected['train']} / {expected['test']}"
        )
    return f"{found['train']} train / {found['test']} test clouds"


MANUAL = (
    "get modelnet40_ply_hdf5_2048.zip by hand from {mirror} (more mirrors in data/README.md), "
    "save it as {archive_path}, then run: pointcalip download modelnet40 --root {root} --from-file {archive_path} "
    "(or unzip it yourself so that {target}/ exists)"
)


def _build_modelnet40(root: Path, split: str, num_points: int, variant: Optional[str]) -> ModelNet40:
    return ModelNet40(root, split, num_points)


def _build_modelnet10(root: Path, split: str, num_points: int, variant: Optional[str]) -> ModelNet10:
    return ModelNet10(root, split, num_points)


register_dataset(DatasetInfo(
    name="modelnet40", build=_build_modelnet40, folder=MODELNET40_DIR, classes=MODELNET40_CLASSES,
    is_dataset_dir=lambda d: (d / "train_files.txt").is_file() or (d / "shape_names.txt").is_file(),
    validate=validate_modelnet40, archive=MODELNET40, manual=MANUAL,
    description="ModelNet40 (PointNet h5 release, 40 classes)",
))  # fmt: skip
register_dataset(DatasetInfo(
    name="modelnet10", build=_build_modelnet10, folder=MODELNET40_DIR, classes=MODELNET10_CLASSES,
    files_of="modelnet40", description="ModelNet10 (10 classes read from the ModelNet40 files)",
))  # fmt: skip

__all__ = [
    "MODELNET10_CLASSES", "MODELNET40_CLASSES", "MODELNET40_DIR", "MODELNET40", "ModelNet10", "ModelNet40",
    "find_modelnet40_dir", "scan_modelnet40",
]  # fmt: skip
