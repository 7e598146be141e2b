"""Evaluation configuration: a frozen dataclass, YAML presets and command-line overrides.

Precedence: dataclass defaults < YAML file (``configs/*.yaml``) < command-line options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, TypeVar

import yaml

from pointcalip.aggregation import BETA2_RANGE, BETA3_RANGE, BETA_STEPS, SEARCH_MODES, VIEW_WEIGHT_GRID
from pointcalip.attention import DEFAULT_ALPHA, DEFAULT_BETA2, DEFAULT_BETA3, METHODS
from pointcalip.errors import ConfigError
from pointcalip.projection import PRESETS

DATASETS = ("modelnet40", "modelnet10", "scanobjectnn")
SPLITS = ("train", "test")
ZERO_SHOT_TEMPLATE = "point cloud depth map of a {}."
FEW_SHOT_TEMPLATE = "point cloud of a big {}."
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "modelnet40_zeroshot.yaml"


@dataclass(frozen=True)
class EvalConfig:
    """Everything ``pointcalip eval`` needs; see ``configs/modelnet40_zeroshot.yaml``."""

    dataset: str = "modelnet40"
    variant: Optional[str] = None
    data_root: str = "data"
    split: str = "test"
    num_points: int = 1024
    backbone: str = "RN50"
    pretrained: str = "openai"
    method: str = "calip"
    projection: str = "pointclip"
    normalize_images: bool = False
    templates: Tuple[str, ...] = (ZERO_SHOT_TEMPLATE,)
    alpha: float = DEFAULT_ALPHA
    beta2: float = DEFAULT_BETA2
    beta3: float = DEFAULT_BETA3
    view_weights: Optional[Tuple[float, ...]] = None
    search: str = "none"
    view_weight_grid: Tuple[float, ...] = VIEW_WEIGHT_GRID
    beta2_range: Tuple[float, float] = BETA2_RANGE
    beta3_range: Tuple[float, float] = BETA3_RANGE
    beta_steps: int = BETA_STEPS
    val_fraction: float = 0.2
    seed: int = 0
    batch_size: int = 32
    device: str = "auto"
    output: str = "out/eval"
    cache_dir: Optional[str] = None
    use_cache: bool = True
    head: Optional[str] = None
    progress: bool = True

    def resolved_view_weights(self) -> Tuple[float, ...]:
        """The view weights, ``(1.0,) * V`` when not given."""
        return self.view_weights or (1.0,) * PRESETS[self.projection].num_views

    def effective_betas(self) -> Tuple[float, float]:
        """``(beta2, beta3)`` as applied: the config's for ``calip``, ``(0, 0)`` for ``pointclip``."""
        return (self.beta2, self.beta3) if self.method == "calip" else (0.0, 0.0)

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _choice(name: str, value: Any, valid: Tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"invalid {name} {value!r}; valid: {', '.join(valid)}")


def validate(cfg: EvalConfig) -> EvalConfig:
    """Raise ``ConfigError`` naming the first bad value; return ``cfg``."""
    _choice("dataset", cfg.dataset, DATASETS)
    _choice("split", cfg.split, SPLITS)
    _choice("method", cfg.method, METHODS)
    _choice("search", cfg.search, SEARCH_MODES)
    _choice("projection", cfg.projection, tuple(PRESETS))
    v = PRESETS[cfg.projection].num_views
    if cfg.view_weights is not None and len(cfg.view_weights) != v:
        raise ConfigError(f"view_weights has {len(cfg.view_weights)} values but projection "
                          f"{cfg.projection!r} has {v} views")
    if cfg.num_points < 1 or cfg.batch_size < 1:
        raise ConfigError("num_points and batch_size must be positive")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1); got {cfg.val_fraction}")
    if cfg.search == "val" and cfg.split != "test":
        raise ConfigError("search 'val' selects on a held-out part of the training split and reports the "
                          "test split: use it with split 'test'")
    for t in cfg.templates:
        if "{}" not in t:
            raise ConfigError(f"template {t!r} has no '{{}}' for the class name")
    return cfg


C = TypeVar("C")


def update_dataclass(base: C, data: Mapping[str, Any], source: str = "config") -> C:
    """A copy of the frozen dataclass ``base`` with ``data`` applied; unknown keys are errors.

    Lists are turned into tuples for the tuple-typed fields (YAML has no tuples).
    """
    fields = dataclasses.fields(base)
    names = {f.name for f in fields}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    tuples = {f.name for f in fields if "Tuple" in str(f.type)}
    values = {k: (tuple(v) if k in tuples and v is not None else v) for k, v in data.items()}
    return dataclasses.replace(base, **values)


def layered(default: C, path: Optional[str], overrides: Mapping[str, Any]) -> C:
    """``default`` < YAML at ``path`` < ``overrides`` (``None`` values are ignored)."""
    cfg = update_dataclass(default, load_yaml(path), source=path) if path else default
    return update_dataclass(cfg, {k: v for k, v in overrides.items() if v is not None}, source="command line")


def from_mapping(data: Mapping[str, Any], base: Optional[EvalConfig] = None, source: str = "config") -> EvalConfig:
    """A new config: ``base`` (default: defaults) updated by ``data``; unknown keys are errors."""
    return update_dataclass(base or EvalConfig(), data, source)


def load_yaml(path: str) -> Dict[str, Any]:
    """The mapping in a YAML config file; ``ConfigError`` when missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: config file not found; see configs/ for presets")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value")
    return data


def build_config(path: Optional[str], overrides: Mapping[str, Any]) -> EvalConfig:
    """Defaults < YAML at ``path`` < ``overrides`` (``None`` values are ignored), validated."""
    return validate(layered(EvalConfig(), path, overrides))
