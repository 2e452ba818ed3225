"""mpp-aware patch grid: where to cut patches (level-0 coordinates) and how to read them.

Pure geometry on top of a slide's metadata and a :class:`~napari_pathm3.tiling.tissue.TissueMask`; the
result, :class:`PatchGrid`, is the input of feature extraction.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import TilingConfig
from ..errors import GridError
from .tissue import TissueMask, detect_tissue

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class PatchGrid:
    """Square patches on a slide.

    Attributes:
        coords: ``(n, 2)`` int64 top-left corners ``(x, y)`` in level-0 pixels.
        patch_size: side of every patch as delivered to the encoder, in pixels.
        mpp: µm/px of the delivered patches (``None`` when the slide has no mpp).
        size_level0: side of a patch in level-0 pixels (``patch_size * downsample``).
        read_level: pyramid level the pixels are read from.
        read_size: side of the region read at ``read_level`` (resized to ``patch_size`` when different).
        tissue_fraction: ``(n,)`` tissue fraction of each patch.
    """

    coords: np.ndarray
    patch_size: int
    mpp: float | None
    size_level0: float
    read_level: int
    read_size: int
    step_level0: float
    slide_dimensions: tuple[int, int]
    tissue_fraction: np.ndarray
    config: TilingConfig = field(default_factory=TilingConfig)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def downsample(self) -> float:
        """Level-0 pixels per delivered patch pixel."""
        return self.size_level0 / self.patch_size

    @property
    def needs_resize(self) -> bool:
        return self.read_size != self.patch_size

    def params(self) -> dict[str, object]:
        """Everything that defines the grid (what a feature cache must match to be reused)."""
        return {
            "patch_size": self.patch_size,
            "mpp": self.mpp,
            "size_level0": self.size_level0,
            "read_level": self.read_level,
            "read_size": self.read_size,
            "step_level0": self.step_level0,
            "slide_dimensions": list(self.slide_dimensions),
            "tiling": self.config.to_dict(),
        }

    def subset(self, keep: np.ndarray) -> PatchGrid:
        """Grid with only the patches selected by a boolean mask or index array (e.g. inside a region)."""
        return dataclasses.replace(self, coords=self.coords[keep], tissue_fraction=self.tissue_fraction[keep])

    def centers(self) -> np.ndarray:
        """``(n, 2)`` float patch centres ``(x, y)`` in level-0 pixels."""
        return self.coords.astype(np.float64) + self.size_level0 / 2


def _tissue_fractions(tissue: TissueMask, xs: np.ndarray, ys: np.ndarray, size0: float) -> np.ndarray:
    """Tissue fraction of every grid square, via a summed-area table of the mask (vectorised)."""
    m = tissue.mask.astype(np.int64)
    sat = np.zeros((m.shape[0] + 1, m.shape[1] + 1), np.int64)
    sat[1:, 1:] = m.cumsum(0).cumsum(1)
    ds = tissue.downsample

    def idx(v: np.ndarray, limit: int) -> np.ndarray:
        return np.clip(v, 0, limit).astype(np.int64)

    c0 = np.floor(xs / ds).astype(np.int64)
    c1 = np.maximum(c0 + 1, np.ceil((xs + size0) / ds).astype(np.int64))
    r0 = np.floor(ys / ds).astype(np.int64)
    r1 = np.maximum(r0 + 1, np.ceil((ys + size0) / ds).astype(np.int64))
    C0, C1 = idx(c0, m.shape[1])[None, :], idx(c1, m.shape[1])[None, :]
    R0, R1 = idx(r0, m.shape[0])[:, None], idx(r1, m.shape[0])[:, None]
    inside = sat[R1, C1] - sat[R0, C1] - sat[R1, C0] + sat[R0, C0]
    area = (r1 - r0)[:, None] * (c1 - c0)[None, :]
    return inside / area  # (rows, cols)


#: a patch whose side covers fewer level-0 pixels than this is an upsampled blur: the mpp must be wrong
MIN_PATCH_LEVEL0 = 16
#: default most grid positions (before tissue filtering); ``NAPARI_PATHM3_MAX_PATCHES`` or ``max_patches`` override
DEFAULT_MAX_PATCHES = 500_000
MAX_PATCHES_ENV = "NAPARI_PATHM3_MAX_PATCHES"
#: the highest limit that may be asked for: 100 M patches is ~10 hours of encoding on a GPU per slide
MAX_PATCHES_LIMIT = 100_000_000


def _max_patches(max_patches: int | None) -> int:
    from ..schemas import bounded

    raw: int | str
    if max_patches is not None:
        where, raw = "max_patches", max_patches
    else:
        where, raw = f"${MAX_PATCHES_ENV}", os.environ.get(MAX_PATCHES_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_PATCHES
    try:
        return int(bounded(raw, name=where, ge=1, le=MAX_PATCHES_LIMIT))
    except ValueError as err:  # a negative or absurd limit must not be used as one
        raise GridError(f"{err}; unset it for the default {DEFAULT_MAX_PATCHES:,}") from None


@dataclass(frozen=True)
class _Geometry:
    read_level: int
    read_size: int
    downsample: float
    out_mpp: float | None
    xs: np.ndarray
    ys: np.ndarray


def _geometry(slide: Any, config: TilingConfig, max_patches: int | None, *, warn: bool = True) -> _Geometry:
    """Grid positions and read settings from metadata alone (no pixels): fails fast on absurd grids."""
    w0, h0 = slide.dimensions
    if config.target_mpp is not None:
        mpp0 = slide.require_mpp()
        downsample = config.target_mpp / mpp0
        read_level = slide.best_level_for_downsample(max(downsample, 1.0))
        level_ds = slide.level_downsamples[read_level]
        if abs(level_ds - downsample) <= config.mpp_tolerance * downsample:
            downsample = level_ds  # stored resolution is close enough: read it as is
            read_size = config.patch_size
        else:
            read_size = max(1, round(config.patch_size * downsample / level_ds))
        out_mpp: float | None = mpp0 * downsample
    else:
        read_level = config.level or 0
        if read_level >= slide.level_count:
            raise ValueError(f"level {read_level} out of range: slide has {slide.level_count} levels")
        downsample = slide.level_downsamples[read_level]
        read_size = config.patch_size
        out_mpp = None if slide.mpp is None else slide.mpp * downsample
    size0, step0 = config.patch_size * downsample, config.step * downsample
    # counted before the positions are allocated: a wrong mpp (e.g. 1e-55 µm/px) must get the clear refusal,
    # not numpy's "Maximum allowed size exceeded"
    nx = math.ceil((w0 - size0 + 1e-6) / step0) if w0 >= size0 else 0  # = len(np.arange(...)) below
    ny = math.ceil((h0 - size0 + 1e-6) / step0) if h0 >= size0 else 0
    _check_sane(slide, config, size0, nx * ny, _max_patches(max_patches))
    xs = np.arange(0.0, w0 - size0 + 1e-6, step0) if w0 >= size0 else np.zeros(0)
    ys = np.arange(0.0, h0 - size0 + 1e-6, step0) if h0 >= size0 else np.zeros(0)
    if warn and config.target_mpp is not None and downsample < 1.0 - config.mpp_tolerance:
        warnings.warn(
            f"target {config.target_mpp} µm/px is finer than the slide's {slide.mpp:.3f} µm/px; "
            "patches are upsampled",
            stacklevel=3,
        )
    return _Geometry(read_level, read_size, downsample, out_mpp, xs, ys)


def _check_sane(slide: Any, config: TilingConfig, size0: float, count: int, limit: int) -> None:
    name = getattr(getattr(slide, "path", None), "name", "slide")
    mpp = getattr(slide, "mpp", None)
    at = f"{mpp:.4g} µm/px" if mpp is not None else "pixel units"
    fix = (
        "check the slide's microns-per-pixel and pass the right one (--mpp on the command line, "
        "open_slide(path, mpp=...))"
    )
    if size0 < MIN_PATCH_LEVEL0:
        w0, h0 = slide.dimensions
        raise GridError(
            f"{name}: at {at} (level 0, {w0}×{h0} px) each {config.patch_size}-px patch at "
            f"{config.target_mpp} µm/px covers only {size0:.3g} px of the slide (minimum {MIN_PATCH_LEVEL0}); "
            f"the mpp is probably wrong: {fix}"
        )
    if count > limit:
        raise GridError(
            f"{name}: at {at} the grid has {count:,} patch positions, more than the limit of {limit:,}; "
            f"{fix}, or raise the limit (make_grid(..., max_patches=N) or ${MAX_PATCHES_ENV}=N)"
        )


def check_grid(slide: Any, config: TilingConfig | None = None, *, max_patches: int | None = None) -> None:
    """Fail at once when ``slide`` cannot be tiled as ``config`` asks: no mpp for a physical resolution
    (:class:`~napari_pathm3.errors.MissingMppError`), a grid absurd for its mpp (:class:`GridError`), or a
    slide that is not brightfield RGB (:class:`~napari_pathm3.errors.NotBrightfieldError`). Reads no pixels:
    call it before tissue detection."""
    require_rgb = getattr(slide, "require_rgb", None)
    if require_rgb is not None:
        require_rgb()
    _geometry(slide, config or TilingConfig(), max_patches, warn=False)


def make_grid(
    slide: Any,
    config: TilingConfig | None = None,
    *,
    tissue: TissueMask | None = None,
    max_patches: int | None = None,
) -> PatchGrid:
    """Lay a patch grid over the tissue of ``slide``.

    Args:
        slide: an open :class:`~napari_pathm3.io.slide.Slide`.
        config: patch size, resolution, stride and minimum tissue fraction.
        tissue: precomputed tissue mask; detected with default settings when omitted and needed.
        max_patches: most grid positions (before tissue filtering) accepted; default
            :data:`DEFAULT_MAX_PATCHES` or ``$NAPARI_PATHM3_MAX_PATCHES``.

    Returns:
        The grid; it is empty (``len(grid) == 0``) when no patch has enough tissue. Callers that need
        patches raise :class:`~napari_pathm3.errors.NoTissueError`.

    Raises:
        MissingMppError: ``config.target_mpp`` is set but the slide has no mpp.
        GridError: patches of fewer than :data:`MIN_PATCH_LEVEL0` level-0 pixels, or too many of them
            (checked before any tissue detection).
    """
    config = config or TilingConfig()
    w0, h0 = slide.dimensions
    g = _geometry(slide, config, max_patches)
    xs, ys, downsample = g.xs, g.ys, g.downsample
    size0 = config.patch_size * downsample
    step0 = config.step * downsample
    if config.min_tissue_fraction > 0 and xs.size and ys.size:
        tissue = tissue if tissue is not None else detect_tissue(slide)
        frac = _tissue_fractions(tissue, xs, ys, size0)
    else:
        frac = np.ones((ys.size, xs.size))
    rr, cc = np.nonzero(frac >= max(config.min_tissue_fraction, 1e-9))
    coords = np.stack([np.round(xs[cc]), np.round(ys[rr])], axis=1).astype(np.int64).reshape(-1, 2)
    grid = PatchGrid(
        coords=coords,
        patch_size=config.patch_size,
        mpp=g.out_mpp,
        size_level0=float(size0),
        read_level=g.read_level,
        read_size=g.read_size,
        step_level0=float(step0),
        slide_dimensions=(w0, h0),
        tissue_fraction=frac[rr, cc].astype(np.float32),
        config=config,
    )
    log.debug(
        "grid: %d patches of %d px (level %d, read %d px)",
        len(grid),
        config.patch_size,
        g.read_level,
        g.read_size,
    )
    return grid
