"""Plain-text point formats: ``.xyz .xyzn .xyzrgb .pts .txt .csv`` (docs/method.md §1).

* ``.xyz`` rows ``x y z``; ``.xyzn`` and ``.xyzrgb`` rows of 6 numbers (normals or
  colours follow x y z).
* ``.pts``: the first data line is the point count, then one ``x y z ...`` row per point.
* ``.txt .csv``: columns separated by whitespace, ``,`` or ``;``; the first three are x y z;
  one header line of words may lead.

``#`` and ``//`` lines are comments everywhere. Files are read in bounded chunks
(:func:`~pointcalip.clouds.files.text_chunks`), so neither a huge file nor a file of NUL
bytes is ever held whole in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np

from pointcalip.clouds._errors import corrupt, empty, error, quote
from pointcalip.clouds.files import ReadLimits, data_rows, open_regular, text_chunks
from pointcalip.errors import UnreadableFileError

__all__ = ["read_table", "read_xyz", "read_pts", "parse_rows", "parse_block", "XYZ_COLUMNS"]

Rows = List[Tuple[int, str]]
# Numbers per row of the xyz family.
XYZ_COLUMNS = {".xyz": 3, ".xyzn": 6, ".xyzrgb": 6}


def split_fields(line: str, delimiter: str | None) -> list[str]:
    """Fields of one table row; empty trailing fields (``1,2,3,``) are dropped."""
    fields = [f.strip() for f in line.split(delimiter)]
    while fields and not fields[-1]:
        fields.pop()
    return fields


def is_numeric(fields: list[str]) -> bool:
    """Whether every field parses as a float."""
    try:
        [float(f) for f in fields]
    except ValueError:
        return False
    return True


def parse_rows(rows: Rows, delimiter: str | None, source: str, columns: int = 3) -> np.ndarray:
    """Parse rows one by one (slow path), raising on the first bad line: ``float64 (N, columns)``."""
    out = []
    for number, line in rows:
        fields = split_fields(line, delimiter)
        if not is_numeric(fields[:columns]):
            raise corrupt(source, f"line {number} {quote(line)} is not numbers")
        if len(fields) < columns:
            fix = "write one 'x y z' row per point" if columns == 3 else f"write {columns} numbers per row"
            raise error(UnreadableFileError, source,
                        f"line {number} has {len(fields)} column(s), need at least {columns}", fix)
        out.append([float(f) for f in fields[:columns]])
    return np.asarray(out, dtype=np.float64).reshape(-1, columns)


def parse_block(rows: Rows, delimiter: str | None, source: str, columns: int = 3,
                use: Tuple[int, int, int] = (0, 1, 2)) -> np.ndarray:
    """Rows of at least ``columns`` numbers -> columns ``use`` (x y z), ``float64 (N, 3)``.

    A vectorised parse first; on any irregularity the slow path names the bad line.
    """
    if not rows:
        return np.zeros((0, 3))
    try:
        arr = np.loadtxt([r for _, r in rows], delimiter=delimiter, ndmin=2, dtype=np.float64, comments=None)
    except ValueError:
        arr = None
    if arr is None or arr.shape[1] < columns or arr.shape[0] != len(rows):
        arr = parse_rows(rows, delimiter, source, columns)
    return arr[:, list(use)]


def _stack(blocks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0]


def read_table(file: Path, source: str, size: int, limits: ReadLimits, num_points: int | None) -> np.ndarray:
    """Points of a ``.txt``/``.csv`` table: ``float64 (N, 3)``."""
    blocks, total = [], 0
    delimiter: str | None = None
    first = True
    with open_regular(file, source) as fh:
        for start, lines in text_chunks(fh, source):
            rows = data_rows(lines, start)
            if first and rows:
                first = False
                head = rows[0][1]
                delimiter = "," if "," in head else (";" if ";" in head else None)
                if not is_numeric(split_fields(head, delimiter)):
                    rows = rows[1:]  # a header line such as "x,y,z"
            total += len(rows)
            limits.check_points(total, source, "rows")
            blocks.append(parse_block(rows, delimiter, source))
    if total == 0:
        raise empty(source, "the file has no data rows")
    return _stack(blocks)


def read_xyz(file: Path, source: str, size: int, limits: ReadLimits, num_points: int | None,
             columns: int = 3) -> np.ndarray:
    """Points of ``.xyz`` (``columns=3``), ``.xyzn``/``.xyzrgb`` (``columns=6``): ``float64 (N, 3)``."""
    blocks, total = [], 0
    with open_regular(file, source) as fh:
        for start, lines in text_chunks(fh, source):
            rows = data_rows(lines, start)
            total += len(rows)
            limits.check_points(total, source, "rows")
            blocks.append(parse_block(rows, None, source, columns))
    if total == 0:
        raise empty(source, "the file has no data rows")
    return _stack(blocks)


def read_pts(file: Path, source: str, size: int, limits: ReadLimits, num_points: int | None) -> np.ndarray:
    """Points of a ``.pts`` file (first data line: the count): ``float64 (count, 3)``."""
    blocks, have, count = [], 0, None
    with open_regular(file, source) as fh:
        for start, lines in text_chunks(fh, source):
            rows = data_rows(lines, start)
            if count is None and rows:
                number, head = rows[0]
                if not head.isdigit():
                    raise corrupt(source, f"line {number} {quote(head)} should be the point count")
                count = int(head)
                limits.check_points(count, source)
                if count * 6 > size:  # every row needs at least "0 0 0\n"
                    raise corrupt(source, f"file is truncated (header promises {count:,} points, "
                                  f"the file has only {size:,} bytes)")
                rows = rows[1:]
            if count is not None:
                rows = rows[: count - have]
                have += len(rows)
                blocks.append(parse_block(rows, None, source))
                if have == count:
                    break
    if count is None:
        raise empty(source, "the file has no data rows")
    if count == 0:
        raise empty(source, "the .pts file has 0 points")
    if have < count:
        raise corrupt(source, f"file is truncated (header promises {count} points, found {have} rows)")
    return _stack(blocks)
