"""Test and demo helpers; nothing here is real data or real weights.

* :mod:`pointcalip.testing.shapes` — procedural point clouds and meshes.
* :mod:`pointcalip.testing.datasets` — tiny datasets written in the exact on-disk layouts
  (ModelNet40, ScanObjectNN, Objaverse-LVIS) and archives of them.
* :mod:`pointcalip.testing.models` — tiny random-weight open_clip models on disk
  (``write_tiny_clip``, ``TINY_CONFIGS``).
"""

from pointcalip.testing.models import TINY_CONFIGS, write_tiny_clip

__all__ = ["TINY_CONFIGS", "write_tiny_clip"]
