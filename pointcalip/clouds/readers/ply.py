"""PLY files, ASCII and binary, read with numpy (docs/method.md §1).

The header is parsed and every element count is checked against the bytes that follow
it (a binary row needs its fixed-size properties plus one count per list; an ASCII row
needs two bytes per property) and the vertex count against ``max_points``, before
anything is allocated. A PLY with a non-empty ``face`` element is a mesh and is sampled
by area (:mod:`pointcalip.clouds.readers.mesh`); polygons are split into triangle fans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Tuple

import numpy as np

from pointcalip.clouds._errors import corrupt, empty, quote
from pointcalip.clouds.files import ReadLimits, decode_text, open_regular, read_all
from pointcalip.clouds.readers.mesh import fan_triangles, mesh_points

__all__ = ["read_ply", "PLY_TYPES"]

PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}
_HEADER_BYTES = 1 << 20


@dataclass
class _Property:
    name: str
    type: str  # numpy code without byte order, e.g. "f4"
    count_type: str | None = None  # lists: type of the length prefix


@dataclass
class _Element:
    name: str
    count: int
    props: List[_Property] = field(default_factory=list)

    @property
    def has_lists(self) -> bool:
        return any(p.count_type for p in self.props)

    def min_binary_row(self) -> int:
        """Fewest bytes one binary row can take (lists empty)."""
        return sum(np.dtype(p.count_type or p.type).itemsize for p in self.props)


def _parse_header(data: bytes, source: str) -> Tuple[str, int, List[_Element]]:
    """``(format, header length in bytes, elements)`` of a PLY file."""
    if not data.startswith(b"ply"):
        raise corrupt(source, "not a PLY file (it does not start with 'ply')")
    end = re.search(rb"end_header[ \t]*\r?\n", data[:_HEADER_BYTES])
    if end is None:
        raise corrupt(source, "PLY header is truncated (no 'end_header' line)")
    text = decode_text(data[: end.start()], source)
    fmt, elements = "", []
    for line in text.splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(_Element(words[1], int(words[2])))
        elif words[0] == "property" and elements and len(words) == 5 and words[1] == "list" \
                and words[2] in PLY_TYPES and words[3] in PLY_TYPES and PLY_TYPES[words[2]][0] in "iu":
            elements[-1].props.append(_Property(words[4], PLY_TYPES[words[3]], PLY_TYPES[words[2]]))
        elif words[0] == "property" and elements and len(words) == 3 and words[1] in PLY_TYPES:
            elements[-1].props.append(_Property(words[2], PLY_TYPES[words[1]]))
        else:
            raise corrupt(source, f"bad PLY header line {quote(line)}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise corrupt(source, f"unknown PLY format {fmt!r}")
    return fmt, end.end(), elements


# ------------------------------------------------------------------------ binary


def _binary_element(body: bytes, offset: int, element: _Element, order: str, source: str) -> Tuple[dict, int]:
    """Columns of one binary element starting at ``offset``; returns ``(columns, new offset)``.

    Fixed-size rows are one ``np.frombuffer``; rows with lists take a fast path when every
    list has the length of the first row's, otherwise a per-row loop.
    """
    if element.count == 0:
        return {}, offset
    if not element.has_lists:
        dtype = np.dtype([(f"p{i}", order + p.type) for i, p in enumerate(element.props)])
        need = dtype.itemsize * element.count
        if offset + need > len(body):
            raise _truncated(source, element, len(body) - offset, need)
        rows = np.frombuffer(body, dtype=dtype, count=element.count, offset=offset)
        return {p.name: rows[f"p{i}"] for i, p in enumerate(element.props)}, offset + need
    # guess every list has the first row's length
    lengths, pos = [], offset
    for p in element.props:
        if p.count_type:
            ct = np.dtype(order + p.count_type)
            if pos + ct.itemsize > len(body):
                raise _truncated(source, element, len(body) - offset, element.min_binary_row())
            n = int(np.frombuffer(body, dtype=ct, count=1, offset=pos)[0])
            if n < 0:
                raise corrupt(source, f"PLY {element.name} list has a negative length")
            lengths.append(n)
            pos += ct.itemsize + n * np.dtype(p.type).itemsize
        else:
            pos += np.dtype(p.type).itemsize
    fields, it = [], iter(lengths)
    for i, p in enumerate(element.props):
        if p.count_type:
            fields += [(f"n{i}", order + p.count_type), (f"p{i}", order + p.type, (next(it),))]
        else:
            fields.append((f"p{i}", order + p.type))
    dtype = np.dtype(fields)
    need = dtype.itemsize * element.count
    if offset + need <= len(body):
        rows = np.frombuffer(body, dtype=dtype, count=element.count, offset=offset)
        it = iter(lengths)
        if all((rows[f"n{i}"] == next(it)).all() for i, p in enumerate(element.props) if p.count_type):
            return {p.name: rows[f"p{i}"] for i, p in enumerate(element.props)}, offset + need
    return _binary_rows(body, offset, element, order, source)


def _binary_rows(body: bytes, offset: int, element: _Element, order: str, source: str) -> Tuple[dict, int]:
    """Slow path: rows with lists of varying length, one at a time."""
    columns: dict = {p.name: [] for p in element.props}
    for _ in range(element.count):
        for p in element.props:
            if p.count_type:
                ct = np.dtype(order + p.count_type)
                if offset + ct.itemsize > len(body):
                    raise corrupt(source, f"file is truncated inside the PLY {element.name} element")
                n = int(np.frombuffer(body, dtype=ct, count=1, offset=offset)[0])
                offset += ct.itemsize
                vt = np.dtype(order + p.type)
                if n < 0 or offset + n * vt.itemsize > len(body):
                    raise corrupt(source, f"file is truncated inside the PLY {element.name} element")
                columns[p.name].append(np.frombuffer(body, dtype=vt, count=n, offset=offset))
                offset += n * vt.itemsize
            else:
                vt = np.dtype(order + p.type)
                if offset + vt.itemsize > len(body):
                    raise corrupt(source, f"file is truncated inside the PLY {element.name} element")
                columns[p.name].append(np.frombuffer(body, dtype=vt, count=1, offset=offset)[0])
                offset += vt.itemsize
    return columns, offset


def _truncated(source: str, element: _Element, have: int, need: int) -> Exception:
    return corrupt(source, f"file is truncated (the PLY {element.name} element needs at least {need:,} bytes, "
                   f"{max(have, 0):,} are left)")


# ------------------------------------------------------------------------- ascii


def _ascii_elements(body: bytes, elements: List[_Element], source: str, first_line: int) -> dict:
    """Columns of every element of an ASCII body: ``{element name: {property: values}}``."""
    lines = [ln for ln in decode_text(body, source, first_line).split("\n") if ln.strip()]
    need = sum(e.count for e in elements)
    if len(lines) < need:
        raise corrupt(source, f"file is truncated (header promises {need} rows, found {len(lines)})")
    out, start = {}, 0
    for element in elements:
        rows = lines[start: start + element.count]
        start += element.count
        out[element.name] = _ascii_rows(rows, element, source)
    return out


def _ascii_rows(rows: List[str], element: _Element, source: str) -> dict:
    """Columns of one ASCII element (lists as lists of arrays)."""
    if not element.has_lists:
        try:
            arr = np.loadtxt(rows, ndmin=2, dtype=np.float64, comments=None) if rows else np.zeros((0, 0))
        except ValueError:
            raise corrupt(source, f"a PLY {element.name} row is not {len(element.props)} numbers") from None
        if rows and arr.shape[1] < len(element.props):
            raise corrupt(source, f"a PLY {element.name} row has fewer than {len(element.props)} numbers")
        return {p.name: arr[:, i] for i, p in enumerate(element.props)}
    columns: dict = {p.name: [] for p in element.props}
    for row in rows:
        words = row.split()
        pos = 0
        try:
            for p in element.props:
                if p.count_type:
                    n = int(words[pos])
                    if n < 0 or pos + 1 + n > len(words):
                        raise ValueError
                    columns[p.name].append(np.array([float(w) for w in words[pos + 1: pos + 1 + n]]))
                    pos += 1 + n
                else:
                    columns[p.name].append(float(words[pos]))
                    pos += 1
        except (ValueError, IndexError):
            raise corrupt(source, f"bad PLY {element.name} row {quote(row)}") from None
    return columns


# ------------------------------------------------------------------------ reader


def _faces(values, source: str) -> np.ndarray:
    """Triangles ``int64 (F, 3)`` from a face column (an array ``(F, n)`` or a list of arrays)."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        polygons = [values]
    else:
        polygons = [np.asarray(v).reshape(1, -1) for v in values]
    tris = []
    for poly in polygons:
        if poly.size and not np.isfinite(poly).all():
            raise corrupt(source, "a PLY face has a non-integer vertex index")
        tris.append(fan_triangles(poly.astype(np.int64)))
    return np.concatenate(tris) if tris else np.zeros((0, 3), np.int64)


def read_ply(file: Path, source: str, size: int, limits: ReadLimits, num_points: int | None) -> np.ndarray:
    """Points of a PLY cloud ``(N, 3)``, or surface samples of a PLY mesh."""
    limits.check_bytes(size, source)
    with open_regular(file, source) as fh:
        fmt, length, elements = _parse_header(fh.read(_HEADER_BYTES), source)
    vertex = next((e for e in elements if e.name == "vertex"), None)
    names = [p.name for p in vertex.props] if vertex else []
    if vertex is None or not {"x", "y", "z"} <= set(names):
        raise corrupt(source, "PLY file has no vertex element with x y z properties")
    if any(p.count_type for p in vertex.props if p.name in ("x", "y", "z")):
        raise corrupt(source, "PLY vertex x y z are lists, not numbers")
    limits.check_points(vertex.count, source, "vertices")
    body_bytes = size - length
    if fmt == "ascii":
        need = sum(e.count * 2 * len(e.props) for e in elements)  # "0 " per value at least
    else:
        need = sum(e.count * e.min_binary_row() for e in elements)
    if need > body_bytes:
        raise corrupt(source, f"file is truncated (the PLY header needs at least {length + need:,} bytes, "
                      f"the file has {size:,})")
    if vertex.count == 0:
        raise empty(source, "the PLY file has 0 vertices")
    data = read_all(file, source, size, limits)  # every count checked against the size above
    if fmt == "ascii":
        first_line = data[:length].count(b"\n") + 1
        columns = _ascii_elements(data[length:], elements, source, first_line)
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        columns, offset = {}, length
        for element in elements:
            columns[element.name], offset = _binary_element(data, offset, element, order, source)
    v = columns["vertex"]
    points = np.stack([np.asarray(v[k], dtype=np.float64) for k in "xyz"], axis=1)
    face = next((e for e in elements if e.name == "face"), None)
    if face is None or face.count == 0:
        return points
    lists = [p for p in face.props if p.count_type]
    if not lists:
        raise corrupt(source, "PLY face element has no vertex index list")
    index = next((p for p in lists if p.name in ("vertex_indices", "vertex_index")), lists[0])
    return mesh_points(points, _faces(columns["face"][index.name], source), source, num_points)
