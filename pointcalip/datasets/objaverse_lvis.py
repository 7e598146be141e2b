"""Objaverse-LVIS in OpenShape's processed release (docs/method.md §7).

Layout (what unpacking OpenShape's ``meta_data.zip`` and ``Objaverse/000-*.tar.gz`` from the
Hugging Face dataset ``OpenShape/openshape-training-data`` into one folder gives)::

    <root>/objaverse_lvis/                      (that folder, or a link to it)
        meta_data/split/lvis.json               (also accepted: lvis.json, split/lvis.json)
        objaverse-processed/merged_for_training_final/Objaverse/000-xxx/<uid>.npy

``lvis.json`` is a list of objects ``{"uid", "category", "data_path", ...}``; ``data_path``
is an absolute path on the authors' machine
(``/mnt/data/objaverse-processed/merged_for_training_final/Objaverse/000-xxx/<uid>.npy``).
It is resolved inside the dataset folder from its ``objaverse-processed/`` part; a relative
path is taken relative to the folder; any other absolute path is used as it is.

Each ``.npy`` is an ``np.save``-d dict with ``xyz`` (``(10000, 3)``, y-up, in [-1, 1]),
``rgb`` and features; only ``xyz`` is used. It is read with an allow-list unpickler
(:mod:`pointcalip.datasets.npy_safe`). A plain ``(N, >=3)`` array or a structured array
with an ``xyz`` field is accepted too.

Classes: the distinct ``category`` values sorted by code point (Python ``sorted``, the
same order as OpenShape's ``sorted(np.unique(...))``); 1,156 in the public split. There is
one split, ``test`` (the whole LVIS set is the zero-shot benchmark).

Per object, read lazily in :meth:`ObjaverseLVIS.points_of`: validate (finite, not
degenerate), centre and scale into the unit ball, put in canonical order and reduce to
``num_points`` by farthest point sampling (``pointcalip.clouds.prepare_cloud``). An object
with fewer points than ``num_points`` is padded by repeating its points cyclically
(``p[i mod N]``): repeated points fall on pixels already drawn, so a depth map is the
one of the unpadded cloud.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path, PurePosixPath
from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np

from pointcalip.datasets.base import PointCloudDataset, as_indices, hash16
from pointcalip.datasets.npy_safe import load_npy
from pointcalip.datasets.registry import (
    DEFAULT_NUM_POINTS,
    DEFAULT_ROOT,
    DatasetInfo,
    check_num_points,
    check_split,
    find_dataset_dir,
    register_dataset,
)
from pointcalip.errors import DatasetError, PointcalipError
from pointcalip._types import PathLike

LOG = logging.getLogger("pointcalip")

OBJAVERSE_LVIS_DIR = "objaverse_lvis"
SPLIT_FILES = ("meta_data/split/lvis.json", "lvis.json", "split/lvis.json")
DATA_MARKER = "objaverse-processed"
HF_REPO = "OpenShape/openshape-training-data"
NUM_PARTS = 160  # Objaverse/000-000.tar.gz .. 000-159.tar.gz
PUBLIC_NUM_CLASSES = 1156
SAMPLE_CHECKS = 32  # files fully read by a default (non --check-all) validation


class LVISEntry(NamedTuple):
    """One object of the split file."""

    uid: str
    category: str
    data_path: str


# --------------------------------------------------------------------------- split file


def find_split_file(folder: Path) -> Optional[Path]:
    """The split JSON inside the dataset folder ``folder`` (first of :data:`SPLIT_FILES`), or None."""
    for rel in SPLIT_FILES:
        if (folder / rel).is_file():
            return folder / rel
    return None


def is_objaverse_lvis_dir(folder: Path) -> bool:
    """Whether ``folder`` holds an OpenShape LVIS split file."""
    return folder.is_dir() and find_split_file(folder) is not None


def find_objaverse_lvis_dir(root: PathLike = DEFAULT_ROOT) -> Optional[Path]:
    """The dataset folder for ``root`` (``root/objaverse_lvis`` or ``root`` itself), or None."""
    return find_dataset_dir(root, OBJAVERSE_LVIS_DIR, is_objaverse_lvis_dir)


def _missing_error(root: Path, problem: str) -> DatasetError:
    data_root = root.parent if root.name == OBJAVERSE_LVIS_DIR else root
    return DatasetError(
        f"Objaverse-LVIS: {problem}\n"
        f"Expected layout:\n"
        f"  {data_root}/{OBJAVERSE_LVIS_DIR}/meta_data/split/lvis.json\n"
        f"  {data_root}/{OBJAVERSE_LVIS_DIR}/objaverse-processed/merged_for_training_final/Objaverse/000-xxx/<uid>.npy\n"
        f"See: pointcalip download objaverse_lvis --root {data_root}  (prints what to fetch), then "
        f"pointcalip download objaverse_lvis --root {data_root} --from-dir DIR"
    )


def read_split(path: Path) -> tuple[bytes, list[LVISEntry]]:
    """The raw bytes and the entries of the split file ``path``.

    Raises :class:`DatasetError` for invalid JSON, a non-list, or an entry without
    ``category`` / ``data_path`` (``uid`` defaults to the file name's stem).
    """
    raw = path.read_bytes()
    try:
        items = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(items, list) or not items:
        raise DatasetError(f"{path}: expected a non-empty JSON list of objects with 'category' and 'data_path'")
    entries = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("category"), str) or not isinstance(item.get("data_path"), str):
            raise DatasetError(f"{path}: entry {i} has no string 'category' and 'data_path': {str(item)[:80]}")
        uid = item.get("uid", item.get("id"))
        uid = str(uid) if uid is not None else PurePosixPath(item["data_path"].replace("\\", "/")).stem
        entries.append(LVISEntry(uid, item["category"], item["data_path"]))
    return raw, entries


def lvis_classes(entries: Sequence[LVISEntry]) -> list[str]:
    """Distinct categories sorted by code point (= OpenShape's ``sorted(np.unique(categories))``)."""
    return sorted({e.category for e in entries})


def resolve_data_path(folder: Path, data_path: str) -> Path:
    """Where the object ``data_path`` of the split file lives for the dataset folder ``folder``.

    ``.../objaverse-processed/<rest>`` -> ``folder/objaverse-processed/<rest>``; a relative
    path -> ``folder/<path>``; another absolute path is kept.
    """
    posix = data_path.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if DATA_MARKER in parts:
        return folder.joinpath(*parts[parts.index(DATA_MARKER):])
    if not PurePosixPath(posix).is_absolute():
        return folder.joinpath(*parts)
    return Path(data_path)


def _locate(root: Path) -> tuple[Path, Path]:
    folder = find_objaverse_lvis_dir(root)
    if folder is None:
        where = root / OBJAVERSE_LVIS_DIR if root.name != OBJAVERSE_LVIS_DIR else root
        raise _missing_error(root, f"not found (no {' or '.join(SPLIT_FILES)} in {where})")
    return folder, find_split_file(folder)


def _group_of(path: Path) -> str:
    return path.parent.name


def _stat_all(paths: Sequence[Path], folder: Path) -> list[tuple[int, int]]:
    """``(size, mtime seconds)`` of every file; a :class:`DatasetError` lists the missing ones."""
    stats, missing = [], []
    for p in paths:
        try:
            st = p.stat()
            stats.append((int(st.st_size), int(st.st_mtime)))
        except OSError:
            missing.append(p)
            stats.append((-1, -1))
    if missing:
        groups = sorted({_group_of(p) for p in missing})
        shown = ", ".join(str(p) for p in missing[:3])
        raise _missing_error(
            folder,
            f"{len(missing)} of {len(paths)} object files listed in the split are missing (e.g. {shown}); "
            f"their parts: {', '.join(groups[:10])}{' ...' if len(groups) > 10 else ''} "
            f"(Objaverse/<part>.tar.gz in {HF_REPO})",
        )
    return stats


# --------------------------------------------------------------------------- reading one object


def read_object_xyz(path: Path) -> np.ndarray:
    """The raw ``xyz`` of one object file as ``float32 (N, 3)`` (no normalisation)."""
    data = load_npy(path)
    if isinstance(data, dict):
        if "xyz" not in data:
            raise DatasetError(f"{path}: the stored dict has no 'xyz' (keys: {', '.join(map(str, list(data)[:8]))})")
        xyz = data["xyz"]
    elif isinstance(data, np.ndarray) and data.dtype.names and "xyz" in data.dtype.names:
        xyz = data["xyz"]
    else:
        xyz = data
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] < 3 or not np.issubdtype(xyz.dtype, np.number):
        raise DatasetError(f"{path}: 'xyz' has shape {xyz.shape} and dtype {xyz.dtype}, expected numbers (N, 3)")
    return np.ascontiguousarray(xyz[:, :3], dtype=np.float32)


def prepare_object(xyz: np.ndarray, num_points: int, source: str) -> np.ndarray:
    """``xyz (N, 3)`` -> ``float32 (num_points, 3)``: validate, unit ball, FPS, cyclic padding when ``N < num_points``."""
    from pointcalip.clouds import prepare_cloud

    cloud = prepare_cloud(xyz, num_points, True, source)
    if len(cloud) < num_points:
        cloud = cloud[np.arange(num_points) % len(cloud)]
    return np.ascontiguousarray(cloud, dtype=np.float32)


# --------------------------------------------------------------------------- dataset


class ObjaverseLVIS(PointCloudDataset):
    """Objaverse-LVIS (OpenShape release), read lazily one object file at a time.

    ``labels`` is ``int64 [n]``, ``classes`` the ``K`` sorted categories (1,156 for the public
    split). :meth:`points_of` reads and prepares the requested objects only; nothing is
    cached in memory. Items are ``(torch.float32 [num_points, 3], int)``.
    """

    name = "objaverse_lvis"

    def __init__(self, root: PathLike = DEFAULT_ROOT, split: str = "test", num_points: int = DEFAULT_NUM_POINTS) -> None:
        self.split, self.num_points = check_split(self.name, split), check_num_points(num_points)
        self.variant = None
        self.root, self.split_file = _locate(Path(root))
        self._split_bytes, entries = read_split(self.split_file)
        self.classes = lvis_classes(entries)
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = np.array([index[e.category] for e in entries], dtype=np.int64)
        self.uids = [e.uid for e in entries]
        self.paths = [resolve_data_path(self.root, e.data_path) for e in entries]
        self._stats = _stat_all(self.paths, self.root)
        self._fingerprint: Optional[str] = None
        if len(self.classes) != PUBLIC_NUM_CLASSES:
            LOG.info("objaverse_lvis: %d categories in %s (the public split has %d)",
                     len(self.classes), self.split_file, PUBLIC_NUM_CLASSES)  # fmt: skip

    def read_object(self, index: int) -> np.ndarray:
        """Object ``index`` prepared as ``float32 (num_points, 3)``."""
        path = self.paths[index]
        return prepare_object(read_object_xyz(path), self.num_points, str(path))

    def points_of(self, indices: np.ndarray) -> np.ndarray:
        """Objects ``indices`` (``int (M,)``) read from disk now, as ``float32 (M, num_points, 3)``."""
        idx = as_indices(indices, len(self))
        out = np.empty((len(idx), self.num_points, 3), dtype=np.float32)
        for row, i in enumerate(idx):
            out[row] = self.read_object(int(i))
        return out

    def fingerprint(self) -> str:
        """SHA-256 (16 hex) of the split file's bytes and each object's relative path, size and mtime.

        Cheap (no point is read): rewriting an object file changes its size or modification
        time and so the fingerprint; a copy that keeps modification times (``cp -a``,
        ``rsync -a``) keeps it.
        """
        if self._fingerprint is None:
            files = []
            for p, (size, mtime) in zip(self.paths, self._stats):
                try:
                    rel = p.relative_to(self.root).as_posix()
                except ValueError:
                    rel = p.as_posix()
                files.append([rel, size, mtime])
            self._fingerprint = hash16(
                {"dataset": self.name, "split": self.split, "num_points": self.num_points,
                 "prepare": "unit-ball+fps+cyclic-pad v1"},
                hashlib.sha256(self._split_bytes).hexdigest(), files,
            )  # fmt: skip
        return self._fingerprint


# --------------------------------------------------------------------------- validation


def _progress(iterable, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="file", disable=None)


def validate_objaverse_lvis(folder: Path, expected: Optional[Mapping] = None, full: bool = False) -> str:
    """Check a local copy: the split file, every listed object present, and objects readable.

    Every object file must exist; ``full`` reads all of them (with a progress bar), otherwise
    :data:`SAMPLE_CHECKS` evenly spaced ones are read. A read checks the safe unpickling,
    ``xyz`` of shape ``(N, 3)``, finite and not degenerate. Returns a one-line summary;
    raises :class:`DatasetError` naming the first problem.
    """
    folder = Path(folder)
    split_file = find_split_file(folder)
    if split_file is None:
        raise _missing_error(folder, f"no {' or '.join(SPLIT_FILES)} in {folder}")
    _, entries = read_split(split_file)
    paths = [resolve_data_path(folder, e.data_path) for e in entries]
    _stat_all(paths, folder)
    n = len(paths)
    picks = range(n) if full else sorted(set(np.linspace(0, n - 1, min(n, SAMPLE_CHECKS)).round().astype(int).tolist()))
    for i in _progress(picks, len(picks), "checking objects"):
        try:
            prepare_object(read_object_xyz(paths[i]), 1, str(paths[i]))
        except PointcalipError as exc:
            raise DatasetError(str(exc).splitlines()[0]) from exc
    classes = lvis_classes(entries)
    note = "" if len(classes) == PUBLIC_NUM_CLASSES else f" (the public split has {PUBLIC_NUM_CLASSES})"
    want = (expected or {}).get("objects")
    if want and want != n:
        raise DatasetError(f"{split_file} lists {n} objects, expected {want}")
    return f"{n} objects, {len(classes)} categories{note}; {len(picks)} files read"


def read_classes(root: Path) -> list[str]:
    """The class list of the split file under the data root ``root``."""
    folder, split_file = _locate(Path(root))
    return lvis_classes(read_split(split_file)[1])


MANUAL = (
    "Objaverse-LVIS (OpenShape's processed release, about 185 GB for all parts) is not downloaded automatically. "
    f"From the Hugging Face dataset {HF_REPO} fetch meta_data.zip and Objaverse/000-000.tar.gz .. "
    f"Objaverse/000-{NUM_PARTS - 1:03d}.tar.gz, e.g. huggingface-cli download {HF_REPO} --repo-type dataset "
    "--include meta_data.zip 'Objaverse/*' --local-dir DIR; unpack them all inside DIR "
    "(cd DIR && unzip meta_data.zip && for f in Objaverse/*.tar.gz; do tar -xzf $f; done) so that "
    "DIR/meta_data/split/lvis.json and DIR/objaverse-processed/merged_for_training_final/Objaverse/000-xxx/<uid>.npy exist; "
    "then run: pointcalip download objaverse_lvis --root {root} --from-dir DIR "
    "(it checks the copy and links it as {target}; add --check-all to read every object)"
)


def _build(root: Path, split: str, num_points: int, variant: Optional[str]) -> ObjaverseLVIS:
    return ObjaverseLVIS(root, split, num_points)


register_dataset(DatasetInfo(
    name="objaverse_lvis", build=_build, folder=OBJAVERSE_LVIS_DIR, read_classes=read_classes, splits=("test",),
    is_dataset_dir=is_objaverse_lvis_dir, validate=validate_objaverse_lvis, manual=MANUAL, link_local_copy=True,
    description="Objaverse-LVIS, OpenShape's processed release (1,156 categories, read lazily)",
))  # fmt: skip
