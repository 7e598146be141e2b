"""NumPy files: ``.npy`` and ``.npz`` (docs/method.md §1).

The ``.npy`` header (dtype, shape) is read and checked first: object dtypes (pickled
Python objects) are refused and never unpickled, and the shape must fit in the bytes that
follow the header. In a ``.npz`` the member ``points.npy`` (or the only member) is used;
its uncompressed size from the zip directory is checked against ``max_bytes`` and against
its own ``.npy`` header before a single byte is inflated, and the read stops at the size
the header announces.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Tuple

import numpy as np

from pointcalip.clouds._errors import corrupt, empty, error
from pointcalip.clouds.files import ReadLimits, open_regular
from pointcalip.errors import UnreadableFileError

__all__ = ["read_npy", "read_npz", "file_array"]


def file_array(arr: np.ndarray, source: str, what: str) -> np.ndarray:
    """Check an array read from a file is numbers shaped ``(N, >=3)``."""
    if arr.dtype.kind not in "biuf":
        raise corrupt(source, f"{what} holds {arr.dtype} values, not numbers")
    if arr.size == 0 and arr.ndim <= 2:
        raise empty(source, f"{what} holds no points")
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise error(UnreadableFileError, source, f"{what} has shape {arr.shape}, expected (N, 3)",
                    "save one x y z row per point")
    return arr


def _header(fh: BinaryIO, source: str, what: str) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the ``.npy`` header at the current position."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # numpy raises ValueError/OSError/SyntaxError... for damaged headers
        msg = " ".join(str(exc).split())[:120]
        raise corrupt(source, f"{what} is not a valid .npy array ({type(exc).__name__}: {msg})") from None
    if dtype.hasobject:
        raise error(UnreadableFileError, source, f"{what} holds Python objects (pickled data), "
                    "which are never loaded", "save a plain float array, e.g. np.save(path, points.astype('float32'))")
    return tuple(int(s) for s in shape), bool(fortran), dtype


def _body(fh: BinaryIO, shape: Tuple[int, ...], fortran: bool, dtype: np.dtype, available: int,
          source: str, what: str, limits: ReadLimits) -> np.ndarray:
    """Read the array data after a checked header; ``available`` = bytes that follow it."""
    if any(s < 0 for s in shape):
        raise corrupt(source, f"{what} has a negative size in its shape {shape}")
    if len(shape) == 2 and dtype.kind in "biuf":
        limits.check_points(shape[0], source, "rows")
    count = int(np.prod(shape, dtype=object))
    nbytes = count * dtype.itemsize
    limits.check_bytes(nbytes, source, f"{what} needs")
    if nbytes > available:
        raise corrupt(source, f"{what} is truncated (its header announces shape {shape}: {nbytes:,} bytes, "
                      f"only {available:,} follow)")
    data = fh.read(nbytes)
    if len(data) != nbytes:
        raise corrupt(source, f"{what} is truncated ({len(data):,} of {nbytes:,} bytes)")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C")


def read_npy(file: Path, source: str, size: int, limits: ReadLimits, num_points: int | None) -> np.ndarray:
    """The array ``(N, >=3)`` of a ``.npy`` file."""
    limits.check_bytes(size, source)
    with open_regular(file, source) as fh:
        shape, fortran, dtype = _header(fh, source, "the file")
        arr = _body(fh, shape, fortran, dtype, size - fh.tell(), source, "the array", limits)
    return file_array(arr, source, "the array")


def _pick_member(archive: zipfile.ZipFile, source: str) -> zipfile.ZipInfo:
    """The ``points.npy`` member, or the only member, of a ``.npz`` archive."""
    infos = [i for i in archive.infolist() if not i.is_dir()]
    arrays = {i.filename[:-4]: i for i in infos if i.filename.endswith(".npy")}
    if "points" in arrays:
        return arrays["points"]
    if len(infos) == 1:
        return infos[0]
    listed = ", ".join(sorted(arrays) or [i.filename for i in infos]) or "none"
    raise error(UnreadableFileError, source, f"holds arrays {listed} but none named 'points'",
                "save the cloud under the key 'points'")


def read_npz(file: Path, source: str, size: int, limits: ReadLimits, num_points: int | None) -> np.ndarray:
    """The ``points`` array (or the only array) of a ``.npz`` archive: ``(N, >=3)``."""
    limits.check_bytes(size, source)
    with open_regular(file, source) as fh:
        try:
            with zipfile.ZipFile(fh) as archive:
                info = _pick_member(archive, source)
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                what = f"array '{key}'"
                if not info.filename.endswith(".npy"):
                    raise corrupt(source, f"member {info.filename!r} is not a .npy array")
                limits.check_bytes(info.file_size, source, f"{what} inflates to")
                with archive.open(info) as member:
                    shape, fortran, dtype = _header(member, source, what)
                    available = info.file_size - member.tell()
                    arr = _body(member, shape, fortran, dtype, available, source, what, limits)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError,
                ValueError) as exc:
            msg = " ".join(str(exc).split())[:120]
            raise corrupt(source, f"not a valid .npz archive ({type(exc).__name__}: {msg})") from None
    return file_array(arr, source, what)
