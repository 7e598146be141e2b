"""ScanObjectNN (h5 release) in its three standard variants (docs/method.md §7).

``h5_files/main_split/`` holds ``obj_bg`` (``training_objectdataset.h5`` /
``test_objectdataset.h5``) and ``pb_t50_rs`` (``..._augmentedrot_scale75.h5``);
``h5_files/main_split_nobg/`` holds ``obj_only``. Keys ``data float32 [n, 2048, 3]``,
``label [n]`` (15 classes), ``mask`` (unused). The default variant is ``obj_only``.

The release is behind its authors' terms-of-use form, so it is never downloaded
automatically: ``pointcalip download scanobjectnn --from-file h5_files.zip``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, NamedTuple, Optional

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
    resolve_variant,
)
from pointcalip.errors import DatasetError
from pointcalip._types import PathLike


SCANOBJECTNN_DIR = "h5_files"
SPLITS = ("train", "test")
SCANOBJECTNN_CLASSES = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table",
    "bed", "pillow", "sink", "sofa", "toilet",
)  # fmt: skip


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

SCANOBJECTNN_ARCHIVE = "h5_files.zip"
SCANOBJECTNN_FORM_URL = "https://hkust-vgd.github.io/scanobjectnn/"

# Clouds per variant in the official ScanObjectNN h5 release (2,309 / 581 objects; the
# PB_T50_RS augmentation has 5 perturbed copies of each).
SCANOBJECTNN_SPLIT_SIZES = {
    "obj_bg": {"train": 2309, "test": 581},
    "obj_only": {"train": 2309, "test": 581},
    "pb_t50_rs": {"train": 11416, "test": 2882},
}

# No mirrors: a link obtained through the form can be given with --mirror URL.
SCANOBJECTNN = ArchiveSpec(SCANOBJECTNN_ARCHIVE, SCANOBJECTNN_DIR, expected=SCANOBJECTNN_SPLIT_SIZES)


def _scanobjectnn_error(root: Path, problem: str) -> DatasetError:
    data_root = root.parent if root.name == SCANOBJECTNN_DIR else root
    base = f"{data_root}/{SCANOBJECTNN_DIR}"
    rows = [f"  {base}/{v.folder}/{v.train_file}, {v.test_file}  ({k})" for k, v in SCANOBJECTNN_VARIANTS.items()]
    return DatasetError(
        f"ScanObjectNN: {problem}\n"
        "Expected layout:\n" + "\n".join(rows) + "\n"
        "ScanObjectNN is released under terms of use: request h5_files.zip through the form at "
        f"{SCANOBJECTNN_FORM_URL}, then run: "
        f"pointcalip download scanobjectnn --root {data_root} --from-file PATH/h5_files.zip"
    )


def is_scanobjectnn_dir(folder: Path) -> bool:
    """Whether ``folder`` looks like ``h5_files/`` (it has ``main_split/`` or ``main_split_nobg/``)."""
    return any((folder / d).is_dir() for d in {v.folder for v in SCANOBJECTNN_VARIANTS.values()})


def find_scanobjectnn_dir(root: PathLike = DEFAULT_ROOT) -> Optional[Path]:
    """The ScanObjectNN ``h5_files`` folder for ``root`` (data root or the folder itself), or None."""
    return find_dataset_dir(root, SCANOBJECTNN_DIR, is_scanobjectnn_dir)


class ScanObjectNN(InMemoryDataset):
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
        split, num_points = check_split(self.name, split), check_num_points(num_points)
        variant = resolve_variant(self.name, variant)
        root = Path(root)
        folder = find_scanobjectnn_dir(root)
        if folder is None:
            where = root / SCANOBJECTNN_DIR if root.name != SCANOBJECTNN_DIR else root
            raise _scanobjectnn_error(root, f"not found (no main_split/ or main_split_nobg/ in {where})")
        spec = SCANOBJECTNN_VARIANTS[variant]
        path = folder / spec.folder / spec.file(split)
        if not path.is_file():
            raise _scanobjectnn_error(folder, f"incomplete folder {folder}: missing {spec.folder}/{path.name} ({variant}, {split})")
        points, labels = load_files([path], num_points, len(SCANOBJECTNN_CLASSES))
        super().__init__(points, labels, SCANOBJECTNN_CLASSES, split, num_points, [path], variant=variant)
        self.root = folder


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
        found[variant] = {s: count_clouds(p, len(SCANOBJECTNN_CLASSES)) for s, p in paths.items()}
    if not found:
        raise _scanobjectnn_error(folder, f"no complete variant (train and test files) in {folder}")
    return found


def validate_scanobjectnn(folder: Path, expected: Optional[Mapping], full: bool = False) -> str:
    """:func:`scan_scanobjectnn`, then each variant's counts against ``expected[variant]``."""
    found = scan_scanobjectnn(folder)
    for variant, counts in found.items():
        want = (expected or {}).get(variant)
        if want and dict(counts) != dict(want):
            raise DatasetError(
                f"not the expected release: {variant} has {counts['train']} train / {counts['test']} test clouds, "
                f"expected {want['train']} / {want['test']}"
            )
    return ", ".join(f"{v} {c['train']}/{c['test']}" for v, c in found.items())


MANUAL = (
    "ScanObjectNN is distributed under terms of use and is not downloaded automatically: "
    f"request h5_files.zip through the form at {SCANOBJECTNN_FORM_URL}, save it as {{archive_path}}, then run: "
    "pointcalip download scanobjectnn --root {root} --from-file {archive_path} "
    "(or pass the link you were given with --mirror URL)"
)


def _build(root: Path, split: str, num_points: int, variant: Optional[str]) -> ScanObjectNN:
    return ScanObjectNN(root, split, num_points, variant)


register_dataset(DatasetInfo(
    name="scanobjectnn", build=_build, folder=SCANOBJECTNN_DIR, classes=SCANOBJECTNN_CLASSES,
    variants=tuple(SCANOBJECTNN_VARIANTS), default_variant=DEFAULT_SCANOBJECTNN_VARIANT,
    is_dataset_dir=is_scanobjectnn_dir, validate=validate_scanobjectnn, archive=SCANOBJECTNN, manual=MANUAL,
    description="ScanObjectNN h5 release (15 classes; variants obj_bg, obj_only, pb_t50_rs)",
))  # fmt: skip
