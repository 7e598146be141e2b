"""pointcalip: zero-shot and few-shot 3D point cloud classification with CLIP.

PointCLIP projection -> open_clip dense features -> CALIP parameter-free attention ->
weighted view aggregation. See ``README.md`` and ``docs/method.md`` for what is computed.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "ZeroShotClassifier"]


def __getattr__(name: str):
    # Lazy: `import pointcalip` must not import torch/open_clip.
    if name == "ZeroShotClassifier":
        from pointcalip.api import ZeroShotClassifier

        return ZeroShotClassifier
    raise AttributeError(f"module 'pointcalip' has no attribute {name!r}")
