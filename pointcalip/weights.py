"""Where CLIP weights come from (docs/method.md §3): open_clip tags, local checkpoints,
local model-config JSON files; the offline reachability probe; weight fingerprints.

Weights are never replaced by random ones unless ``pretrained="random"`` is asked for.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple
from urllib.parse import urlparse

import torch

from pointcalip.errors import ConfigError, WeightsError

RANDOM = "random"
_HF_HOST = "huggingface.co"
_PROBE_TIMEOUT_S = 5.0

log = logging.getLogger("pointcalip")


@dataclass(frozen=True)
class WeightsInfo:
    """What was loaded: for results files and cache keys."""

    backbone: str
    pretrained: str
    checkpoint: Optional[str]
    fingerprint: str


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"invalid device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def file_fingerprint(path: str) -> str:
    """SHA-256 (first 16 hex digits) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def weights_fingerprint(model: torch.nn.Module, checkpoint: Optional[str], backbone: str) -> str:
    """Fingerprint of loaded weights: the checkpoint file's hash, or for random weights a hash
    of the start of every tensor; a local model-config file's hash is appended."""
    if checkpoint is not None:
        fp = file_fingerprint(checkpoint)
    else:
        h = hashlib.sha256()
        for t in model.state_dict().values():
            h.update(t.detach().cpu().contiguous().numpy().tobytes()[:4096])
        fp = "random-" + h.hexdigest()[:12]
    if os.path.isfile(backbone):
        fp = fp + "-" + file_fingerprint(backbone)
    return fp


def _weights_cache_hint() -> str:
    hf = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return f"the Hugging Face cache ({hf}) or ~/.cache/clip"


def _reachable(host: str, port: int = 443, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds.

    Name resolution is not covered by socket timeouts, so the probe runs in a daemon
    thread and counts as unreachable when it has not answered in time.
    """
    result: List[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return bool(result and result[0])


def _cached_weights(cfg: dict, cache_dir: Optional[str]) -> Optional[str]:
    """Local path of a tag's weights when already downloaded, without any network access."""
    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:  # pragma: no cover - open_clip depends on it
            hf_hub_download = None
        if hf_hub_download is not None:
            repo, filename = os.path.split(hub)
            names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            for name in names:
                try:
                    return hf_hub_download(repo, name, cache_dir=cache_dir, local_files_only=True)
                except Exception:  # noqa: BLE001 - any miss means "not cached"
                    continue
    url = cfg.get("url", "")
    if url:
        path = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def _download_tag(backbone: str, tag: str, cfg: dict, cache_dir: Optional[str]) -> str:
    """Weights of an open_clip tag: from the cache, else downloaded; fails fast offline."""
    path = _cached_weights(cfg, cache_dir)
    if path:
        return path
    host = _HF_HOST if cfg.get("hf_hub") else urlparse(cfg.get("url", "")).hostname or _HF_HOST
    if not _reachable(host):
        raise WeightsError(
            f"weights {backbone}/{tag} are not cached and {host} cannot be reached; "
            f"pass a local checkpoint with --pretrained PATH (OpenAI files need a '-quickgelu' "
            f"backbone name) or put the weights in {_weights_cache_hint()}"
        )
    import open_clip

    try:
        return open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001 - network errors come in many types
        raise WeightsError(f"could not download weights {backbone}/{tag}: {exc}") from exc


def _load_json_config(path: str) -> dict:
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read model config JSON ({exc})") from exc
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in cfg:
            raise ConfigError(f"{path}: model config lacks {key!r} (open_clip model-config format)")
    return cfg


def _instantiate(cfg: dict, force_quick_gelu: bool = False) -> torch.nn.Module:
    """An open_clip model with random weights from a model config, built directly so that
    open_clip's "no pretrained weights loaded" warning (on the root logger) never appears."""
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = copy.deepcopy(cfg)
    if force_quick_gelu:
        cfg["quick_gelu"] = True
    text_cfg = cfg.get("text_cfg", {})
    custom = cfg.pop("custom_text", False) or "hf_model_name" in text_cfg
    if "hf_model_name" in text_cfg:
        text_cfg["hf_model_pretrained"] = False
    for key in ("multimodal_cfg",):
        if key in cfg:
            raise ConfigError("captioning models (CoCa) are not supported; use a CLIP model such as RN50 or ViT-B-16")
    return (CustomTextCLIP if custom else CLIP)(**cfg)


def build_model(backbone: str, pretrained: str, cache_dir: Optional[str] = None
                ) -> Tuple[torch.nn.Module, object, Optional[str]]:
    """``(model, tokenizer, checkpoint path or None)`` for any supported weight source.

    Args:
        backbone: open_clip model name or a model-config ``.json`` path.
        pretrained: open_clip tag, local checkpoint file, or ``"random"``.
        cache_dir: where tag weights are looked up / downloaded.
    """
    import open_clip

    is_json = backbone.endswith(".json")
    if is_json:
        if not os.path.isfile(backbone):
            raise ConfigError(f"{backbone}: model config file not found")
        model_cfg = _load_json_config(backbone)
        tokenizer = open_clip.tokenizer.SimpleTokenizer(
            context_length=model_cfg["text_cfg"].get("context_length", 77))
    else:
        if backbone not in open_clip.list_models():
            raise ConfigError(
                f"unknown backbone {backbone!r}; valid: open_clip model names such as RN50, RN50-quickgelu, "
                f"RN101, ViT-B-16 (see open_clip.list_models()) or a model-config .json file"
            )
        model_cfg = open_clip.get_model_config(backbone)
        tokenizer = open_clip.get_tokenizer(backbone)

    checkpoint: Optional[str]
    force_quick_gelu = False
    tag_cfg: dict = {}
    if pretrained == RANDOM:
        checkpoint = None
        log.warning("%s uses RANDOM weights (--pretrained random); predictions are meaningless", backbone)
    elif os.path.isfile(pretrained):
        checkpoint = pretrained
    elif os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise WeightsError(f"{pretrained}: checkpoint file not found; pass an existing file or an open_clip tag")
    elif is_json:
        raise WeightsError(f"{backbone} is a local model config: --pretrained must be a checkpoint file")
    else:
        tag_cfg = open_clip.get_pretrained_cfg(backbone, pretrained)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(backbone)
            raise WeightsError(
                f"no pretrained tag {pretrained!r} for {backbone}; valid: {', '.join(tags) or '(none)'} "
                f"or a local checkpoint file"
            )
        checkpoint = _download_tag(backbone, pretrained, tag_cfg, cache_dir)
        force_quick_gelu = bool(tag_cfg.get("quick_gelu", False))

    model = _instantiate(model_cfg, force_quick_gelu)
    if tag_cfg.get("mean") and tag_cfg.get("std"):  # the tag's image statistics, as open_clip sets them
        model.visual.image_mean, model.visual.image_std = tuple(tag_cfg["mean"]), tuple(tag_cfg["std"])
    if checkpoint is not None:
        try:
            open_clip.load_checkpoint(model, checkpoint)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(
                f"{checkpoint}: cannot load into {backbone}: {first[:300]} "
                f"(OpenAI-layout checkpoints need a '-quickgelu' backbone such as RN50-quickgelu)"
            ) from exc
    return model, tokenizer, checkpoint
