"""Safe access to untrusted files: regular files only, bounded reads, checked text (docs/method.md §1).

Nothing here ever opens a FIFO, a device or a socket: the path is ``stat``-ed first and
only regular files go on; the file is then opened with ``O_NONBLOCK`` and ``fstat``-ed
again, so a file swapped for a FIFO in between cannot block either. Sizes are checked
against :class:`ReadLimits` before anything is read, and text is read in bounded chunks
that are refused as soon as they hold binary bytes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, List, Tuple

from pointcalip.clouds._errors import corrupt, error
from pointcalip.errors import ConfigError, MissingFileError, ReadLimitError, UnreadableFileError

__all__ = ["ReadLimits", "DEFAULT_LIMITS", "check_regular_file", "open_regular", "read_all", "text_chunks"]

CHUNK_BYTES = 1 << 22  # text is decoded and parsed 4 MiB at a time
# Bytes that may appear in a text file: printable ASCII, tab/newline/CR/VT/FF, DOS EOF
# (0x1a), ESC (0x1b) and every byte >= 0x80 (UTF-8 or Latin-1). Anything else is binary.
_TEXT_BYTES = bytes([9, 10, 11, 12, 13, 0x1A, 0x1B]) + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))


@dataclass(frozen=True)
class ReadLimits:
    """Upper bounds a file must respect before anything is allocated for it.

    Attributes:
        max_points: most points (vertices, rows, array rows) a file may declare or hold
            (CLI ``--max-points``).
        max_bytes: largest file, and largest decompressed payload, in bytes (CLI
            ``--max-bytes``).
    """

    max_points: int = 50_000_000
    max_bytes: int = 2 * 1024**3

    def __post_init__(self) -> None:
        for name in ("max_points", "max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ReadLimits.{name} must be a positive integer, got {value!r}")

    def check_points(self, count: int, source: str, what: str = "points") -> None:
        """Raise :class:`ReadLimitError` when ``count`` is above :attr:`max_points`."""
        if count > self.max_points:
            raise error(ReadLimitError, source, f"the file has {count:,} {what}, more than the limit of "
                        f"{self.max_points:,} points", "raise the limit with --max-points "
                        "(ReadLimits(max_points=...)) if the file is genuine")

    def check_bytes(self, count: int, source: str, what: str = "the file is") -> None:
        """Raise :class:`ReadLimitError` when ``count`` bytes are above :attr:`max_bytes`."""
        if count > self.max_bytes:
            raise error(ReadLimitError, source, f"{what} {count:,} bytes, more than the limit of "
                        f"{self.max_bytes:,} bytes", "raise the limit with --max-bytes "
                        "(ReadLimits(max_bytes=...)) if the file is genuine")


DEFAULT_LIMITS = ReadLimits()


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_regular(source: str, mode: int) -> UnreadableFileError:
    what = _kind(mode)
    return error(UnreadableFileError, source, f"is {what}, not a point-cloud file",  # type: ignore[return-value]
                 "give a regular file")


def check_regular_file(file: Path, source: str) -> int:
    """Size in bytes of ``file`` after checking, without opening it, that it is a regular file.

    Raises:
        MissingFileError: no such path, or a symbolic link whose target is missing.
        UnreadableFileError: a directory, FIFO, device or socket.
    """
    try:
        info = os.stat(file)
    except FileNotFoundError:
        if os.path.lexists(file):
            raise error(MissingFileError, source, "is a broken symbolic link (its target does not exist)",
                        "fix the link or give the file itself") from None
        raise error(MissingFileError, source, "no such file", "check the path") from None
    except OSError as exc:
        raise error(UnreadableFileError, source, f"cannot be examined ({exc.strerror})",
                    "check the path and its permissions") from None
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(source, info.st_mode)
    return int(info.st_size)


def open_regular(file: Path, source: str) -> BinaryIO:
    """Open a regular file for binary reading; never blocks on a FIFO swapped in after the check."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(file, flags)
    except OSError as exc:
        raise error(UnreadableFileError, source, f"cannot open the file ({exc.strerror})",
                    "check its permissions") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(source, info.st_mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_all(file: Path, source: str, size: int, limits: ReadLimits) -> bytes:
    """The whole file (``size`` bytes, already checked against ``limits.max_bytes``)."""
    limits.check_bytes(size, source)
    with open_regular(file, source) as fh:
        data = fh.read(size + 1)
    if len(data) != size:
        raise corrupt(source, f"the file changed while it was read ({len(data)} bytes, expected {size})")
    return data


def binary_byte(chunk: bytes) -> int | None:
    """Offset of the first byte of ``chunk`` that cannot be in a text file, or ``None``."""
    leftover = chunk.translate(None, _TEXT_BYTES)
    return None if not leftover else chunk.index(leftover[:1])


def decode_text(chunk: bytes, source: str, first_line: int = 1) -> str:
    """``chunk`` as text: UTF-8 (BOM dropped), else Latin-1; binary bytes are refused."""
    bad = binary_byte(chunk)
    if bad is not None:
        line = first_line + chunk.count(b"\n", 0, bad)
        raise corrupt(source, f"is not a text file (byte 0x{chunk[bad]:02x} on line {line} is binary data)")
    try:
        return chunk.decode("utf-8-sig" if first_line == 1 else "utf-8")
    except UnicodeDecodeError:
        return chunk.decode("latin-1")  # e.g. names in comments written by older tools


def text_chunks(fh: BinaryIO, source: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Tuple[int, List[str]]]:
    """Lines of an open text file, ``chunk_bytes`` at a time.

    Yields:
        ``(first line number, lines)``: whole lines (a chunk ends at a newline unless a
        single line is longer than ``chunk_bytes``), decoded by :func:`decode_text`.
    """
    number, rest = 1, b""
    while True:
        block = fh.read(chunk_bytes)
        data = rest + block
        if binary_byte(block) is not None:
            decode_text(data, source, number)  # raises: refuse binary before reading on
        if not data:
            return
        if block:
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) < 4 * chunk_bytes:
                rest = data  # a very long line: read on before decoding
                continue
            cut = cut or len(data)
            data, rest = data[:cut], data[cut:]
        else:
            rest = b""
        lines = decode_text(data, source, number).split("\n")
        if lines and not lines[-1]:
            lines.pop()
        yield number, lines
        number += data.count(b"\n")


def data_rows(lines: List[str], first_line: int) -> List[Tuple[int, str]]:
    """``(line number, stripped line)`` of non-blank, non-comment (``#``, ``//``) lines."""
    rows = []
    for offset, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "//")):
            rows.append((first_line + offset, stripped))
    return rows
