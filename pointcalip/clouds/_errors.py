"""One-line error helpers shared by the readers (docs/method.md §1)."""

from __future__ import annotations

from pointcalip.errors import EmptyCloudError, PointCloudError, UnreadableFileError

CORRUPT_FIX = "re-export it or convert it to .npy"


def error(cls: type[PointCloudError], source: str, problem: str, fix: str) -> PointCloudError:
    """``cls("<source>: <problem>; <fix>")`` squeezed onto one line."""
    text = f"{source}: {problem}; {fix}"
    return cls(" ".join(text.split()))


def corrupt(source: str, problem: str) -> UnreadableFileError:
    """An :class:`UnreadableFileError` for a damaged file."""
    return error(UnreadableFileError, source, problem, CORRUPT_FIX)  # type: ignore[return-value]


def empty(source: str, problem: str = "the cloud has no points") -> EmptyCloudError:
    """An :class:`EmptyCloudError` for a file or array without points."""
    fix = "give a cloud with at least two distinct points"
    return error(EmptyCloudError, source, problem, fix)  # type: ignore[return-value]


def quote(line: str, width: int = 40) -> str:
    """A short printable excerpt of ``line`` for error messages."""
    line = line.strip()
    return repr(line if len(line) <= width else line[: width - 3] + "...")
