"""Point-cloud file readers, one module per format family, and the extension table (docs/method.md §1).

Every reader has the signature ``reader(file, source, size, limits, num_points) -> raw``:
``file`` a checked regular file of ``size`` bytes, ``source`` its name for messages,
``limits`` the :class:`~pointcalip.clouds.files.ReadLimits`, ``num_points`` the requested
count (meshes draw :func:`~pointcalip.clouds.readers.mesh.mesh_sample_count` surface
points for it). ``raw`` is ``float64 (N, 3)``, not yet validated.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

from pointcalip.clouds.files import ReadLimits
from pointcalip.clouds.readers.mesh import read_obj, read_off, read_stl
from pointcalip.clouds.readers.numpy import read_npy, read_npz
from pointcalip.clouds.readers.pcd import read_pcd
from pointcalip.clouds.readers.ply import read_ply
from pointcalip.clouds.readers.text import read_pts, read_table, read_xyz

__all__ = ["Reader", "READERS", "POINT_EXTENSIONS", "MESH_EXTENSIONS", "SUPPORTED_EXTENSIONS", "HEADERLESS"]

Reader = Callable[[Path, str, int, ReadLimits, Optional[int]], np.ndarray]

# Extension (lower case) -> reader. The order is the order users see in messages.
READERS: Dict[str, Reader] = {
    ".ply": read_ply,
    ".pcd": read_pcd,
    ".xyz": read_xyz,
    ".xyzn": partial(read_xyz, columns=6),
    ".xyzrgb": partial(read_xyz, columns=6),
    ".pts": read_pts,
    ".txt": read_table,
    ".csv": read_table,
    ".npy": read_npy,
    ".npz": read_npz,
    ".obj": read_obj,
    ".off": read_off,
    ".stl": read_stl,
}
MESH_EXTENSIONS = (".obj", ".off", ".stl")
POINT_EXTENSIONS = tuple(ext for ext in READERS if ext not in MESH_EXTENSIONS)
SUPPORTED_EXTENSIONS = POINT_EXTENSIONS + MESH_EXTENSIONS
# Plain-text formats without a header: an empty file is a valid cloud with no points
# (EmptyCloudError); for the others a 0-byte file is broken (UnreadableFileError).
HEADERLESS = (".xyz", ".xyzn", ".xyzrgb", ".txt", ".csv", ".obj")
