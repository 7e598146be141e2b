"""Named projection presets: ``register_projection`` / ``get_projection`` / ``projection_names``.

A preset is an instance of a :class:`~pointcalip.projection.base.Projection` subclass. The
built-in ones are registered by their modules when :mod:`pointcalip.projection` is imported;
a test or a plug-in registers its own without touching any other module.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Tuple, Type

from pointcalip.errors import ConfigError
from pointcalip.projection.base import Projection

_PRESETS: Dict[str, Projection] = {}
_KINDS: Dict[str, Type[Projection]] = {}


def register_projection(preset: Projection, overwrite: bool = False) -> Projection:
    """Make ``preset`` available under ``preset.name``; returns it (usable as a decorator value)."""
    if not isinstance(preset, Projection):
        raise TypeError(f"register_projection expects a Projection instance, got {type(preset).__name__}")
    if preset.name in _PRESETS and not overwrite:
        raise ValueError(f"projection {preset.name!r} is already registered")
    _PRESETS[preset.name] = preset
    _KINDS.setdefault(preset.kind, type(preset))
    return preset


def unregister_projection(name: str) -> None:
    """Remove a preset (for tests and plug-ins that register temporary ones)."""
    _PRESETS.pop(name, None)


def projection_names() -> Tuple[str, ...]:
    """The registered preset names, in registration order."""
    return tuple(_PRESETS)


def get_projection(name: str) -> Projection:
    """The preset called ``name``; ``ConfigError`` lists the valid names."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown projection {name!r}; valid: {', '.join(_PRESETS)}") from None


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the frozen dataclasses hold."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def projection_from_dict(data: Mapping[str, Any]) -> Projection:
    """The projection described by ``Projection.to_dict()`` (as stored in head files).

    A stored description without ``kind`` is a scatter projection (files of the first release).
    """
    kind = data.get("kind", "scatter")
    if kind not in _KINDS:
        raise ConfigError(f"unknown projection kind {kind!r}; valid: {', '.join(_KINDS)}")
    cls = _KINDS[kind]
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: _tuples(v) for k, v in data.items() if k in names})
