"""open_clip encoders: global + spatial image features and class text features (docs/method.md §3).

Symbols: ``B`` images, ``S`` input size, ``L`` spatial tokens, ``D`` embedding width,
``K`` classes, ``P_k`` sentences of class ``k``.

Weight resolution lives in :mod:`pointcalip.weights`, the runtimes (eager torch,
``torch.compile``, OpenVINO; fp32/bf16/fp16) in :mod:`pointcalip.runtime`; both are
re-exported here for existing imports.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pointcalip.errors import ConfigError
from pointcalip.runtime import DenseTower, build_runner, check_choice
from pointcalip.weights import (  # noqa: F401 - WeightsInfo, build_model, weights_fingerprint re-exported
    WeightsInfo, build_model, resolve_device, weights_fingerprint,
)

log = logging.getLogger("pointcalip")
TEXT_BATCH = 256


class DenseFeatures(NamedTuple):
    """Image features of one batch.

    Attributes:
        global_: ``(B, D)`` L2-normalised global feature (equals normalised ``encode_image``).
        spatial: ``(B, L, D)`` L2-normalised spatial tokens.
        global_raw: ``(B, D)`` the global feature before normalisation (few-shot adapter input).
    """

    global_: torch.Tensor
    spatial: torch.Tensor
    global_raw: torch.Tensor


class CLIPEncoder:
    """A frozen open_clip model with dense image features and prompt-averaged text features.

    Args:
        model: an open_clip CLIP model (moved to ``device``, eval mode, no gradients).
        tokenizer: its tokenizer.
        info: what weights were loaded.
        device: where it runs.
        runtime: ``auto``, ``torch``, ``compile`` or ``openvino`` (docs/method.md §3).
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast on the image tower).
        cache_dir: pointcalip cache folder for converted runtimes (default ``$POINTCALIP_CACHE``
            or ``~/.cache/pointcalip``); they go to its ``runtimes/`` subfolder.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, info: WeightsInfo, device: torch.device, *,
                 runtime: str = "torch", precision: str = "fp32", cache_dir: Optional[os.PathLike] = None) -> None:
        check_choice(runtime, precision, device)
        self.model = model.eval().requires_grad_(False).to(device)
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        self.precision = precision
        visual = self.model.visual
        size = getattr(visual, "image_size", 224)
        self.image_size: int = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean: Tuple[float, ...] = tuple(getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))
        self.std: Tuple[float, ...] = tuple(getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))
        self.tower = DenseTower(visual)
        self.family = self.tower.family
        self._runner, self.runtime = build_runner(self.tower, device, runtime=runtime, precision=precision,
                                                  fingerprint=info.fingerprint, image_size=self.image_size,
                                                  cache_dir=cache_dir)

    @property
    def logit_scale(self) -> float:
        """``s = exp(logit_scale)`` (100 for OpenAI weights)."""
        return float(self.model.logit_scale.detach().exp().item())

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1]) if hasattr(self.model, "text_projection") else int(
            self.model.visual.output_dim)

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        """Images on the encoder device; pinned host tensors are copied without blocking."""
        if images.device != self.device:
            images = images.to(self.device, non_blocking=self.device.type == "cuda" and images.is_pinned())
        return images.float()

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """open_clip's own global feature in eager torch fp32, L2-normalised: ``(B, 3, S, S)`` -> ``(B, D)``."""
        return F.normalize(self.model.encode_image(self._to_device(images)).float(), dim=-1)

    @torch.no_grad()
    def encode_image_dense(self, images: torch.Tensor) -> DenseFeatures:
        """Global and spatial features of ``images: (B, 3, S, S)`` under the encoder's runtime."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, S, S); got {tuple(images.shape)}")
        if images.shape[0] == 0:
            tokens = torch.zeros(0, 1, self.embed_dim, device=self.device)
        else:
            tokens = self._runner(self._to_device(images)).to(self.device).float()
        raw = tokens[:, 0]
        return DenseFeatures(F.normalize(raw, dim=-1), F.normalize(tokens[:, 1:], dim=-1), raw)

    @torch.no_grad()
    def sentence_features(self, sentences: Sequence[Sequence[str]], batch_size: int = TEXT_BATCH,
                          progress: bool = False) -> List[torch.Tensor]:
        """Per-class sentence features: ``K`` tensors ``(P_k, D)``, each row L2-normalised.

        All sentences are encoded together in batches of ``batch_size``.
        """
        if not sentences:
            raise ConfigError("the class list is empty; give at least one class name")
        for k, group in enumerate(sentences):
            if isinstance(group, str) or len(group) == 0:
                raise ConfigError(f"class {k} needs a non-empty list of sentences; got {group!r}")
        flat = [s for group in sentences for s in group]
        feats = []
        bar = tqdm(total=len(flat), desc="text features", unit="sentence", leave=False,
                   disable=not (progress and sys.stderr.isatty()))
        with bar:
            for start in range(0, len(flat), batch_size):
                tokens = self.tokenizer(flat[start:start + batch_size]).to(self.device)
                feats.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
                bar.update(min(batch_size, len(flat) - start))
        return list(torch.cat(feats).split([len(g) for g in sentences]))

    @torch.no_grad()
    def encode_sentences(self, sentences: Sequence[Sequence[str]], batch_size: int = TEXT_BATCH,
                         progress: bool = False) -> torch.Tensor:
        """Class text features ``(K, D)``: class ``k``'s feature is the mean of its ``P_k``
        normalised sentence features, normalised again."""
        per_class = self.sentence_features(sentences, batch_size, progress)
        return F.normalize(torch.stack([f.mean(dim=0) for f in per_class]), dim=-1)

    @torch.no_grad()
    def encode_text(self, classnames: Sequence[str], templates: Sequence[str], batch_size: int = TEXT_BATCH,
                    progress: bool = False) -> torch.Tensor:
        """Class text features ``(K, D)`` of class names (underscores read as spaces) in every
        template: ``encode_sentences([[t.format(c) for t in templates] for c in classnames])``."""
        if not classnames:
            raise ConfigError("the class list is empty; give at least one class name")
        if not templates or any("{}" not in t for t in templates):
            raise ConfigError(f"every template must contain '{{}}' for the class name; got {list(templates)}")
        return self.encode_sentences(class_sentences(classnames, templates), batch_size, progress)


def class_sentences(classnames: Sequence[str], templates: Sequence[str]) -> List[List[str]]:
    """``[[t.format(c) for t in templates] for c in classnames]``, underscores -> spaces."""
    return [[t.format(c.replace("_", " ")) for t in templates] for c in classnames]


def load_encoder(
    backbone: str = "RN50",
    pretrained: str = "openai",
    device: str = "auto",
    *,
    runtime: str = "auto",
    precision: str = "fp32",
    cache_dir: Optional[str] = None,
    runtime_cache_dir: Optional[os.PathLike] = None,
) -> CLIPEncoder:
    """Load an open_clip model for dense features.

    Args:
        backbone: open_clip model name (``RN50``, ``RN50-quickgelu``, ``ViT-B-16`` ...) or a
            path to an open_clip-style model-config ``.json``.
        pretrained: open_clip tag (``openai``, LAION tags ...), a local checkpoint file, or
            ``"random"`` (explicitly random weights, for smoke tests and benchmarks only).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        runtime: ``auto`` (OpenVINO on the CPU in fp32, else eager torch), ``torch``,
            ``compile`` or ``openvino``.
        precision: ``fp32`` (exact), ``bf16`` or ``fp16`` (CUDA only).
        cache_dir: where tag weights are cached (default: open_clip's/Hugging Face's).
        runtime_cache_dir: pointcalip cache folder for converted runtimes (its ``runtimes/``
            subfolder; default ``$POINTCALIP_CACHE`` or ``~/.cache/pointcalip``).
    """
    dev = resolve_device(device)
    check_choice(runtime, precision, dev)
    model, tokenizer, checkpoint = build_model(backbone, pretrained, cache_dir)
    info = WeightsInfo(backbone, pretrained, checkpoint, weights_fingerprint(model, checkpoint, backbone))
    return CLIPEncoder(model, tokenizer, info, dev, runtime=runtime, precision=precision, cache_dir=runtime_cache_dir)
