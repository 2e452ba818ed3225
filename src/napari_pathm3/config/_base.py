"""Shared machinery of the configs: JSON round trip of nested frozen dataclasses, field checks, size bounds."""

from __future__ import annotations

import dataclasses
import json
import numbers
from typing import Any, TypeVar

T = TypeVar("T")


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{name}: {msg}")


#: upper bounds of model sizes read from a (hand-edited) config.json: far above any real model (the paper's is
#: hidden 1408/768, 12 layers), low enough that a typo cannot ask for terabytes or loop for days
MAX_WIDTH = 16_384
MAX_LAYERS = 256
MAX_TOKENS = 8_192


def _in(value: object, lo: float, hi: float) -> bool:
    """``lo <= value <= hi`` for a real number (bool excluded); False for anything else."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and lo <= value <= hi


class _JsonMixin:
    """``to_dict``/``from_dict`` for nested frozen dataclasses; unknown keys are an error, not silently dropped."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - set(fields)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        hints = _nested_types(cls)
        for key, value in data.items():
            sub = hints.get(key)
            if sub is not None and isinstance(value, dict):
                value = sub.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)


def _nested_types(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        if dataclasses.is_dataclass(default) and hasattr(default, "from_dict"):
            out[f.name] = type(default)
    return out


# --------------------------------------------------------------------------------------------- slides / tiling
