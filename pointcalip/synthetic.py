"""Deprecated location: procedural shapes now live in :mod:`pointcalip.testing.shapes`."""

from pointcalip.testing.shapes import (  # noqa: F401
    OBJECTS,
    SHAPES,
    make_class_cloud,
    make_mug_mesh,
    make_object,
    make_shape,
    random_rotation,
)

__all__ = ["OBJECTS", "SHAPES", "make_class_cloud", "make_mug_mesh", "make_object", "make_shape", "random_rotation"]
