"""The ``pointcalip`` command line: ``main(argv)`` dispatches to one module per command (``pointcalip.cli.<name>``).

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Heavy imports (torch, open_clip) happen inside ``run`` so that
``pointcalip --help`` answers at once. User errors (:class:`PointcalipError`) print one line
to stderr and exit with status 2; Ctrl-C exits 130 and SIGTERM 143, each with one line (the
outputs are written atomically, so nothing is left half-written); anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import signal
import sys
import threading
from typing import Iterator, Optional, Sequence

from pointcalip.errors import PointcalipError

COMMANDS = {
    "eval": "pointcalip.cli.eval",
    "classify": "pointcalip.cli.classify",
    "render": "pointcalip.cli.render",
    "fewshot": "pointcalip.cli.fewshot",
    "download": "pointcalip.cli.download",
}


_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pointcalip",
        description="Zero-shot and few-shot 3D point cloud classification with CLIP.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, path in COMMANDS.items():
        module = importlib.import_module(path)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while a command runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _close_progress_bars() -> None:
    """Close every open progress bar so that the one-line message below starts its own line.

    A signal can arrive after a bar has drawn itself but before the code that owns it can
    close it (say, between ``tqdm(...)`` and its ``with``); the bar would then leave the
    cursor at the end of its text and the message would be glued to it.
    """
    std = sys.modules.get("tqdm.std")
    if std is None:
        return
    for bar in list(getattr(std.tqdm, "_instances", ())):
        with contextlib.suppress(Exception):
            bar.close()


def _say(command: str, message: str) -> None:
    _close_progress_bars()
    print(f"pointcalip {command}: {message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _sigterm_raises():
            return int(args._run(args) or 0)
    except PointcalipError as exc:
        _say(args.command, f"error: {exc}")
        return 2
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        _say(args.command, f"error: {exc.strerror or exc}{where}; free some space (or raise the file-size limit) "
                           f"and run the command again: nothing partial was kept")
        return 2
    except KeyboardInterrupt:
        _say(args.command, "interrupted (Ctrl-C); nothing half-written was left behind")
        return 130
    except Terminated:
        _say(args.command, "terminated (SIGTERM); nothing half-written was left behind")
        return 143


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
