"""Shared fixtures: tiny open_clip models on disk and their loaded encoders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Tuple

import pytest

# Converted runtimes and text features go to the pointcalip cache: one fresh folder per test
# session (subprocesses inherit it), so tests never read or fill the user's ~/.cache.
os.environ.setdefault("POINTCALIP_CACHE", tempfile.mkdtemp(prefix="pointcalip-test-cache-"))

from pointcalip.testing import write_tiny_clip


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    """``(config.json, checkpoint.pt)`` of a tiny ModifiedResNet CLIP."""
    return write_tiny_clip(tmp_path_factory.mktemp("tiny-rn"), "resnet")


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    """``(config.json, checkpoint.pt)`` of a tiny VisionTransformer CLIP."""
    return write_tiny_clip(tmp_path_factory.mktemp("tiny-vit"), "vit")


@pytest.fixture(scope="session")
def resnet_encoder(tiny_resnet):
    from pointcalip.encoders import load_encoder

    return load_encoder(str(tiny_resnet[0]), str(tiny_resnet[1]), device="cpu")


@pytest.fixture(scope="session")
def vit_encoder(tiny_vit):
    from pointcalip.encoders import load_encoder

    return load_encoder(str(tiny_vit[0]), str(tiny_vit[1]), device="cpu")
