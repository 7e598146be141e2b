"""Reading point clouds from files, checking them and preparing them (SPEC §1).

:func:`load_point_cloud` reads a file into ``float32 (N, 3)`` points, checks them
(:func:`validate_cloud`), centres and scales them (:func:`normalize_cloud`) and reduces
them to ``num_points`` by farthest point sampling (:func:`resample_cloud`).

Formats (extension, case-insensitive):

* ``.ply .pcd .xyz .xyzn .xyzrgb .pts``: read with open3d. A ``.ply`` with faces is a mesh.
* ``.txt .csv``: columns separated by whitespace, ``,`` or ``;``; the first three are
  x y z; one header line of words may lead; ``#`` lines are comments.
* ``.npy .npz``: an array ``(N, >=3)``; in ``.npz`` the array ``points`` or the only one.
* meshes ``.obj .off .stl`` (and ``.ply`` with faces): sampled uniformly by area with a
  fixed seed (see :func:`mesh_sample_count`); a mesh without faces gives its vertices.

Colour, normal and other columns are dropped. open3d reports broken files by printing a
warning and returning garbage or nothing, so each file is checked first (size, header,
row count) and open3d's console output is captured: the user sees one
:class:`~pointcalip.errors.PointCloudError` line instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Tuple, Union

import numpy as np

from pointcalip.errors import (
    ConfigError,
    DegenerateCloudError,
    EmptyCloudError,
    MissingFileError,
    NonFiniteError,
    PointCloudError,
    UnreadableFileError,
    UnsupportedFormatError,
)

__all__ = [
    "MESH_EXTENSIONS",
    "MESH_SEED",
    "POINT_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "load_point_cloud",
    "mesh_sample_count",
    "normalize_cloud",
    "prepare_cloud",
    "read_point_cloud",
    "resample_cloud",
    "validate_cloud",
]

PathLike = Union[str, "os.PathLike[str]"]

OPEN3D_EXTENSIONS = (".ply", ".pcd", ".xyz", ".xyzn", ".xyzrgb", ".pts")
TABLE_EXTENSIONS = (".txt", ".csv")
NUMPY_EXTENSIONS = (".npy", ".npz")
POINT_EXTENSIONS = OPEN3D_EXTENSIONS + TABLE_EXTENSIONS + NUMPY_EXTENSIONS
MESH_EXTENSIONS = (".obj", ".off", ".stl")
SUPPORTED_EXTENSIONS = POINT_EXTENSIONS + MESH_EXTENSIONS
# Plain-text formats without a header: an empty file is a valid cloud with no points
# (EmptyCloudError); for the others a 0-byte file is broken (UnreadableFileError).
_HEADERLESS = (".xyz", ".xyzn", ".xyzrgb", ".txt", ".csv", ".obj")
# Numbers per row open3d needs in its xyz-family readers.
_XYZ_COLUMNS = {".xyz": 3, ".xyzn": 6, ".xyzrgb": 6}
MESH_SEED = 0
_HEADER_BYTES = 1 << 20
_CORRUPT_FIX = "re-export it or convert it to .npy"


# ----------------------------------------------------------------------------- errors


def _error(cls: type[PointCloudError], source: str, problem: str, fix: str) -> PointCloudError:
    """``cls("<source>: <problem>; <fix>")`` squeezed onto one line."""
    text = f"{source}: {problem}; {fix}"
    return cls(" ".join(text.split()))


def _corrupt(source: str, problem: str) -> UnreadableFileError:
    """An :class:`UnreadableFileError` for a damaged file."""
    return _error(UnreadableFileError, source, problem, _CORRUPT_FIX)  # type: ignore[return-value]


def _empty(source: str, problem: str = "the cloud has no points") -> EmptyCloudError:
    """An :class:`EmptyCloudError` for a file or array without points."""
    fix = "give a cloud with at least two distinct points"
    return _error(EmptyCloudError, source, problem, fix)  # type: ignore[return-value]


def _quote(line: str, width: int = 40) -> str:
    """A short printable excerpt of ``line`` for error messages."""
    line = line.strip()
    return repr(line if len(line) <= width else line[: width - 3] + "...")


# ------------------------------------------------------------------- checks on arrays


def validate_cloud(points: Any, source: str = "points") -> np.ndarray:
    """Check a cloud and return its x y z columns.

    Args:
        points: ``(N, 3)`` or ``(N, >3)`` numbers (numpy array, list, CPU tensor).
        source: name used in error messages (file name or ``"points"``).

    Returns:
        ``float32 (N, 3)``, a new contiguous array.

    Raises:
        PointCloudError: not an ``(N, >=3)`` array of numbers.
        EmptyCloudError: no points.
        NonFiniteError: NaN/Inf coordinates (or values beyond float32).
        DegenerateCloudError: one point, or all points identical.
    """
    try:
        arr = np.asarray(points)
    except (ValueError, TypeError) as exc:
        problem = f"cannot be read as an array ({exc})"
        raise _error(PointCloudError, source, problem, "pass an (N, 3) array") from None
    if arr.dtype.kind not in "biuf":
        problem = f"holds {arr.dtype} values, not numbers"
        raise _error(PointCloudError, source, problem, "pass an (N, 3) array of floats")
    if arr.size == 0 and (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] >= 3)):
        raise _empty(source)
    if arr.ndim != 2 or arr.shape[1] < 3:
        problem = f"has shape {arr.shape}, expected (N, 3)"
        raise _error(PointCloudError, source, problem, "pass one x y z row per point")
    xyz = arr[:, :3].astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(xyz, dtype=np.float32)
    _check_finite(out, xyz, source)
    _check_not_degenerate(out, source)
    return out


def _check_finite(xyz32: np.ndarray, xyz64: np.ndarray, source: str) -> None:
    """Raise :class:`NonFiniteError` when a coordinate is NaN/Inf (before or after float32)."""
    bad = ~np.isfinite(xyz32).all(axis=1)
    if not bad.any():
        return
    rows = np.flatnonzero(bad)
    overflow = np.isfinite(xyz64[rows[0]]).all()
    what = "coordinates too large for float32" if overflow else "NaN or Inf coordinates"
    problem = f"{len(rows)} of {len(xyz32)} points have {what} (first at row {rows[0]})"
    raise _error(NonFiniteError, source, problem, "remove those points or fix the export")


def _check_not_degenerate(xyz: np.ndarray, source: str) -> None:
    """Raise :class:`DegenerateCloudError` when all points of ``xyz: (N, 3)`` coincide."""
    if (xyz == xyz[0]).all():
        x, y, z = (float(v) for v in xyz[0])
        what = "has a single point" if len(xyz) == 1 else f"has {len(xyz)} points, all identical"
        problem = f"{what} ({x:g}, {y:g}, {z:g})"
        raise _error(DegenerateCloudError, source, problem, "a cloud needs at least two distinct points")


def normalize_cloud(points: np.ndarray, source: str = "points") -> np.ndarray:
    """Centre on the centroid and scale so the farthest point has norm 1 (SPEC §1).

    Args:
        points: ``(N, 3)`` finite coordinates.
        source: name used in error messages.

    Returns:
        ``float32 (N, 3)`` with centroid 0 and maximum norm 1 (to float32 precision).
    """
    p = np.asarray(points, dtype=np.float64)[:, :3]
    centred = p - p.mean(axis=0)
    scale = float(np.sqrt((centred * centred).sum(axis=1)).max())
    if not (scale > 0.0 and np.isfinite(scale)):
        fix = "a cloud needs at least two distinct points"
        raise _error(DegenerateCloudError, source, "all points are identical", fix)
    return (centred / scale).astype(np.float32)


def _check_num_points(num_points: Any) -> int:
    """``num_points`` as a positive int, else :class:`ConfigError`."""
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise ConfigError(f"num_points must be a positive integer, got {num_points!r}")
    return int(num_points)


def canonical_order(points: np.ndarray) -> np.ndarray:
    """``points: (N, 3)`` sorted by x, then y, then z."""
    return points[np.lexsort((points[:, 2], points[:, 1], points[:, 0]))]


def resample_cloud(points: np.ndarray, num_points: int) -> np.ndarray:
    """Reduce a cloud to ``num_points`` by farthest point sampling when it has more.

    FPS starts from the first point, so the points are first put in a canonical order
    (:func:`canonical_order`): the subset, and so every prediction, does not depend on the
    order of the points in the input.

    Args:
        points: ``(N, 3)``.
        num_points: target count ``M >= 1``.

    Returns:
        ``(min(N, M), 3)``: the FPS subset (in canonical order) when ``N > M``, otherwise
        ``points`` itself.
    """
    from pointcalip.sampling import farthest_point_sample

    num_points = _check_num_points(num_points)
    if len(points) <= num_points:
        return points
    ordered = canonical_order(points)
    return ordered[np.sort(farthest_point_sample(ordered, num_points))]


def prepare_cloud(
    points: Any, num_points: int | None = None, normalize: bool = True, source: str = "points"
) -> np.ndarray:
    """Validate, optionally normalise, then FPS-resample an in-memory cloud (SPEC §1).

    Args:
        points: ``(N, 3)`` or ``(N, >3)`` numbers.
        num_points: keep at most this many points (FPS); ``None`` keeps all.
        normalize: centre and scale into the unit ball first.
        source: name used in error messages.

    Returns:
        ``float32 (M, 3)`` with ``M = min(N, num_points)``.
    """
    if num_points is not None:
        num_points = _check_num_points(num_points)
    cloud = validate_cloud(points, source)
    if normalize:
        cloud = normalize_cloud(cloud, source)
    if num_points is not None:
        cloud = resample_cloud(cloud, num_points)
    return np.ascontiguousarray(cloud, dtype=np.float32)


# --------------------------------------------------------------------------- loading


def load_point_cloud(path: PathLike, num_points: int | None = None, normalize: bool = True) -> np.ndarray:
    """Read, check, normalise and resample a point-cloud or mesh file (SPEC §1).

    Args:
        path: a file with one of :data:`SUPPORTED_EXTENSIONS`.
        num_points: keep at most this many points by farthest point sampling; ``None``
            keeps all (meshes then give :func:`mesh_sample_count` points).
        normalize: centre on the centroid and scale the farthest point to norm 1.

    Returns:
        ``float32 (N, 3)`` points.

    Raises:
        MissingFileError, UnsupportedFormatError, UnreadableFileError, EmptyCloudError,
        NonFiniteError, DegenerateCloudError: with a one-line message naming the file.
    """
    return read_point_cloud(path, num_points, normalize)[0]


def read_point_cloud(
    path: PathLike, num_points: int | None = None, normalize: bool = True
) -> Tuple[np.ndarray, int]:
    """:func:`load_point_cloud` that also says how many points the file gave.

    Returns:
        ``(points, n)``: ``float32 (M, 3)`` points with ``M = min(n, num_points)``, and ``n``
        the points read before resampling (for a mesh: its surface samples).
    """
    if num_points is not None:
        num_points = _check_num_points(num_points)
    file = Path(os.fspath(path)).expanduser()
    source = str(file)
    ext = _check_path(file, source)
    raw = _read_raw(file, ext, source, num_points)
    return prepare_cloud(raw, num_points, normalize, source), len(raw)


def _check_path(file: Path, source: str) -> str:
    """The lower-case extension of an existing regular file with a supported type."""
    if not file.exists():
        raise _error(MissingFileError, source, "no such file", "check the path")
    if file.is_dir():
        raise _error(UnreadableFileError, source, "is a directory, not a point-cloud file", "give a file")
    ext = file.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        kind = f"'{file.suffix}'" if file.suffix else "(no extension)"
        supported = " ".join(SUPPORTED_EXTENSIONS)
        raise _error(UnsupportedFormatError, source, f"unsupported file type {kind}",
                     f"supported: {supported}; convert the cloud to one of these (e.g. .ply or .npy)")
    return ext


def _read_raw(file: Path, ext: str, source: str, num_points: int | None) -> np.ndarray:
    """Raw points ``(N, >=3)`` of any supported file (not yet validated)."""
    size = _file_size(file, source)
    if size == 0:
        if ext in _HEADERLESS:
            raise _empty(source, "the file is empty (0 bytes)")
        raise _corrupt(source, "the file is empty (0 bytes)")
    if ext in NUMPY_EXTENSIONS:
        return _read_numpy(file, source)
    if ext in TABLE_EXTENSIONS:
        return _read_table(file, source)
    if ext == ".ply":
        header = _check_ply(file, size, source)
        if header.count("face") > 0:
            return _read_mesh(file, source, num_points)
        return _read_open3d_cloud(file, "ply", source, header.count("vertex"))
    if ext == ".pcd":
        return _read_open3d_cloud(file, "pcd", source, _check_pcd(file, size, source))
    if ext in _XYZ_COLUMNS:
        return _read_xyz(file, ext, source)
    if ext == ".pts":
        return _read_open3d_cloud(file, "pts", source, _check_pts(file, source))
    if ext == ".stl":
        _check_stl(file, size, source)
    if ext == ".obj":
        return _read_obj(file, source, num_points)
    return _read_mesh(file, source, num_points)


def _file_size(file: Path, source: str) -> int:
    """Size in bytes, or :class:`UnreadableFileError` when the file cannot be opened."""
    try:
        with open(file, "rb"):
            pass
        return file.stat().st_size
    except OSError as exc:
        problem = f"cannot open the file ({exc.strerror})"
        raise _error(UnreadableFileError, source, problem, "check its permissions") from None


def _file_array(arr: np.ndarray, source: str, what: str) -> np.ndarray:
    """Check an array read from a file is numbers shaped ``(N, >=3)``."""
    if arr.dtype.kind not in "biuf":
        raise _corrupt(source, f"{what} holds {arr.dtype} values, not numbers")
    if arr.size == 0 and arr.ndim <= 2:
        raise _empty(source, f"{what} holds no points")
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise _error(UnreadableFileError, source, f"{what} has shape {arr.shape}, expected (N, 3)",
                     "save one x y z row per point")
    return arr


# ----------------------------------------------------------------------------- numpy


def _read_numpy(file: Path, source: str) -> np.ndarray:
    """Points of a ``.npy`` or ``.npz`` file: ``(N, >=3)``."""
    try:
        loaded = np.load(file, allow_pickle=False)
    except Exception as exc:  # numpy raises many types for damaged files
        raise _corrupt(source, f"not a valid numpy file ({type(exc).__name__}: {exc})") from None
    if isinstance(loaded, np.ndarray):
        return _file_array(loaded, source, "the array")
    with loaded:
        return _npz_points(loaded, source)


def _npz_points(archive: Any, source: str) -> np.ndarray:
    """The ``points`` array (or the only array) of an open ``.npz`` archive."""
    names = list(archive.files)
    if "points" in names:
        key = "points"
    elif len(names) == 1:
        key = names[0]
    else:
        listed = ", ".join(names) if names else "none"
        raise _error(UnreadableFileError, source, f"holds arrays {listed} but none named 'points'",
                     "save the cloud under the key 'points'")
    try:
        arr = archive[key]
    except Exception as exc:
        raise _corrupt(source, f"array '{key}' cannot be read ({type(exc).__name__}: {exc})") from None
    return _file_array(arr, source, f"array '{key}'")


# ------------------------------------------------------------------------ text tables


def _read_text(file: Path, source: str) -> str:
    """The whole file decoded as UTF-8 text."""
    try:
        return file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _corrupt(source, "is not a text file (it holds binary data)") from None


def _data_rows(text: str) -> list[tuple[int, str]]:
    """``(line number, stripped line)`` of non-blank, non-comment lines."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "//")):
            rows.append((number, stripped))
    return rows


def _split(line: str, delimiter: str | None) -> list[str]:
    """Fields of one table row; empty trailing fields (``1,2,3,``) are dropped."""
    fields = [f.strip() for f in line.split(delimiter)]
    while fields and not fields[-1]:
        fields.pop()
    return fields


def _is_numeric(fields: list[str]) -> bool:
    """Whether every field parses as a float."""
    try:
        [float(f) for f in fields]
    except ValueError:
        return False
    return True


def _parse_rows(rows: list[tuple[int, str]], delimiter: str | None, source: str, columns: int = 3) -> np.ndarray:
    """Parse rows one by one (slow path), raising on the first bad line: ``(N, columns)``."""
    out = []
    for number, line in rows:
        fields = _split(line, delimiter)
        if not _is_numeric(fields[:columns]):
            raise _corrupt(source, f"line {number} {_quote(line)} is not numbers")
        if len(fields) < columns:
            raise _error(UnreadableFileError, source,
                         f"line {number} has {len(fields)} column(s), need at least {columns}",
                         "write one 'x y z' row per point" if columns == 3 else f"write {columns} numbers per row")
        out.append([float(f) for f in fields[:columns]])
    return np.asarray(out, dtype=np.float64).reshape(-1, columns)


def _read_table(file: Path, source: str) -> np.ndarray:
    """Points of a ``.txt``/``.csv`` table: ``(N, 3)``."""
    rows = _data_rows(_read_text(file, source))
    if rows:
        first = rows[0][1]
        delimiter = "," if "," in first else (";" if ";" in first else None)
        if not _is_numeric(_split(first, delimiter)):
            rows = rows[1:]  # a header line such as "x,y,z"
    if not rows:
        raise _empty(source, "the file has no data rows")
    try:
        arr = np.loadtxt(io.StringIO("\n".join(r for _, r in rows)), delimiter=delimiter, ndmin=2)
    except ValueError:
        return _parse_rows(rows, delimiter, source)
    if arr.shape[1] < 3:
        return _parse_rows(rows, delimiter, source)  # reports the short line
    return arr[:, :3]


# ---------------------------------------------------------------- open3d console capture


def _libc() -> Any:
    """The C library (for ``fflush``), or ``None`` where it cannot be loaded."""
    try:
        return ctypes.CDLL(None)
    except (OSError, TypeError):
        return None


_LIBC = _libc()


def _flush_all() -> None:
    """Flush Python's and C's stdout/stderr buffers."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if _LIBC is not None:
        with contextlib.suppress(Exception):
            _LIBC.fflush(None)


@contextlib.contextmanager
def _captured_fds() -> Iterator[list[str]]:
    """Redirect file descriptors 1 and 2 to a temporary file; yields a list that gets the text."""
    log: list[str] = []
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no console to capture
        yield log
        return
    _flush_all()
    with tempfile.TemporaryFile() as tmp:
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield log
        finally:
            _flush_all()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            log.append(tmp.read().decode("utf-8", "replace"))


@contextlib.contextmanager
def _captured_console() -> Iterator[list[str]]:
    """Capture everything printed meanwhile; yields a list that gets the text afterwards.

    open3d's Python module prints its warnings through ``sys.stdout``; its C parts (RPly)
    write to the file descriptors. Both are captured.
    """
    log: list[str] = []
    text = io.StringIO()
    try:
        with _captured_fds() as fd_log:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield log
    finally:
        log.append(text.getvalue() + "".join(fd_log))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FAILURE = re.compile(r"fail|error|unable|cannot|could not", re.IGNORECASE)


def _open3d_problem(text: str) -> str | None:
    """The first line of open3d's console output that reports a failure, if any."""
    for line in _ANSI.sub("", text).splitlines():
        if _FAILURE.search(line):
            return re.sub(r"^\s*\[Open3D [A-Z]+\]\s*", "", line).strip()
    return None


def _quiet_open3d(call: Callable[[], Any], source: str) -> Any:
    """Run an open3d reader silently; a reported failure becomes :class:`UnreadableFileError`."""
    import open3d as o3d

    error: str | None = None
    with _captured_console() as log:
        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Warning):
            try:
                result = call()
            except RuntimeError as exc:
                error = str(exc)
    problem = error or _open3d_problem("".join(log))
    if problem is not None:
        problem = _ANSI.sub("", problem).replace(source, Path(source).name).strip().rstrip(".")
        raise _corrupt(source, f"file is truncated or corrupt (open3d: {problem})")
    return result


def _read_open3d_cloud(file: Path, fmt: str, source: str, expected: int | None = None) -> np.ndarray:
    """Points ``(N, 3)`` read by ``open3d.io.read_point_cloud``; ``expected`` = rows to find."""
    import open3d as o3d

    cloud = _quiet_open3d(lambda: o3d.io.read_point_cloud(str(file), format=fmt), source)
    points = np.asarray(cloud.points, dtype=np.float64)
    if expected is not None and len(points) != expected:
        raise _corrupt(source, f"file is truncated or corrupt (open3d read {len(points)} of {expected} points)")
    if len(points) == 0:
        raise _corrupt(source, "file is truncated or corrupt (open3d read 0 points)")
    return points


# ------------------------------------------------------------------------- PLY header


_PLY_SIZES = {
    "char": 1, "int8": 1, "uchar": 1, "uint8": 1,
    "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
    "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4,
    "double": 8, "float64": 8,
}


@dataclass
class _PlyElement:
    """One ``element`` of a PLY header: fixed bytes per row and list-count bytes."""

    name: str
    count: int
    props: list[str] = field(default_factory=list)
    fixed_bytes: int = 0
    has_lists: bool = False


@dataclass
class _PlyHeader:
    """The parts of a PLY header needed to check the file."""

    fmt: str
    length: int
    elements: list[_PlyElement]

    def count(self, name: str) -> int:
        """Rows of element ``name`` (0 when absent)."""
        return sum(e.count for e in self.elements if e.name == name)


def _ply_header_text(head: bytes, source: str) -> tuple[list[str], int]:
    """Header lines and header length in bytes, from the file's first bytes."""
    if not head.startswith(b"ply"):
        raise _corrupt(source, "not a PLY file (it does not start with 'ply')")
    end = re.search(rb"end_header[ \t]*\r?\n", head)
    if end is None:
        raise _corrupt(source, "PLY header is truncated (no 'end_header' line)")
    text = head[: end.start()].decode("ascii", "replace")
    return text.splitlines(), end.end()


def _ply_property(element: _PlyElement, words: list[str], source: str) -> None:
    """Add one ``property`` line to ``element``."""
    if len(words) >= 5 and words[1] == "list" and words[2] in _PLY_SIZES and words[3] in _PLY_SIZES:
        element.fixed_bytes += _PLY_SIZES[words[2]]
        element.has_lists = True
    elif len(words) == 3 and words[1] in _PLY_SIZES:
        element.fixed_bytes += _PLY_SIZES[words[1]]
    else:
        raise _corrupt(source, f"bad PLY header line {_quote(' '.join(words))}")
    element.props.append(words[-1])


def _parse_ply_header(head: bytes, source: str) -> _PlyHeader:
    """Parse the header of a PLY file from its first bytes."""
    lines, length = _ply_header_text(head, source)
    fmt, elements = "", []
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(_PlyElement(words[1], int(words[2])))
        elif words[0] == "property" and elements:
            _ply_property(elements[-1], words, source)
        else:
            raise _corrupt(source, f"bad PLY header line {_quote(line)}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise _corrupt(source, f"unknown PLY format {fmt!r}")
    return _PlyHeader(fmt, length, elements)


def _count_data_lines(body: bytes) -> int:
    """Non-blank lines of a text body."""
    return sum(1 for line in body.split(b"\n") if line.strip())


def _check_ply(file: Path, size: int, source: str) -> _PlyHeader:
    """Check a PLY header and that the file is long enough for it; returns the header."""
    with open(file, "rb") as fh:
        head = fh.read(_HEADER_BYTES)
    header = _parse_ply_header(head, source)
    vertex = next((e for e in header.elements if e.name == "vertex"), None)
    if vertex is None or not {"x", "y", "z"} <= set(vertex.props):
        raise _corrupt(source, "PLY file has no vertex element with x y z properties")
    if vertex.count == 0:
        raise _empty(source, "the PLY file has 0 vertices")
    if header.fmt == "ascii":
        have = _count_data_lines(file.read_bytes()[header.length:])
        need = sum(e.count for e in header.elements)
        if have < need:
            raise _corrupt(source, f"file is truncated (header promises {need} rows, found {have})")
        return header
    need = sum(e.count * e.fixed_bytes for e in header.elements)
    if size - header.length < need:
        raise _corrupt(source, f"file is truncated ({size} bytes, header needs at least {header.length + need})")
    return header


# ------------------------------------------------------------------------- PCD header


def _pcd_header(file: Path, source: str) -> tuple[dict[str, list[str]], int]:
    """Header fields of a PCD file (``FIELDS``, ``SIZE``, ...) and header length in bytes."""
    with open(file, "rb") as fh:
        head = fh.read(_HEADER_BYTES)
    fields: dict[str, list[str]] = {}
    offset = 0
    for raw in head.splitlines(keepends=True):
        offset += len(raw)
        words = raw.decode("ascii", "replace").split()
        if not words or words[0].startswith("#"):
            continue
        fields[words[0].upper()] = words[1:]
        if words[0].upper() == "DATA":
            return fields, offset
    raise _corrupt(source, "not a PCD file or its header is truncated (no DATA line)")


def _pcd_int(fields: dict[str, list[str]], key: str, source: str) -> int:
    """An integer header value such as ``POINTS``."""
    try:
        return int(fields[key][0])
    except (KeyError, IndexError, ValueError):
        raise _corrupt(source, f"PCD header has no valid {key} line") from None


def _pcd_row_bytes(fields: dict[str, list[str]], source: str) -> int:
    """Bytes per point of a binary PCD file."""
    names = fields.get("FIELDS", [])
    sizes = fields.get("SIZE", [])
    counts = fields.get("COUNT", ["1"] * len(names))
    if not names or len(sizes) != len(names) or len(counts) != len(names):
        raise _corrupt(source, "PCD header FIELDS/SIZE/COUNT lines do not match")
    try:
        return sum(int(s) * int(c) for s, c in zip(sizes, counts))
    except ValueError:
        raise _corrupt(source, "PCD header SIZE/COUNT values are not numbers") from None


def _check_pcd(file: Path, size: int, source: str) -> int:
    """Check a PCD header and the data length; returns the number of points."""
    fields, length = _pcd_header(file, source)
    if not {"x", "y", "z"} <= set(fields.get("FIELDS", [])):
        raise _corrupt(source, "PCD file has no x y z fields")
    points = _pcd_int(fields, "POINTS", source) if "POINTS" in fields else (
        _pcd_int(fields, "WIDTH", source) * _pcd_int(fields, "HEIGHT", source))
    if points == 0:
        raise _empty(source, "the PCD file has 0 points")
    kind = (fields["DATA"] or [""])[0].lower()
    row = _pcd_row_bytes(fields, source)
    if kind == "ascii":
        have = _count_data_lines(file.read_bytes()[length:])
        if have < points:
            raise _corrupt(source, f"file is truncated (header promises {points} points, found {have} rows)")
    elif kind == "binary":
        if size - length < points * row:
            raise _corrupt(source, f"file is truncated ({size} bytes, header needs {length + points * row})")
    elif kind == "binary_compressed":
        _check_pcd_compressed(file, size, length, points * row, source)
    else:
        raise _corrupt(source, f"unknown PCD DATA type {kind!r}")
    return points


def _check_pcd_compressed(file: Path, size: int, length: int, raw_bytes: int, source: str) -> None:
    """Check the two size words of a ``binary_compressed`` PCD body."""
    with open(file, "rb") as fh:
        fh.seek(length)
        words = np.frombuffer(fh.read(8), dtype="<u4")
    if len(words) < 2 or size - length - 8 < int(words[0]) or int(words[1]) != raw_bytes:
        raise _corrupt(source, "compressed PCD data is truncated or does not match the header")


# ------------------------------------------------------------------ xyz, pts, stl checks


def _read_xyz(file: Path, ext: str, source: str) -> np.ndarray:
    """Points of ``.xyz/.xyzn/.xyzrgb``: open3d, cross-checked against the row count."""
    rows = _data_rows(_read_text(file, source))
    if not rows:
        raise _empty(source, "the file has no data rows")
    points = _quiet_read_xyz(file, ext, source)
    if len(points) != len(rows):
        _parse_rows(rows, None, source, _XYZ_COLUMNS[ext])  # names the bad line
        raise _corrupt(source, f"open3d read {len(points)} points from {len(rows)} rows")
    return points


def _quiet_read_xyz(file: Path, ext: str, source: str) -> np.ndarray:
    """Points ``(N, 3)`` of an xyz-family file as open3d reads them (may be fewer than rows)."""
    import open3d as o3d

    cloud = _quiet_open3d(lambda: o3d.io.read_point_cloud(str(file), format=ext[1:]), source)
    return np.asarray(cloud.points, dtype=np.float64)


def _check_pts(file: Path, source: str) -> int:
    """Check a ``.pts`` file (first line: point count); returns the count."""
    rows = _data_rows(_read_text(file, source))
    if not rows:
        raise _empty(source, "the file has no data rows")
    number, first = rows[0]
    if not first.isdigit():
        raise _corrupt(source, f"line {number} {_quote(first)} should be the point count")
    count = int(first)
    if count == 0:
        raise _empty(source, "the .pts file has 0 points")
    if len(rows) - 1 < count:
        raise _corrupt(source, f"file is truncated (header promises {count} points, found {len(rows) - 1} rows)")
    _parse_rows(rows[1 : count + 1], None, source)
    return count


def _check_stl(file: Path, size: int, source: str) -> None:
    """Check an STL file is a complete binary STL or looks like an ASCII one."""
    with open(file, "rb") as fh:
        head = fh.read(84)
    if len(head) == 84:
        triangles = int(np.frombuffer(head[80:84], dtype="<u4")[0])
        if size >= 84 + 50 * triangles:
            return
    if head.lstrip().startswith(b"solid"):
        return
    raise _corrupt(source, f"STL file is truncated ({size} bytes)")


# ----------------------------------------------------------------------------- meshes


def mesh_sample_count(num_points: int | None) -> int:
    """Surface points drawn from a mesh: ``4 * max(num_points, 1024)`` (4,096 for ``None``).

    Drawing more than needed and then reducing by farthest point sampling spreads the
    points evenly over the surface.
    """
    return 4 * max(num_points or 0, 1024)


def _read_obj(file: Path, source: str, num_points: int | None) -> np.ndarray:
    """Points of an OBJ file: surface samples, or its vertices when it has no faces."""
    rows = _data_rows(_read_text(file, source))
    vertices = [(number, line[1:]) for number, line in rows if line.startswith(("v ", "v\t"))]
    if not vertices:
        raise _empty(source, "the OBJ file has no vertices ('v x y z' lines)")
    if any(line.startswith(("f ", "f\t")) for _, line in rows):
        return _read_mesh(file, source, num_points)
    return _parse_rows(vertices, None, source)  # open3d cannot read face-less OBJ files


def _read_mesh(file: Path, source: str, num_points: int | None) -> np.ndarray:
    """Surface samples ``(M, 3)`` of a mesh file (its vertices when it has no faces)."""
    import open3d as o3d

    mesh = _quiet_open3d(lambda: o3d.io.read_triangle_mesh(str(file)), source)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.triangles)
    if len(vertices) == 0:
        raise _empty(source, "the mesh has no vertices")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise _corrupt(source, "a face refers to a vertex that does not exist")
    if len(faces) == 0 or not np.isfinite(vertices).all():
        return vertices  # validation reports non-finite vertices
    area = mesh.get_surface_area()
    if not (area > 0.0 and np.isfinite(area)):
        return vertices
    return _sample_surface(mesh, mesh_sample_count(num_points))


def _sample_surface(mesh: Any, count: int) -> np.ndarray:
    """``count`` points ``(count, 3)`` uniform by area on ``mesh``, seeded with :data:`MESH_SEED`."""
    import open3d as o3d

    o3d.utility.random.seed(MESH_SEED)
    cloud = mesh.sample_points_uniformly(number_of_points=count)
    return np.asarray(cloud.points, dtype=np.float64)
