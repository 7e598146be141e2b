"""Named datasets: ``register_dataset`` / ``build_dataset`` / ``download_dataset`` (docs/method.md §7, §11).

A dataset is described once, by a :class:`DatasetInfo` in its own module
(``pointcalip/datasets/<name>.py``), which registers it when :mod:`pointcalip.datasets` is
imported. Everything that needs a dataset — the CLI choices, config validation, building,
class names, downloading, installing a local copy — goes through the functions here, so
adding a dataset is one new module (see docs/method.md §11).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence

from pointcalip.datasets.base import PointCloudDataset
from pointcalip.datasets.fetch import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    ArchiveSpec,
    Checks,
    Log,
    download_archive,
    install_archive,
    install_dir,
    validate_folder,
)
from pointcalip.errors import ConfigError, DownloadError
from pointcalip._types import PathLike
from pointcalip.clouds.prepare import check_num_points  # noqa: F401 - the one check, re-exported


DEFAULT_ROOT = Path("data")
DEFAULT_NUM_POINTS = 1024

#: ``build(root, split, num_points, variant) -> PointCloudDataset``; ``variant`` is already
#: checked and resolved (``None`` for datasets without variants).
Builder = Callable[[Path, str, int, Optional[str]], PointCloudDataset]
#: ``validate(folder, expected, full) -> one-line summary``; raises ``DatasetError``.
#: ``full`` asks for a complete read where the default check only samples.
Validator = Callable[[Path, Optional[Mapping], bool], str]


@dataclass(frozen=True)
class DatasetInfo:
    """Everything the toolkit needs to know about one dataset.

    Attributes:
        name: registry key (lower case), e.g. ``"modelnet40"``.
        build: :data:`Builder` reading one split from the data root.
        folder: the dataset folder's name inside the data root (``<root>/<folder>``).
        classes: the ``K`` class names in label order, or None when they come from the data
            (then ``read_classes(root)`` returns them).
        read_classes: ``(root) -> list[str]`` for datasets whose class list is in their files.
        splits: the splits ``build`` accepts.
        variants: variant names (``()`` when there are none); ``default_variant`` is used
            when none is asked for.
        up_axis: the stored clouds' up axis (``"y"`` for every built-in dataset; one of
            ``y z x -y -z -x``), for code that rotates clouds to y-up (docs/method.md §1).
        is_dataset_dir: ``(folder) -> bool``, recognises the dataset folder (in an
            extracted archive or a folder given with ``--from-dir``).
        validate: :data:`Validator` for a downloaded or local copy.
        archive: how to download it (:class:`ArchiveSpec`), or None when it cannot be.
        manual: one line (``str.format`` fields ``{root}``, ``{archive_path}``, ``{target}``,
            ``{mirror}``) saying how to get the data by hand.
        link_local_copy: ``--from-dir`` links the folder (True, for very large data) instead
            of copying it.
        files_of: name of the dataset whose files this one reads (ModelNet10 reads
            ModelNet40's); downloading this one installs that one.
        description: one line for ``--help``.
    """

    name: str
    build: Builder
    folder: str
    classes: Optional[tuple[str, ...]] = None
    read_classes: Optional[Callable[[Path], list[str]]] = None
    splits: tuple[str, ...] = ("train", "test")
    variants: tuple[str, ...] = ()
    default_variant: Optional[str] = None
    up_axis: str = "y"
    is_dataset_dir: Optional[Callable[[Path], bool]] = None
    validate: Optional[Validator] = None
    archive: Optional[ArchiveSpec] = None
    manual: str = ""
    link_local_copy: bool = False
    files_of: Optional[str] = None
    description: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"dataset name must be lower-case letters, digits and '_', got {self.name!r}")
        if self.classes is None and self.read_classes is None:
            raise ValueError(f"dataset {self.name!r} needs classes or read_classes")
        if self.variants and self.default_variant not in self.variants:
            raise ValueError(f"dataset {self.name!r}: default_variant must be one of {self.variants}")
        if self.up_axis not in ("y", "z", "x", "-y", "-z", "-x"):
            raise ValueError(f"dataset {self.name!r}: up_axis must be one of y z x -y -z -x, got {self.up_axis!r}")


_DATASETS: Dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo, overwrite: bool = False) -> DatasetInfo:
    """Make ``info`` available under ``info.name``; returns it."""
    if not isinstance(info, DatasetInfo):
        raise TypeError(f"register_dataset expects a DatasetInfo, got {type(info).__name__}")
    if info.name in _DATASETS and not overwrite:
        raise ValueError(f"dataset {info.name!r} is already registered")
    _DATASETS[info.name] = info
    return info


def unregister_dataset(name: str) -> None:
    """Remove a dataset (for tests and plug-ins that register temporary ones)."""
    _DATASETS.pop(name, None)


def dataset_names() -> tuple[str, ...]:
    """The registered dataset names, in registration order."""
    return tuple(_DATASETS)


def get_dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` (case-insensitive); ``ConfigError`` lists the valid names."""
    key = str(name).strip().lower()
    try:
        return _DATASETS[key]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; valid: {', '.join(_DATASETS)}") from None


def class_names(name: str, root: PathLike = DEFAULT_ROOT) -> list[str]:
    """Class names of ``name`` in label order (``K`` names).

    ``root`` (the data root) is read only by datasets whose classes are listed in their
    files (Objaverse-LVIS); the others know their classes without any data.
    """
    info = get_dataset_info(name)
    if info.classes is not None:
        return list(info.classes)
    return list(info.read_classes(Path(root)))


def resolve_variant(name: str, variant: Optional[str]) -> Optional[str]:
    """The variant ``build_dataset`` will use: ``variant`` checked (case and ``-`` are lenient), else the default.

    Returns None for datasets without variants; passing a variant to one is a ``ConfigError``.
    """
    info = get_dataset_info(name)
    if not info.variants:
        if variant is not None:
            with_variants = [n for n, i in _DATASETS.items() if i.variants]
            raise ConfigError(
                f"variant {variant!r} does not apply to {info.name}: variants apply to "
                f"{', '.join(with_variants) or 'no registered dataset'} only"
            )
        return None
    if variant is None:
        return info.default_variant
    key = str(variant).strip().lower().replace("-", "_")
    if key not in info.variants:
        raise ConfigError(f"unknown {info.name} variant {variant!r}; valid: {', '.join(info.variants)}")
    return key


def check_split(name: str, split: str) -> str:
    """``split`` (case-insensitive) if dataset ``name`` has it, else a ``ConfigError`` listing its splits."""
    info = get_dataset_info(name)
    key = str(split).strip().lower()
    if key not in info.splits:
        raise ConfigError(f"unknown split {split!r} for {info.name}; valid: {', '.join(info.splits)}")
    return key


def find_dataset_dir(root: PathLike, folder_name: str, is_dataset_dir: Callable[[Path], bool]) -> Optional[Path]:
    """``root/folder_name`` or ``root`` itself when it is the dataset folder (by ``is_dataset_dir``), else None."""
    root = Path(root)
    for cand in (root / folder_name, root):
        if cand.is_dir() and is_dataset_dir(cand):
            return cand
    return None


def build_dataset(
    name: str,
    root: PathLike = DEFAULT_ROOT,
    split: str = "test",
    num_points: int = DEFAULT_NUM_POINTS,
    variant: Optional[str] = None,
) -> PointCloudDataset:
    """Build dataset ``name`` for ``split`` with ``num_points`` points per cloud.

    ``root`` is the data root (or the dataset folder itself); ``variant`` is for datasets
    that have variants (default: the dataset's default). Returns a dataset of
    ``(torch.float32 [num_points, 3], int)`` items.
    """
    info = get_dataset_info(name)
    split = check_split(info.name, split)
    variant = resolve_variant(info.name, variant)
    num_points = check_num_points(num_points)
    return info.build(Path(root), split, num_points, variant)


# --------------------------------------------------------------------------- install


def _install_target(name: str) -> DatasetInfo:
    """The dataset whose files are installed for ``name`` (ModelNet10 -> ModelNet40)."""
    info = get_dataset_info(name)
    return get_dataset_info(info.files_of) if info.files_of else info


def checks_of(info: DatasetInfo, full: bool = False) -> Checks:
    """The :class:`Checks` of ``info`` for :mod:`pointcalip.datasets.fetch`."""
    if info.validate is None or info.is_dataset_dir is None:
        raise DownloadError(f"{info.name} cannot be installed by pointcalip (no validation is defined for it)")
    validate = info.validate
    return Checks(info.name, info.is_dataset_dir, lambda folder, expected: validate(folder, expected, full))


def manual_instructions(name: str, root: PathLike = DEFAULT_ROOT, mirrors: Sequence[str] = ()) -> str:
    """One line saying how to get ``name`` by hand and install it under ``root``."""
    info = _install_target(name)
    root = Path(root)
    archive = info.archive.archive if info.archive else ""
    mirror = mirrors[0] if mirrors else (info.archive.mirrors[0] if info.archive and info.archive.mirrors else
                                         "a mirror listed in data/README.md")  # fmt: skip
    text = info.manual or "get the {name} files by hand and install them with: pointcalip download {name} --root {root} --from-dir DIR"
    return text.format(root=root, archive_path=root / archive, target=root / info.folder, mirror=mirror, name=info.name)


def _data_root(info: DatasetInfo, root: Path) -> Path:
    return root.parent if root.name == info.folder else root  # lenient: the dataset folder itself was given


def _already_installed(info: DatasetInfo, target: Path, log: Log) -> bool:
    if not target.exists():
        return False
    try:
        summary = validate_folder(checks_of(info), target, None, str(target))
    except DownloadError as exc:
        raise DownloadError(
            f"{target} exists but is not a complete {info.name} ({exc}); move it away and run again"
        ) from None
    log(f"{info.name} is already in {target} ({summary}); nothing to do")
    return True


def download_dataset(
    name: str,
    root: PathLike = DEFAULT_ROOT,
    *,
    from_file: Optional[PathLike] = None,
    from_dir: Optional[PathLike] = None,
    mirrors: Optional[Sequence[str]] = None,
    sha256: Optional[str] = None,
    spec: Optional[ArchiveSpec] = None,
    full_check: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    progress: Optional[bool] = None,
    log: Log = print,
) -> Path:
    """Install dataset ``name`` under the data root ``root``; returns the dataset folder.

    * ``from_dir``: validate a local copy and copy it (or, for very large datasets, link it)
      to ``root/<folder>``; ``full_check`` reads every file instead of a sample.
    * ``from_file``: install that archive (never deleted).
    * otherwise: download the archive from ``mirrors`` (default: the dataset's list) in
      order, verifying size / SHA-256 when known (``sha256`` overrides the spec's;
      ``spec`` replaces the whole :class:`ArchiveSpec`, for tests).

    A dataset that reads another one's files (ModelNet10) installs that one. Raises
    :class:`DownloadError` with the manual instructions when nothing can be downloaded.
    """
    requested = get_dataset_info(name)
    info = _install_target(requested.name)
    if requested is not info:
        log(f"{requested.name} is read from the {info.name} files; installing {info.name}")
    spec = spec or info.archive
    if sha256 is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise ConfigError(f"--sha256 must be 64 hex digits, got {sha256!r}")
        if spec is None:
            raise ConfigError(f"--sha256 applies to a downloaded archive; {info.name} has none")
        spec = replace(spec, sha256=sha256.lower())
    if from_file is not None and from_dir is not None:
        raise ConfigError("give either --from-file or --from-dir, not both")
    root = _data_root(info, Path(root))
    target = root / info.folder
    if from_dir is not None:
        expected = spec.expected if spec else None
        return install_dir(checks_of(info, full_check), from_dir, target, link=info.link_local_copy,
                           expected=expected, log=log)  # fmt: skip
    if _already_installed(info, target, log):
        return target
    if spec is None:
        raise DownloadError(manual_instructions(info.name, root, mirrors or ()))
    if from_file is not None:
        return install_archive(spec, checks_of(info), from_file, root, log=log)
    mirrors = tuple(mirrors) if mirrors else spec.mirrors
    if not mirrors:
        raise DownloadError(manual_instructions(info.name, root, mirrors))
    return download_archive(
        spec, checks_of(info), root, mirrors, manual=manual_instructions(info.name, root, mirrors),
        connect_timeout=connect_timeout, read_timeout=read_timeout, progress=progress, log=log,
    )  # fmt: skip
