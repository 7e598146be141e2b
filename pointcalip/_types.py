"""Type aliases shared by the package (one definition each)."""

from __future__ import annotations

import os
from typing import Union

#: A file or folder given as a string or any ``os.PathLike``.
PathLike = Union[str, "os.PathLike[str]"]
