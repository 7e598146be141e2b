"""``classify`` inputs: files, folders, glob patterns and manifests as a lazy stream of items,
and the reader-pool task that reads one of them (docs/method.md §10).

Stays light at import time (no torch): reader workers import it to unpickle their task.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any, Iterator, List, NamedTuple, Optional, Sequence, TextIO, Tuple

from pointcalip.errors import ConfigError, PointCloudError

_GLOB_CHARS = "*?["


class Item(NamedTuple):
    """One input: its position in the whole input sequence, its path, an error known before reading."""

    index: int
    path: str
    error: Optional[str] = None


def _folder_files(folder: Path, recursive: bool) -> List[Path]:
    """Supported point-cloud files of ``folder``, sorted (hidden files skipped)."""
    from pointcalip.clouds import SUPPORTED_EXTENSIONS

    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(f for f in found if f.is_file() and not f.name.startswith(".")
                  and f.suffix.lower() in SUPPORTED_EXTENSIONS)


def expand_inputs(paths: Sequence[str], recursive: bool = False) -> List[Item]:
    """One :class:`Item` per file to classify (``index`` from 0); patterns or folders with nothing usable
    get an item that carries its error."""
    from pointcalip.clouds import SUPPORTED_EXTENSIONS

    found: List[Tuple[str, Optional[str]]] = []  # (path, error)
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            files = _folder_files(p, recursive)
            if not files:
                found.append((arg, f"{arg}: folder has no point-cloud files ({' '.join(SUPPORTED_EXTENSIONS)})"
                                   f"{'' if recursive else '; try --recursive'}"))
            found.extend((str(f), None) for f in files)
        elif not p.exists() and any(ch in arg for ch in _GLOB_CHARS):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                found.append((arg, f"{arg}: no file matches this pattern; check the path"))
            for m in matches:
                inner = expand_inputs([m], recursive) if Path(m).is_dir() else [Item(0, m)]
                found.extend((it.path, it.error) for it in inner)
        else:
            found.append((arg, None))  # missing or unsupported files are reported when loading
    return [Item(i, path, error) for i, (path, error) in enumerate(found)]


def open_manifest(path: str) -> TextIO:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{path}: manifest not found; give a text file with one point-cloud path per line")
    return open(file, "r", encoding="utf-8-sig", errors="surrogateescape", newline=None)


def manifest_paths(path: str) -> Iterator[str]:
    """The paths of a manifest, one per line, lazily (blank lines and ``#`` comments skipped)."""
    with open_manifest(path) as f:
        for line in f:
            text = line.strip()
            if text and not text.startswith("#"):
                yield text


def count_manifest(path: str) -> int:
    """Number of paths in a manifest (one streaming pass, constant memory)."""
    return sum(1 for _ in manifest_paths(path))


def iter_inputs(paths: Sequence[str], manifests: Sequence[str], recursive: bool = False) -> Iterator[Item]:
    """Every input in order: the positional PATHs (expanded), then each manifest's lines."""
    items = expand_inputs(paths, recursive)
    yield from items
    index = len(items)
    for manifest in manifests:
        for path in manifest_paths(manifest):
            yield Item(index, path)
            index += 1


def read_candidates(item: Item, num_points: int, axes: Tuple[str, ...], robust: bool, limits: Any) -> Tuple[Any, ...]:
    """Reader-pool task: read ``item`` once, prepare it under each of ``axes`` -> ``PreparedCloud`` per axis.

    Runs in a worker process; an input that already carries an error raises it, so it comes
    back as that input's error row like any other failure.
    """
    if item.error is not None:
        raise PointCloudError(item.error)
    from pointcalip.clouds import check_up_axis, prepare_cloud_info, read_raw

    source = str(Path(item.path).expanduser())
    raw = read_raw(item.path, num_points, limits)
    return tuple(prepare_cloud_info(raw, num_points, True, source, up_axis=check_up_axis(a), robust=robust)
                 for a in axes)
