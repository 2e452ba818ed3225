"""Configs of the slide side: tissue detection and the patch grid (and the default patch encoder)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ._base import _check, _in, _JsonMixin

#: The patch encoder used when none is named: works offline (a handcrafted colour/texture encoder, not a
#: foundation model). The one definition; the API, the CLI, the widgets and the demo read it from here.
DEFAULT_ENCODER = "builtin:colorstats"


@dataclass(frozen=True, kw_only=True)
class TissueConfig(_JsonMixin):
    """Tissue detection on a low-resolution image of the slide."""

    target_mpp: float = 8.0  # ~1.25x: enough detail for tissue outlines, small enough to hold in memory
    max_size: int = 4096  # cap of the detection image's long side when the slide has no mpp
    method: Literal["otsu_saturation", "otsu_od"] = "otsu_saturation"
    min_saturation: float = (
        0.05  # floor on the Otsu threshold so a white slide does not split its noise in two
    )
    closing_radius_um: float = 16.0  # bridges small gaps inside tissue
    opening_radius_um: float = 8.0  # removes dust and pen specks
    min_area_um2: float = 10_000.0  # 100x100 µm: smaller islands are debris
    min_hole_area_um2: float = 5_000.0  # holes smaller than this are filled
    threshold: float | None = None  # fixed threshold on the signal (saturation / OD) instead of Otsu's

    def __post_init__(self) -> None:
        _check(_in(self.target_mpp, 1e-6, 1e4) and self.target_mpp > 0, "target_mpp", "must be in (0, 10000]")
        _check(
            self.threshold is None or _in(self.threshold, 0, 1e6), "threshold", "must be >= 0 or None (Otsu)"
        )
        _check(_in(self.max_size, 16, 65_536), "max_size", "must be in [16, 65536]")
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
        _check(_in(self.patch_size, 8, 16_384), "patch_size", "must be in [8, 16384]")
        _check(
            self.target_mpp is None or (_in(self.target_mpp, 0, 1e4) and self.target_mpp > 0),
            "target_mpp",
            "must be in (0, 10000] or None",
        )
        _check(self.stride is None or _in(self.stride, 1, 16_384), "stride", "must be in [1, 16384]")
        _check(_in(self.min_tissue_fraction, 0.0, 1.0), "min_tissue_fraction", "must be in [0, 1]")
        _check(self.level is None or _in(self.level, 0, 64), "level", "must be in [0, 64]")
        _check(_in(self.mpp_tolerance, 0.0, 1.0), "mpp_tolerance", "must be in [0, 1]")

    @property
    def step(self) -> int:
        return self.stride if self.stride is not None else self.patch_size

    @classmethod
    def with_overlap(cls, overlap: float, **kwargs: Any) -> TilingConfig:
        """Grid whose neighbouring patches overlap by ``overlap`` (fraction in [0, 1))."""
        _check(0.0 <= overlap < 1.0, "overlap", "must be in [0, 1)")
        size = kwargs.get("patch_size", 224)
        return cls(stride=max(1, round(size * (1.0 - overlap))), **kwargs)


# --------------------------------------------------------------------------------------------- model
