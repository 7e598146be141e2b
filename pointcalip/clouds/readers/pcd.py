"""PCD files (``DATA ascii``, ``binary``, ``binary_compressed``), read with checked code (docs/method.md §1).

The header's point count (``POINTS``, or ``WIDTH × HEIGHT``; when both are given they
must agree) is checked against ``max_points`` and against the bytes after the header
before anything is allocated. A ``binary_compressed`` body is two little-endian ``uint32``
words (compressed size, uncompressed size) and an LZF stream that inflates to the fields
one after the other (all x, then all y, ...). The uncompressed size must equal
``points × bytes per point``, fit ``max_bytes``, and be reachable from the compressed
size (LZF expands at most 88-fold); :func:`lzf_decompress` never writes past it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from pointcalip.clouds._errors import corrupt, empty
from pointcalip.clouds.files import ReadLimits, data_rows, open_regular, text_chunks
from pointcalip.clouds.readers.text import parse_block

__all__ = ["read_pcd", "lzf_decompress", "LZF_MAX_RATIO"]

_HEADER_BYTES = 1 << 20
_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
          ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}
# One LZF back-reference of 3 input bytes yields at most 264 output bytes.
LZF_MAX_RATIO = 88


def lzf_decompress(data: bytes, out_size: int) -> bytes:
    """Inflate an LZF stream into exactly ``out_size`` bytes.

    Raises:
        ValueError: the stream is malformed, refers before the start of the output, would
            write more than ``out_size`` bytes, or ends short of it.
    """
    out = bytearray(out_size)
    ip, op, n = 0, 0, len(data)
    while ip < n:
        ctrl = data[ip]
        ip += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            run = ctrl + 1
            if ip + run > n or op + run > out_size:
                raise ValueError("literal run past the end of the stream or the output")
            out[op: op + run] = data[ip: ip + run]
            ip += run
            op += run
            continue
        length = ctrl >> 5
        if length == 7:
            if ip >= n:
                raise ValueError("stream ends inside a back-reference")
            length += data[ip]
            ip += 1
        length += 2
        if ip >= n:
            raise ValueError("stream ends inside a back-reference")
        ref = op - ((ctrl & 0x1F) << 8) - data[ip] - 1
        ip += 1
        if ref < 0 or op + length > out_size:
            raise ValueError("back-reference outside the output")
        dist = op - ref
        if dist >= length:
            out[op: op + length] = out[ref: ref + length]
        else:  # overlapping copy: the last `dist` bytes repeat
            pattern = bytes(out[ref:op])
            out[op: op + length] = (pattern * (length // dist + 1))[:length]
        op += length
    if op != out_size:
        raise ValueError(f"stream inflates to {op} bytes, expected {out_size}")
    return bytes(out)


def _header(head: bytes, source: str) -> Tuple[Dict[str, List[str]], int]:
    """Header fields (``FIELDS``, ``SIZE``, ...) and header length in bytes."""
    fields: Dict[str, List[str]] = {}
    offset = 0
    for raw in head[:_HEADER_BYTES].splitlines(keepends=True):
        offset += len(raw)
        words = raw.decode("latin-1").split()
        if not words or words[0].startswith("#"):
            continue
        fields[words[0].upper()] = words[1:]
        if words[0].upper() == "DATA":
            return fields, offset
    raise corrupt(source, "not a PCD file or its header is truncated (no DATA line)")


def _int(fields: Dict[str, List[str]], key: str, source: str) -> int:
    try:
        value = int(fields[key][0])
    except (KeyError, IndexError, ValueError):
        raise corrupt(source, f"PCD header has no valid {key} line") from None
    if value < 0:
        raise corrupt(source, f"PCD header {key} is negative ({value})")
    return value


def _layout(fields: Dict[str, List[str]], source: str) -> List[Tuple[str, str, int]]:
    """``[(name, numpy type, count)]`` of the PCD fields."""
    names = fields.get("FIELDS", [])
    sizes = fields.get("SIZE", [])
    types = fields.get("TYPE", [])
    counts = fields.get("COUNT", ["1"] * len(names))
    if not names or not (len(sizes) == len(types) == len(counts) == len(names)):
        raise corrupt(source, "PCD header FIELDS/SIZE/TYPE/COUNT lines do not match")
    out = []
    for name, size, kind, count in zip(names, sizes, types, counts):
        try:
            code = _TYPES[(kind.upper(), int(size))]
            n = int(count)
        except (KeyError, ValueError):
            raise corrupt(source, f"PCD field {name!r} has a bad SIZE/TYPE/COUNT ({size} {kind} {count})") from None
        if n < 1 or n > 1 << 16:
            raise corrupt(source, f"PCD field {name!r} has a bad COUNT {count}")
        out.append((name, code, n))
    if not {"x", "y", "z"} <= {name for name, _, _ in out}:
        raise corrupt(source, "PCD file has no x y z fields")
    return out


def _point_count(fields: Dict[str, List[str]], source: str) -> int:
    if "POINTS" in fields:
        points = _int(fields, "POINTS", source)
        if "WIDTH" in fields and "HEIGHT" in fields:
            grid = _int(fields, "WIDTH", source) * _int(fields, "HEIGHT", source)
            if grid != points:
                raise corrupt(source, f"PCD header disagrees with itself (WIDTH x HEIGHT = {grid:,}, "
                              f"POINTS = {points:,})")
        return points
    return _int(fields, "WIDTH", source) * _int(fields, "HEIGHT", source)


def read_pcd(file: Path, source: str, size: int, limits: ReadLimits, num_points: int | None) -> np.ndarray:
    """Points ``float64 (N, 3)`` of a PCD file."""
    limits.check_bytes(size, source)
    with open_regular(file, source) as fh:
        fields, length = _header(fh.read(_HEADER_BYTES), source)
        layout = _layout(fields, source)
        points = _point_count(fields, source)
        limits.check_points(points, source)
        kind = (fields["DATA"] or [""])[0].lower()
        row = sum(np.dtype(code).itemsize * n for _, code, n in layout)
        body = size - length
        fh.seek(length)
        if kind == "ascii":
            values = sum(n for _, _, n in layout)
            if points * 2 * values > body:
                raise _short(source, points, size)
            if points == 0:
                raise empty(source, "the PCD file has 0 points")
            return _ascii(fh, layout, points, source)
        if kind not in ("binary", "binary_compressed"):
            raise corrupt(source, f"unknown PCD DATA type {kind!r}")
        if points == 0:
            raise empty(source, "the PCD file has 0 points")
        if kind == "binary":
            if points * row > body:
                raise _short(source, points, size)
            data = fh.read(points * row)
            dtype = np.dtype([(f"f{i}", "<" + code, (n,)) for i, (_, code, n) in enumerate(layout)])
            rows = np.frombuffer(data, dtype=dtype, count=points)
            columns = {name: rows[f"f{i}"][:, 0] for i, (name, _, _) in enumerate(layout)}
        else:
            columns = _compressed(fh, layout, points, row, body, source, limits)
    return np.stack([np.asarray(columns[k], dtype=np.float64) for k in "xyz"], axis=1)


def _short(source: str, points: int, size: int) -> Exception:
    return corrupt(source, f"file is truncated (the PCD header promises {points:,} points, the file has "
                   f"only {size:,} bytes)")


def _ascii(fh, layout: List[Tuple[str, str, int]], points: int, source: str) -> np.ndarray:
    """x y z ``(points, 3)`` of an ASCII PCD body."""
    starts, pos = {}, 0
    for name, _, n in layout:
        starts[name] = pos
        pos += n
    cols = [starts["x"], starts["y"], starts["z"]]
    blocks, have = [], 0
    for start, lines in text_chunks(fh, source):
        rows = data_rows(lines, start)[: points - have]
        have += len(rows)
        blocks.append(parse_block(rows, None, source, pos, tuple(cols)))
        if have == points:
            break
    if have < points:
        raise corrupt(source, f"file is truncated (header promises {points} points, found {have} rows)")
    return np.concatenate(blocks)


def _compressed(fh, layout, points: int, row: int, body: int, source: str, limits: ReadLimits) -> dict:
    """Field columns of a ``binary_compressed`` body, inflated within checked bounds."""
    words = np.frombuffer(fh.read(8), dtype="<u4")
    if len(words) < 2:
        raise corrupt(source, "compressed PCD data is truncated (no size words)")
    packed, raw = int(words[0]), int(words[1])
    if raw != points * row:
        raise corrupt(source, f"compressed PCD data inflates to {raw:,} bytes, but {points:,} points need "
                      f"{points * row:,}")
    if packed > body - 8:
        raise corrupt(source, f"compressed PCD data is truncated ({body - 8:,} of {packed:,} bytes)")
    limits.check_bytes(raw, source, "the compressed PCD data inflates to")
    if raw > LZF_MAX_RATIO * packed + 8:
        raise corrupt(source, f"compressed PCD data claims {raw:,} bytes, more than {packed:,} LZF bytes "
                      "can hold")
    try:
        data = lzf_decompress(fh.read(packed), raw)
    except ValueError as exc:
        raise corrupt(source, f"compressed PCD data is corrupt ({exc})") from None
    columns, offset = {}, 0
    for name, code, n in layout:
        width = np.dtype(code).itemsize * n * points
        block = np.frombuffer(data, dtype="<" + code, count=n * points, offset=offset).reshape(points, n)
        columns[name] = block[:, 0]
        offset += width
    return columns
