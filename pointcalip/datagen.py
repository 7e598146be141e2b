"""Deprecated location: on-disk test datasets now live in :mod:`pointcalip.testing.datasets`."""

from pointcalip.testing.datasets import (  # noqa: F401
    make_modelnet40_zip,
    make_scanobjectnn_zip,
    write_modelnet40,
    write_objaverse_lvis,
    write_openshape_npy,
    write_scanobjectnn,
)

__all__ = [
    "make_modelnet40_zip", "make_scanobjectnn_zip", "write_modelnet40", "write_objaverse_lvis",
    "write_openshape_npy", "write_scanobjectnn",
]  # fmt: skip
