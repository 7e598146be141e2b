"""Evaluation configuration: a frozen dataclass, YAML presets and command-line overrides.

Precedence: dataclass defaults < YAML preset or file < command-line options. The presets
ship inside the package (``pointcalip/configs/*.yaml``, read with ``importlib.resources``),
so ``--config modelnet40_zeroshot`` resolves the same way from any directory.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, TypeVar

import yaml

from pointcalip.aggregation import BETA2_RANGE, BETA3_RANGE, BETA_STEPS, SEARCH_MODES, STRATEGIES, VIEW_WEIGHT_GRID
from pointcalip.attention import DEFAULT_ALPHA, DEFAULT_BETA2, DEFAULT_BETA3, METHODS
from pointcalip.errors import ConfigError
from pointcalip.runtime import PRECISIONS, RUNTIMES
from pointcalip.projection import get_projection, projection_names

SPLITS = ("train", "test")
PROMPT_SELECT: Tuple[str, ...] = ("none", "val")
ZERO_SHOT_TEMPLATE = "point cloud depth map of a {}."
FEW_SHOT_TEMPLATE = "point cloud of a big {}."
DEFAULT_CONFIG = "modelnet40_zeroshot"


@dataclass(frozen=True)
class EvalConfig:
    """Everything ``pointcalip eval`` needs; see the preset ``modelnet40_zeroshot``."""

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
    prompts: Optional[str] = None
    prompt_select: str = "none"
    alpha: float = DEFAULT_ALPHA
    beta2: float = DEFAULT_BETA2
    beta3: float = DEFAULT_BETA3
    view_weights: Optional[Tuple[float, ...]] = None
    search: str = "none"
    search_views: Optional[Tuple[int, ...]] = None
    search_strategy: str = "auto"
    view_weight_grid: Tuple[float, ...] = VIEW_WEIGHT_GRID
    beta2_range: Tuple[float, float] = BETA2_RANGE
    beta3_range: Tuple[float, float] = BETA3_RANGE
    beta_steps: int = BETA_STEPS
    val_fraction: float = 0.2
    seed: int = 0
    batch_size: int = 32
    workers: int = 0
    device: str = "auto"
    runtime: str = "auto"
    precision: str = "fp32"
    output: str = "out/eval"
    report: Optional[str] = None
    cache_dir: Optional[str] = None
    use_cache: bool = True
    head: Optional[str] = None
    progress: bool = True

    def resolved_view_weights(self) -> Tuple[float, ...]:
        """The view weights, ``(1.0,) * V`` when not given."""
        return self.view_weights or (1.0,) * get_projection(self.projection).num_views

    def effective_betas(self) -> Tuple[float, float]:
        """``(beta2, beta3)`` as applied: the config's for ``calip``, ``(0, 0)`` for ``pointclip``."""
        return (self.beta2, self.beta3) if self.method == "calip" else (0.0, 0.0)

    def to_dict(self) -> Dict[str, Any]:
        return config_to_dict(self)


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """``dataclasses.asdict`` in JSON form (tuples as lists): the one recipe for configs in
    ``results.json``, head files, resume checks and cache keys."""
    return _json_form(dataclasses.asdict(cfg))


def _json_form(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_form(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_form(v) for v in value]
    return value


def _choice(name: str, value: Any, valid: Tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"invalid {name} {value!r}; valid: {', '.join(valid)}")


def validate(cfg: EvalConfig) -> EvalConfig:
    """Raise ``ConfigError`` naming the first bad value; return ``cfg``."""
    from pointcalip.datasets import dataset_names

    _choice("dataset", cfg.dataset, tuple(dataset_names()))
    _choice("runtime", cfg.runtime, RUNTIMES)
    _choice("precision", cfg.precision, PRECISIONS)
    _choice("prompt_select", cfg.prompt_select, PROMPT_SELECT)
    _choice("search_strategy", cfg.search_strategy, STRATEGIES)
    _choice("split", cfg.split, SPLITS)
    _choice("method", cfg.method, METHODS)
    _choice("search", cfg.search, SEARCH_MODES)
    _choice("projection", cfg.projection, projection_names())
    v = get_projection(cfg.projection).num_views
    if cfg.view_weights is not None and len(cfg.view_weights) != v:
        raise ConfigError(f"view_weights has {len(cfg.view_weights)} values but projection "
                          f"{cfg.projection!r} has {v} views")
    if cfg.num_points < 1 or cfg.batch_size < 1 or cfg.workers < 0:
        raise ConfigError("num_points and batch_size must be positive, workers >= 0")
    if cfg.search_views is not None and not all(0 <= i < v for i in cfg.search_views):
        raise ConfigError(f"search_views must be view indices in [0, {v}); got {list(cfg.search_views)}")
    if cfg.prompt_select == "val" and not cfg.prompts:
        raise ConfigError("prompt_select 'val' picks one sentence per class from a prompt file: give --prompts FILE.json")
    if cfg.prompt_select == "val" and cfg.split != "test":
        raise ConfigError("prompt_select 'val' selects on held-out training clouds and reports the test split: "
                          "use it with split 'test'")
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


def preset_names() -> List[str]:
    """Names of the YAML presets shipped in the package (``modelnet40_zeroshot``, ...)."""
    files = importlib.resources.files("pointcalip.configs").iterdir()
    return sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml"))


def read_config_text(name_or_path: str) -> Tuple[str, str]:
    """``(text, source)`` of a YAML file path or a preset name (``modelnet40_zeroshot``).

    ``configs/NAME.yaml`` (the checkout layout of the first release) also names a preset.
    """
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p.read_text(encoding="utf-8"), str(p)
    stem = p.name[: -len(".yaml")] if p.name.endswith(".yaml") else p.name
    if str(p.parent) in (".", "configs") and stem in preset_names():
        res = importlib.resources.files("pointcalip.configs") / f"{stem}.yaml"
        return res.read_text(encoding="utf-8"), f"preset {stem}"
    raise ConfigError(f"{name_or_path}: config file not found and no preset of that name; presets: {', '.join(preset_names())}")


def load_yaml(path: str) -> Dict[str, Any]:
    """The mapping in a YAML preset or file; ``ConfigError`` when missing or malformed."""
    text, source = read_config_text(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of option: value")
    return data


def build_config(path: Optional[str], overrides: Mapping[str, Any]) -> EvalConfig:
    """Defaults < YAML at ``path`` < ``overrides`` (``None`` values are ignored), validated."""
    return validate(layered(EvalConfig(), path, overrides))
