"""``classify`` outputs: one row per input, where rows go (JSON lines, a streamed JSON array,
a table), resuming an interrupted ``--output`` and merging the part files of ``torchrun`` ranks."""

from __future__ import annotations

import heapq
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from pointcalip.cli.classify_inputs import Item
from pointcalip.errors import ConfigError

_log = logging.getLogger("pointcalip")


@dataclass
class Row:
    """One input's result: ``topk`` ``[(label, prob)]`` or an ``error`` line."""

    path: str
    n_points: Optional[int] = None
    topk: List[Tuple[str, float]] = field(default_factory=list)
    error: Optional[str] = None
    up_axis: Optional[str] = None
    outliers: Optional[int] = None
    index: int = -1

    def to_dict(self, up_axis: bool = False, outliers: bool = False, index: bool = False) -> Dict[str, Any]:
        """The JSON row ``{"path", "topk": [{"label", "prob"}], "n_points", "error"}`` (+ the asked extras)."""
        out: Dict[str, Any] = {"path": self.path, "topk": [{"label": lab, "prob": p} for lab, p in self.topk],
                               "n_points": self.n_points, "error": self.error}
        if up_axis:
            out["up_axis"] = self.up_axis
        if outliers:
            out["outliers"] = self.outliers
        if index:
            out["index"] = self.index
        return out


# --------------------------------------------------------------------------- output


def format_row(r: Row, width: int = 5) -> str:
    """Table lines of one row: path, points, up axis (and outliers), then the ranked classes."""
    if r.error is not None:
        return f"error: {r.error}"  # the message names the file
    extra = f", up {r.up_axis}" if r.up_axis is not None else ""
    if r.outliers:
        extra += f", {r.outliers} outliers dropped"
    lines = [f"{r.path} ({r.n_points} points{extra})"]
    lines.extend(f"  {i}. {lab:<{width}}  {p:7.2%}" for i, (lab, p) in enumerate(r.topk, start=1))
    return "\n".join(lines)


class Sink:
    """Where finished rows go (in input order)."""

    def write(self, rows: Sequence[Row]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonlSink(Sink):
    """One JSON line per row, appended and flushed after every batch (a kill loses at most a line)."""

    def __init__(self, path: Path, append: bool, keys: Dict[str, bool]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a" if append else "w", encoding="utf-8")
        self.keys = keys

    def write(self, rows: Sequence[Row]) -> None:
        if rows:
            self.file.write("".join(json.dumps(r.to_dict(**self.keys)) + "\n" for r in rows))
            self.file.flush()

    def close(self) -> None:
        self.file.close()


class JsonArraySink(Sink):
    """A JSON array on ``stream``: ``[`` at once, each element when done, ``]`` at the end."""

    def __init__(self, stream: TextIO, keys: Dict[str, bool]) -> None:
        self.stream, self.keys, self.first = stream, keys, True
        stream.write("[")
        stream.flush()

    def write(self, rows: Sequence[Row]) -> None:
        for r in rows:
            self.stream.write(("\n  " if self.first else ",\n  ") + json.dumps(r.to_dict(**self.keys)))
            self.first = False
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n]\n" if not self.first else "]\n")
        self.stream.flush()


class TableSink(Sink):
    def __init__(self, stream: TextIO, width: int) -> None:
        self.stream, self.width = stream, width

    def write(self, rows: Sequence[Row]) -> None:
        for r in rows:
            self.stream.write(format_row(r, self.width) + "\n")
        self.stream.flush()


# ---------------------------------------------------------------------- resume


def truncate_to_complete_lines(path: Path) -> int:
    """Cut ``path`` after its last newline (a line cut short by a kill); returns the complete lines."""
    lines, keep, pos = 0, 0, 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            n = chunk.count(b"\n")
            if n:
                lines += n
                keep = pos + chunk.rindex(b"\n") + 1
            pos += len(chunk)
    if keep != pos:
        _log.warning("%s: dropping a last line cut short (%d bytes); it is redone", path, pos - keep)
        with open(path, "r+b") as f:
            f.truncate(keep)
    return lines


def done_rows(path: Path, count: int) -> Iterator[Dict[str, Any]]:
    """The first ``count`` JSON rows of ``path``, lazily."""
    with open(path, "r", encoding="utf-8") as f:
        for number in range(1, count + 1):
            line = f.readline()
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise ConfigError(f"{path}: line {number} is not a JSON row; it is not a classify output: "
                                  f"use another --output or drop --resume") from None
            if not isinstance(row, dict) or "path" not in row:
                raise ConfigError(f"{path}: line {number} is not a classify row; use another --output or drop --resume")
            yield row


def skip_done(items: Iterator[Item], path: Path, done: int, check_index: bool) -> int:
    """Consume from ``items`` the ``done`` inputs already in ``path``, checking that they match.

    The rows of an output are a prefix of the inputs (rows are written in input order), so
    checking path by path (and index by index in part files) needs no memory.
    """
    for n, row in enumerate(done_rows(path, done), start=1):
        item = next(items, None)
        if item is None:
            raise ConfigError(f"{path} has more rows ({done}) than there are inputs; it belongs to another "
                              f"input list: use another --output or drop --resume")
        if row["path"] != item.path or (check_index and row.get("index") != item.index):
            raise ConfigError(f"{path}: row {n} is {row['path']!r} but input {item.index + 1} is {item.path!r}; "
                              f"the file belongs to another input list: use another --output or drop --resume")
    return done


def part_path(out: Path, rank: int, world: int) -> Path:
    """``OUT.jsonl.part-RANK-of-WORLD``: one rank's rows under ``torchrun``."""
    return out.with_name(f"{out.name}.part-{rank}-of-{world}")


def seed_part_from_output(out: Path, part: Path, rank: int, world: int) -> None:
    """Resume under ``torchrun`` after a finished merge: this rank's rows of OUT.jsonl become its part file."""
    done = truncate_to_complete_lines(out)
    with open(part, "w", encoding="utf-8") as f:
        for i, row in enumerate(done_rows(out, done)):
            if i % world == rank:
                row["index"] = i
                f.write(json.dumps(row) + "\n")


def merge_parts(out: Path, world: int) -> Tuple[int, int]:
    """Merge the ``world`` part files into ``out`` in input order (atomically), then delete them.

    Returns:
        ``(rows, failed)``.
    """
    from pointcalip.atomic import atomic_open

    parts = [part_path(out, r, world) for r in range(world)]
    files = [open(p, "r", encoding="utf-8") if p.exists() else io.StringIO("") for p in parts]

    def keyed(f: TextIO) -> Iterator[Tuple[int, Dict[str, Any]]]:
        for line in f:
            row = json.loads(line)
            yield int(row.pop("index")), row

    rows = failed = 0
    try:
        with atomic_open(out, "w") as dst:
            for _, row in heapq.merge(*(keyed(f) for f in files), key=lambda t: t[0]):
                dst.write(json.dumps(row) + "\n")
                rows += 1
                failed += row.get("error") is not None
    finally:
        for f in files:
            f.close()
    for p in parts:
        p.unlink(missing_ok=True)
    return rows, failed
