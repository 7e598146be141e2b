"""Deprecated location: farthest point sampling now lives in :mod:`pointcalip.clouds.sampling`."""

from pointcalip.clouds.sampling import *  # noqa: F401,F403
from pointcalip.clouds.sampling import __all__, _open3d_fps, _torch_fps  # noqa: F401
