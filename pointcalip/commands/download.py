"""`pointcalip download` (not yet implemented)."""

from __future__ import annotations

import argparse

from pointcalip.errors import PointcalipError

HELP = "download (not yet implemented)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    raise PointcalipError("'pointcalip download' is not implemented yet")
