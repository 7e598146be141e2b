"""Deprecated location: class-stratified subsets now live in :mod:`pointcalip.datasets.splits`."""

from pointcalip.datasets.splits import kshot_indices, short_classes, stratified_holdout  # noqa: F401

__all__ = ["kshot_indices", "short_classes", "stratified_holdout"]
