"""Class text features cached on disk (docs/method.md §3).

Symbols: ``K`` classes, ``P_k`` sentences of class ``k``, ``D`` embedding width.

Encoding a large vocabulary (e.g. 1,156 classes with many prompts each) takes minutes on a
CPU; the ``(K, D)`` result depends only on the backbone, the weights fingerprint and the
sentences, so it is stored once as ``<cache>/text/<key>.npz`` (written atomically).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from pointcalip.cache import ComponentCache, cache_key, default_cache_dir
from pointcalip.encoders import CLIPEncoder, class_sentences
from pointcalip.errors import ConfigError

TEXT_FORMAT = 1


def text_key(encoder: CLIPEncoder, sentences: Sequence[Sequence[str]]) -> str:
    """Cache key of the class text features of ``sentences`` (one list per class)."""
    return "text-" + cache_key({"format": TEXT_FORMAT, "backbone": os.path.basename(encoder.info.backbone),
                                "weights": encoder.info.fingerprint,
                                "sentences": [list(group) for group in sentences]})


def cached_sentence_features(
    encoder: CLIPEncoder,
    sentences: Sequence[Sequence[str]],
    *,
    cache_dir: Optional[os.PathLike] = None,
    use_cache: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """``encoder.encode_sentences(sentences)`` ``(K, D)`` on the encoder device, read from /
    written to ``<cache_dir>/text/`` (default: the pointcalip cache) unless ``use_cache`` is off."""
    if not use_cache:
        return encoder.encode_sentences(sentences, progress=progress)
    store = ComponentCache(Path(default_cache_dir() if cache_dir is None else cache_dir) / "text")
    key = text_key(encoder, sentences)
    hit = store.load(key)
    if hit is not None and "text" in hit and hit["text"].shape[0] == len(sentences):
        return torch.from_numpy(hit["text"]).to(encoder.device)
    text = encoder.encode_sentences(sentences, progress=progress)
    store.save(key, {"text": text.detach().cpu().numpy().astype(np.float32)},
               meta={"backbone": encoder.info.backbone, "weights": encoder.info.fingerprint, "classes": len(sentences)})
    return text


def cached_text_features(
    encoder: CLIPEncoder,
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    cache_dir: Optional[os.PathLike] = None,
    use_cache: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """``encoder.encode_text(classnames, templates)`` ``(K, D)`` through the text cache."""
    if not classnames:
        raise ConfigError("the class list is empty; give at least one class name")
    if not templates or any("{}" not in t for t in templates):
        raise ConfigError(f"every template must contain '{{}}' for the class name; got {list(templates)}")
    return cached_sentence_features(encoder, class_sentences(classnames, templates), cache_dir=cache_dir,
                                    use_cache=use_cache, progress=progress)
