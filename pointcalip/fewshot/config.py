"""Few-shot training configuration: a frozen dataclass, YAML presets and overrides.

Precedence: dataclass defaults (the docs/method.md §6 recipe) < YAML file
(the package's ``*_fewshot`` presets) < command-line options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from pointcalip.attention import DEFAULT_ALPHA, DEFAULT_BETA2, DEFAULT_BETA3
from pointcalip.config import FEW_SHOT_TEMPLATE, config_to_dict, layered
from pointcalip.errors import ConfigError
from pointcalip.projection import projection_names

HEADS: Tuple[str, ...] = ("adapter", "calip_fs", "both")
SHOTS: Tuple[int, ...] = (1, 2, 4, 8, 16)
DEFAULT_FEWSHOT_CONFIG = "modelnet40_fewshot"

# Settings that must not change when a run is resumed (anything that changes the numbers).
RESUME_KEYS: Tuple[str, ...] = (
    "dataset", "variant", "num_points", "backbone", "pretrained", "projection", "normalize_images", "templates",
    "alpha", "beta2", "beta3", "head", "shots", "seed", "val_per_class", "epochs", "batch_size", "lr",
    "momentum", "weight_decay", "warmup_epochs", "warmup_lr", "label_smoothing", "aug_scale", "aug_shift",
    "shuffle_points", "cache_features", "dropout", "fusion_init", "view_ratio",
)


@dataclass(frozen=True)
class FewShotConfig:
    """Everything ``pointcalip fewshot`` needs; see the preset ``modelnet40_fewshot``.

    Defaults are the docs/method.md §6 recipe (PointCLIP's few-shot adapter training).
    """

    # data
    dataset: str = "modelnet40"
    variant: Optional[str] = None
    data_root: str = "data"
    num_points: int = 1024
    shots: int = 16
    seed: int = 0
    val_per_class: int = 4  # held out from the training split minus the K-shot set; 0 = no validation
    # model
    backbone: str = "RN101"
    pretrained: str = "openai"
    projection: str = "pointclip10"
    normalize_images: bool = False
    templates: Tuple[str, ...] = (FEW_SHOT_TEMPLATE,)
    head: str = "adapter"
    alpha: float = DEFAULT_ALPHA
    beta2: float = DEFAULT_BETA2
    beta3: float = DEFAULT_BETA3
    dropout: float = 0.075
    fusion_init: float = 0.5
    view_ratio: float = 0.6
    # optimisation
    epochs: int = 250
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    label_smoothing: float = 0.2
    aug_scale: Tuple[float, float] = (2.0 / 3.0, 3.0 / 2.0)
    aug_shift: float = 0.2
    shuffle_points: bool = True
    # running
    cache_features: bool = False
    feature_cache_dir: Optional[str] = None
    encode_batch_size: int = 32
    device: str = "auto"
    runtime: str = "auto"
    precision: str = "fp32"
    output: str = "out/fewshot"
    progress: bool = True

    def to_dict(self) -> Dict[str, Any]:
        return config_to_dict(self)

    def resume_view(self) -> Dict[str, Any]:
        """The settings a resumed run must share with the interrupted one."""
        d = self.to_dict()
        return {k: d[k] for k in RESUME_KEYS}




def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate(cfg: FewShotConfig) -> FewShotConfig:
    """Raise ``ConfigError`` naming the first bad value; return ``cfg``."""
    from pointcalip.datasets import dataset_names

    names = dataset_names()
    _check(cfg.dataset in names, f"invalid dataset {cfg.dataset!r}; valid: {', '.join(names)}")
    _check(cfg.head in HEADS, f"invalid head {cfg.head!r}; valid: {', '.join(HEADS)}")
    _check(cfg.projection in projection_names(), f"invalid projection {cfg.projection!r}; valid: {', '.join(projection_names())}")
    _check(cfg.shots >= 1, f"shots must be >= 1 (usually one of {', '.join(map(str, SHOTS))}); got {cfg.shots}")
    _check(cfg.val_per_class >= 0, f"val_per_class must be >= 0; got {cfg.val_per_class}")
    _check(cfg.epochs >= 1 and cfg.batch_size >= 1 and cfg.encode_batch_size >= 1 and cfg.num_points >= 1,
           "epochs, batch_size, encode_batch_size and num_points must be positive")
    _check(cfg.lr > 0 and cfg.warmup_lr > 0, "lr and warmup_lr must be positive")
    _check(0 <= cfg.warmup_epochs < cfg.epochs, f"warmup_epochs must be in [0, epochs) = [0, {cfg.epochs}); got {cfg.warmup_epochs} "
           f"(pass --warmup-epochs 0 for a 1-epoch run)")
    _check(0.0 <= cfg.label_smoothing < 1.0, f"label_smoothing must be in [0, 1); got {cfg.label_smoothing}")
    _check(0.0 <= cfg.dropout < 1.0, f"dropout must be in [0, 1); got {cfg.dropout}")
    _check(len(cfg.aug_scale) == 2 and 0 < cfg.aug_scale[0] <= cfg.aug_scale[1],
           f"aug_scale must be [low, high] with 0 < low <= high; got {list(cfg.aug_scale)}")
    _check(cfg.aug_shift >= 0, f"aug_shift must be >= 0; got {cfg.aug_shift}")
    _check(len(cfg.templates) > 0, "templates: give at least one prompt template")
    for t in cfg.templates:
        _check("{}" in t, f"template {t!r} has no '{{}}' for the class name")
    return cfg


def build_fewshot_config(path: Optional[str], overrides: Mapping[str, Any]) -> FewShotConfig:
    """Defaults < YAML at ``path`` < ``overrides`` (``None`` values are ignored), validated."""
    return validate(layered(FewShotConfig(), path, overrides))
