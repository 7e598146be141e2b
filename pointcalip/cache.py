"""On-disk cache of per-view components, so a re-run with other betas, view weights or
search settings re-encodes no image (docs/method.md §5).

A key is the SHA-256 of everything the components depend on: dataset, split, sample
indices, data fingerprint, backbone, weights fingerprint, projection, templates, classes,
alpha. Entries are ``.npz`` files written to a uniquely named temp file and renamed into
place, so concurrent runs sharing one folder never see a half-written entry. An entry that
cannot be read (truncated, garbled) is reported in one warning line, deleted and treated as
a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np

from pointcalip.atomic import atomic_open

logger = logging.getLogger("pointcalip")


def default_cache_dir() -> Path:
    """``$POINTCALIP_CACHE`` or ``$XDG_CACHE_HOME/pointcalip`` (``~/.cache/pointcalip``)."""
    env = os.environ.get("POINTCALIP_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pointcalip"


def cache_key(parts: Mapping[str, Any]) -> str:
    """Stable hex key of a JSON-serialisable mapping."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


class ComponentCache:
    """A folder of ``<key>.npz`` files."""

    def __init__(self, root: Optional[os.PathLike] = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str) -> Optional[Dict[str, np.ndarray]]:
        """The arrays stored under ``key``, or ``None`` (a corrupt entry counts as missing)."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception as exc:  # any unreadable entry is a miss: zipfile.BadZipFile, EOFError, ValueError, ...
            logger.warning("cache entry %s is unreadable (%s: %s); deleting it and recomputing",
                           p, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            try:
                p.unlink()
            except OSError:
                pass
            return None

    def save(self, key: str, arrays: Mapping[str, np.ndarray], meta: Optional[Mapping[str, Any]] = None) -> Path:
        """Store ``arrays`` (and a JSON ``meta`` string) atomically; returns the path."""
        extra = {"meta": np.array(json.dumps(meta or {}, default=str))}
        with atomic_open(self.path(key)) as f:
            np.savez(f, **arrays, **extra)
        return self.path(key)
