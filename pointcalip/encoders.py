"""open_clip encoders: global + spatial image features and class text features (SPEC §3).

Symbols: ``B`` images, ``L`` spatial tokens, ``D`` embedding width, ``K`` classes.

Weights come from an open_clip ``(model name, pretrained tag)`` pair, a local checkpoint
file, or a model described by a local open_clip-style JSON config (``backbone=cfg.json``).
They are never replaced by random weights unless ``pretrained="random"`` is asked for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

from pointcalip.errors import ConfigError, WeightsError

RANDOM = "random"
_HF_HOST = "huggingface.co"
_PROBE_TIMEOUT_S = 5.0


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


def _build_model(backbone: str, pretrained: str, cache_dir: Optional[str]) -> Tuple[torch.nn.Module, object, Optional[str]]:
    """(model, tokenizer, checkpoint path or None) for any supported weight source."""
    import open_clip
    from open_clip.model import CLIP

    is_json = backbone.endswith(".json")
    if is_json:
        if not os.path.isfile(backbone):
            raise ConfigError(f"{backbone}: model config file not found")
        cfg = _load_json_config(backbone)
        model = CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"],
                     quick_gelu=cfg.get("quick_gelu", False))
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=cfg["text_cfg"].get("context_length", 77))
    else:
        if backbone not in open_clip.list_models():
            raise ConfigError(
                f"unknown backbone {backbone!r}; valid: open_clip model names such as RN50, RN50-quickgelu, "
                f"RN101, ViT-B-16 (see open_clip.list_models()) or a model-config .json file"
            )
        model = None
        tokenizer = open_clip.get_tokenizer(backbone)

    checkpoint: Optional[str]
    force_quick_gelu = False
    if pretrained == RANDOM:
        checkpoint = None
        print(f"pointcalip: WARNING: {backbone} uses RANDOM weights (--pretrained random); "
              "predictions are meaningless", file=sys.stderr)
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

    if model is None:
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
        model = open_clip.create_model(backbone, pretrained=None, force_quick_gelu=force_quick_gelu)
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


class CLIPEncoder:
    """A frozen open_clip model with dense image features and template-averaged text features."""

    def __init__(self, model: torch.nn.Module, tokenizer, info: WeightsInfo, device: torch.device) -> None:
        self.model = model.eval().requires_grad_(False).to(device)
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        visual = self.model.visual
        size = getattr(visual, "image_size", 224)
        self.image_size: int = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean: Tuple[float, ...] = tuple(getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))
        self.std: Tuple[float, ...] = tuple(getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))
        self.family = _visual_family(visual)

    @property
    def logit_scale(self) -> float:
        """``s = exp(logit_scale)`` (100 for OpenAI weights)."""
        return float(self.model.logit_scale.detach().exp().item())

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1]) if hasattr(self.model, "text_projection") else int(
            self.model.visual.output_dim)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """open_clip's own global feature, L2-normalised: ``(B, 3, S, S)`` -> ``(B, D)``."""
        return F.normalize(self.model.encode_image(images.to(self.device)).float(), dim=-1)

    @torch.no_grad()
    def encode_image_dense(self, images: torch.Tensor) -> DenseFeatures:
        """Global and spatial features of ``images: (B, 3, S, S)`` (SPEC §3)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, S, S); got {tuple(images.shape)}")
        x = images.to(self.device, dtype=next(self.model.visual.parameters()).dtype)
        tokens = _resnet_tokens(self.model.visual, x) if self.family == "resnet" else _vit_tokens(self.model.visual, x)
        tokens = tokens.float()
        raw = tokens[:, 0]
        return DenseFeatures(F.normalize(raw, dim=-1), F.normalize(tokens[:, 1:], dim=-1), raw)

    @torch.no_grad()
    def encode_text(self, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """Class text features ``(K, D)``: per template encode + normalise, average, normalise."""
        if not classnames:
            raise ConfigError("the class list is empty; give at least one class name")
        if not templates or any("{}" not in t for t in templates):
            raise ConfigError(f"every template must contain '{{}}' for the class name; got {list(templates)}")
        names = [c.replace("_", " ") for c in classnames]
        feats = []
        for template in templates:
            tokens = self.tokenizer([template.format(n) for n in names]).to(self.device)
            feats.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
        return F.normalize(torch.stack(feats).mean(dim=0), dim=-1)


def _visual_family(visual: torch.nn.Module) -> str:
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, ModifiedResNet):
        return "resnet"
    if isinstance(visual, VisionTransformer):
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "final_ln_after_pool", False) \
                or visual.pool_type != "tok":
            raise ConfigError("this VisionTransformer variant (attention/avg pooling) has no CLIP class token; "
                              "use a standard CLIP ViT (ViT-B-16, ViT-B-32, ViT-L-14, ...) or a ResNet")
        return "vit"
    raise ConfigError(f"unsupported image tower {type(visual).__name__}; valid: ModifiedResNet (RN50, RN101, ...) "
                      f"or VisionTransformer (ViT-B-16, ...)")


def _resnet_tokens(visual: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ModifiedResNet: attention pool with every token as a query -> ``(B, 1 + hw, D)``."""
    x = visual.stem(x)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    pool = visual.attnpool
    b, c, h, w = x.shape
    seq = x.reshape(b, c, h * w).permute(2, 0, 1)  # (hw, B, C)
    seq = torch.cat([seq.mean(dim=0, keepdim=True), seq], dim=0)
    pos = pool.positional_embedding
    if pos.shape[0] != seq.shape[0]:
        raise ConfigError(f"image size gives a {h}x{w} feature map but the attention pool expects "
                          f"{pos.shape[0] - 1} positions; use the model's input size")
    seq = seq + pos[:, None, :].to(seq.dtype)
    out, _ = F.multi_head_attention_forward(
        query=seq, key=seq, value=seq, embed_dim_to_check=c, num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False,
    )
    return out.permute(1, 0, 2)  # (B, 1 + hw, D)


def _vit_tokens(visual: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """VisionTransformer: ``ln_post`` on every token, then ``proj`` -> ``(B, 1 + L, D)``."""
    x = visual.transformer(visual._embeds(x))
    x = visual.ln_post(x)
    return x @ visual.proj if visual.proj is not None else x


def load_encoder(
    backbone: str = "RN50",
    pretrained: str = "openai",
    device: str = "auto",
    cache_dir: Optional[str] = None,
) -> CLIPEncoder:
    """Load an open_clip model for dense features.

    Args:
        backbone: open_clip model name (``RN50``, ``RN50-quickgelu``, ``ViT-B-16`` ...) or a
            path to an open_clip-style model-config ``.json``.
        pretrained: open_clip tag (``openai``, LAION tags ...), a local checkpoint file, or
            ``"random"`` (explicitly random weights, for smoke tests and benchmarks only).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        cache_dir: where tag weights are cached (default: open_clip's/Hugging Face's).
    """
    dev = resolve_device(device)
    model, tokenizer, checkpoint = _build_model(backbone, pretrained, cache_dir)
    if checkpoint is not None:
        fp = file_fingerprint(checkpoint)
    else:
        fp = "random-" + hashlib.sha256(b"".join(
            t.detach().cpu().contiguous().numpy().tobytes()[:4096] for t in model.state_dict().values())).hexdigest()[:12]
    if os.path.isfile(backbone):
        fp = fp + "-" + file_fingerprint(backbone)
    return CLIPEncoder(model, tokenizer, WeightsInfo(backbone, pretrained, checkpoint, fp), dev)
