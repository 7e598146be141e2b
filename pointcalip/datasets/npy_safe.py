"""Reading ``.npy`` files that hold pickled dicts, without running arbitrary pickles (docs/method.md §7).

OpenShape's processed Objaverse release stores one ``np.save(path, dict)`` per object: a
0-d object array whose pickle holds a dict of numpy arrays, strings, lists and nested dicts.
``np.load(path, allow_pickle=True)`` would execute whatever a (malicious or corrupted)
file asks for. :func:`load_npy` instead unpickles with an allow-list: only numpy's array,
dtype and scalar reconstruction (and ``collections.OrderedDict``, ``_codecs.encode``) may be referenced; any
other global is refused with a :class:`DatasetError` naming the file. Built-in containers
(dict, list, tuple, str, bytes, numbers) need no globals and load as usual. Plain
(non-object) ``.npy`` files are read by ``np.load`` with ``allow_pickle=False``.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npformat

from pointcalip.errors import DatasetError
from pointcalip._types import PathLike


# (module, name) pairs a pickle may reference. numpy 2 pickles name "numpy._core...",
# numpy 1 pickles "numpy.core..."; both resolve to the same objects.
ALLOWED_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol-2 pickles build bytes as encode(str, "latin1")
})  # fmt: skip


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and numpy dtype classes."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            if module.startswith("numpy.core"):  # numpy 1 name: use the numpy 2 module when it exists
                try:
                    return getattr(importlib.import_module("numpy._core" + module[len("numpy.core"):]), name)
                except (ImportError, AttributeError):
                    pass
            return getattr(importlib.import_module(module), name)
        if module == "numpy.dtypes" and name.endswith("DType"):  # numpy >= 1.25 dtype classes
            obj = getattr(importlib.import_module("numpy.dtypes"), name, None)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                return obj
        raise DatasetError(
            f"{self._source}: refusing to unpickle {module}.{name} (only numpy arrays, numbers, strings, "
            "lists and dicts are allowed); the file is not a processed point cloud from a trusted release"
        )


def _read_header(f: io.BufferedIOBase, source: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = npformat.read_magic(f)
    if version == (1, 0):
        return npformat.read_array_header_1_0(f)
    if version == (2, 0):
        return npformat.read_array_header_2_0(f)
    return npformat._read_array_header(f, version)  # (3, 0): utf-8 header, same fields


def load_npy(path: PathLike) -> Any:
    """The content of the ``.npy`` file ``path``: an array, or the object a 0-d object array holds.

    Object arrays are unpickled with the allow-list described in the module docstring, so a
    dict saved with ``np.save`` comes back as that dict. Raises :class:`DatasetError` for a
    missing, truncated, non-``.npy`` or disallowed file.
    """
    path = Path(path)
    source = str(path)
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype = _read_header(f, source)
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            value = _RestrictedUnpickler(f, source).load()
    except DatasetError:
        raise
    except FileNotFoundError as exc:
        raise DatasetError(f"{source}: file not found") from exc
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, TypeError, AttributeError, IndexError) as exc:
        raise DatasetError(f"{source}: not a readable .npy file ({type(exc).__name__}: {exc})") from exc
    if isinstance(value, np.ndarray) and value.dtype.hasobject and value.shape == ():
        return value.item()
    if isinstance(value, np.ndarray) and value.shape != tuple(shape):
        raise DatasetError(f"{source}: header says shape {shape} but the data has {value.shape}")
    return value
