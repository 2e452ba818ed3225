"""Typed, frozen, JSON-serialisable configs (stdlib only: widgets and the CLI build them cheaply).

Defaults follow the PathM3 paper (Table 6) where it states a value; every other default says why.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{name}: {msg}")


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


@dataclass(frozen=True, kw_only=True)
class TissueConfig(_JsonMixin):
    """Tissue detection on a low-resolution image of the slide."""

    target_mpp: float = 8.0  # ~1.25x: enough detail for tissue outlines, small enough to hold in memory
    max_size: int = 4096  # cap of the detection image's long side when the slide has no mpp
    method: Literal["otsu_saturation", "otsu_od"] = "otsu_saturation"
    min_saturation: float = 0.05  # floor on the Otsu threshold so a white slide does not split its noise in two
    closing_radius_um: float = 16.0  # bridges small gaps inside tissue
    opening_radius_um: float = 8.0  # removes dust and pen specks
    min_area_um2: float = 10_000.0  # 100x100 µm: smaller islands are debris
    min_hole_area_um2: float = 5_000.0  # holes smaller than this are filled

    def __post_init__(self) -> None:
        _check(self.target_mpp > 0, "target_mpp", "must be > 0")
        _check(self.max_size >= 16, "max_size", "must be >= 16")
        _check(self.method in ("otsu_saturation", "otsu_od"), "method", f"unknown method {self.method!r}")
        _check(self.min_area_um2 >= 0, "min_area_um2", "must be >= 0")


@dataclass(frozen=True, kw_only=True)
class TilingConfig(_JsonMixin):
    """Patch grid. ``patch_size`` px at ``target_mpp`` µm/px (default 224 px at 0.5 µm/px, ~20x).

    Slides without mpp: set ``target_mpp=None`` and ``level`` to tile that pyramid level in its own pixels.
    """

    patch_size: int = 224
    target_mpp: float | None = 0.5
    level: int | None = None  # only used when target_mpp is None
    stride: int | None = None  # in target-resolution pixels; None = patch_size (no overlap)
    min_tissue_fraction: float = 0.25  # a patch is kept when at least this much of it is tissue
    mpp_tolerance: float = 0.05  # a stored level within 5% of the target is read as is, without resizing

    def __post_init__(self) -> None:
        _check(self.patch_size >= 8, "patch_size", "must be >= 8")
        _check(self.target_mpp is None or self.target_mpp > 0, "target_mpp", "must be > 0 or None")
        _check(self.stride is None or self.stride >= 1, "stride", "must be >= 1")
        _check(0.0 <= self.min_tissue_fraction <= 1.0, "min_tissue_fraction", "must be in [0, 1]")
        _check(self.level is None or self.level >= 0, "level", "must be >= 0")

    @property
    def step(self) -> int:
        return self.stride if self.stride is not None else self.patch_size

    @classmethod
    def with_overlap(cls, overlap: float, **kwargs: Any) -> TilingConfig:
        """Grid whose neighbouring patches overlap by ``overlap`` (fraction in [0, 1))."""
        _check(0.0 <= overlap < 1.0, "overlap", "must be in [0, 1)")
        size = kwargs.get("patch_size", 224)
        return cls(stride=max(1, round(size * (1.0 - overlap))), **kwargs)
