"""Tiny random-weight open_clip models written to disk, for tests and offline demos.

``write_tiny_clip(folder, "resnet")`` writes ``tiny-resnet.json`` (an open_clip model
config) and ``tiny-resnet.pt`` (its seeded random state dict), which load through the
same code path as real weights: ``load_encoder(backbone=json, pretrained=pt)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Tuple

_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}

TINY_CONFIGS: Dict[str, dict] = {
    "resnet": {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "layers": [1, 1, 1, 1], "width": 8, "head_width": 32},
        "text_cfg": _TEXT,
    },
    # 32-px images (one spatial token): fast enough for thousands of clouds in a test
    "micro": {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
    },
    "vit": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "patch_size": 32, "head_width": 16},
        "text_cfg": _TEXT,
    },
}


def write_tiny_clip(folder: Path, family: str = "resnet", seed: int = 0) -> Tuple[Path, Path]:
    """Write ``(config.json, checkpoint.pt)`` of a tiny seeded random CLIP; returns both paths."""
    import torch
    from open_clip.model import CLIP

    if family not in TINY_CONFIGS:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(TINY_CONFIGS)}")
    cfg = TINY_CONFIGS[family]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"],
                 quick_gelu=cfg.get("quick_gelu", False))
    # Sharpen the random attention pool so its per-position outputs differ like real ones.
    pool = getattr(model.visual, "attnpool", None)
    if pool is not None:
        with torch.no_grad():
            pool.q_proj.weight.mul_(8.0)
            pool.k_proj.weight.mul_(8.0)
            pool.positional_embedding.mul_(20.0)
    cfg_path = folder / f"tiny-{family}-{seed}.json"
    ckpt_path = folder / f"tiny-{family}-{seed}.pt"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    torch.save(model.state_dict(), ckpt_path)
    return cfg_path, ckpt_path
