"""Attention scores on a patch grid -> rasters aligned with the slide's level 0 (pure numpy).

A :class:`Raster` has one pixel per grid step (``downsample`` level-0 pixels), its top-left pixel's corner at
``origin`` (level-0 ``x, y``). :meth:`Raster.transform` gives the napari ``scale``/``translate`` that put it
exactly over a slide layer whose ``scale`` is µm per level-0 pixel: napari centres pixel ``i`` of a layer at
``translate + i * scale``, so a raster pixel covering level-0 pixels ``[k*ds, (k+1)*ds)`` is centred at
``(k*ds + (ds-1)/2)`` level-0 pixel centres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .tiling.grid import PatchGrid
from .tiling.tissue import TissueMask

Scale2 = tuple[float, float]


@dataclass(frozen=True)
class Raster:
    """An image on a regular grid over level 0.

    Attributes:
        data: ``(H, W)`` or ``(q, H, W)`` values (NaN where there is no patch).
        downsample: level-0 pixels per raster pixel (the grid step).
        origin: level-0 ``(x, y)`` of the top-left corner of pixel ``(0, 0)``.
    """

    data: np.ndarray
    downsample: float
    origin: tuple[float, float] = (0.0, 0.0)

    def transform(self, slide_scale: Scale2 = (1.0, 1.0)) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """napari ``(scale, translate)`` (leading axes get scale 1, translate 0) for a slide layer of
        ``slide_scale`` = (µm/px y, µm/px x) at level 0 (``(1, 1)`` for pixel units)."""
        sy, sx = (float(v) for v in slide_scale)
        ds = float(self.downsample)
        ox, oy = self.origin
        lead = self.data.ndim - 2
        scale = (1.0,) * lead + (ds * sy, ds * sx)
        translate = (0.0,) * lead + ((oy + (ds - 1) / 2) * sy, (ox + (ds - 1) / 2) * sx)
        return scale, translate

    def level0_bounds(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` covered in level-0 pixels."""
        h, w = self.data.shape[-2:]
        ox, oy = self.origin
        return ox, oy, ox + w * self.downsample, oy + h * self.downsample


def grid_shape(grid: PatchGrid) -> tuple[int, int]:
    """``(rows, cols)`` of the raster with one pixel per grid step that covers the whole slide."""
    w0, h0 = grid.slide_dimensions
    step = grid.step_level0
    return max(1, math.ceil(h0 / step)), max(1, math.ceil(w0 / step))


def grid_cells(grid: PatchGrid) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each patch's top-left cell on the grid-step raster."""
    step = grid.step_level0
    rows = np.rint(grid.coords[:, 1] / step).astype(np.int64)
    cols = np.rint(grid.coords[:, 0] / step).astype(np.int64)
    return rows, cols


def attention_raster(values: np.ndarray, grid: PatchGrid, *, fill: float = np.nan) -> Raster:
    """Scatter per-patch ``values`` ``(n,)`` or ``(q, n)`` onto a raster with one pixel per grid step.

    With overlapping patches (stride < patch size) every cell a patch covers gets the mean of the patches
    covering it. Cells without a patch (background, outside the region) hold ``fill``.
    """
    values = np.asarray(values, dtype=np.float32)
    squeeze = values.ndim == 1
    v = values[None] if squeeze else values  # (q, n)
    if v.ndim != 2 or v.shape[1] != len(grid):
        raise ValueError(f"values must be (n,) or (q, n) with n = {len(grid)} patches, got {values.shape}")
    rows_n, cols_n = grid_shape(grid)
    r0, c0 = grid_cells(grid)
    k = max(1, round(grid.size_level0 / grid.step_level0))  # cells per patch side
    total = np.zeros((v.shape[0], rows_n, cols_n), np.float64)
    count = np.zeros((rows_n, cols_n), np.int64)
    for dr in range(k):
        for dc in range(k):
            r, c = r0 + dr, c0 + dc
            ok = (r < rows_n) & (c < cols_n) & (r >= 0) & (c >= 0)
            np.add.at(count, (r[ok], c[ok]), 1)
            for qi in range(v.shape[0]):
                np.add.at(total[qi], (r[ok], c[ok]), v[qi, ok])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), fill).astype(np.float32)
    return Raster(out[0] if squeeze else out, float(grid.step_level0))


def tissue_raster(tissue: TissueMask) -> Raster:
    """The tissue mask as a ``uint8`` label raster (1 = tissue, 0 = background)."""
    return Raster(np.asarray(tissue.mask, dtype=np.uint8), float(tissue.downsample))


def normalize(values: np.ndarray, *, method: str = "minmax") -> np.ndarray:
    """Scale finite values to [0, 1]: ``"minmax"`` or ``"rank"`` (percentile, as in CLAM heatmaps). NaN stays."""
    v = np.asarray(values, dtype=np.float64)
    out = np.full(v.shape, np.nan)
    ok = np.isfinite(v)
    if not ok.any():
        return out
    x = v[ok]
    if method == "rank":
        order = np.argsort(np.argsort(x, kind="stable"), kind="stable")
        out[ok] = order / max(1, x.size - 1)
    elif method == "minmax":
        lo, hi = float(x.min()), float(x.max())
        out[ok] = (x - lo) / (hi - lo) if hi > lo else 0.5
    else:
        raise ValueError(f"normalize: unknown method {method!r} (use 'minmax' or 'rank')")
    return out


#: The one attention scale of every heatmap (napari layers and PNG): log2 of attention relative to uniform
#: attention 1/N over the N patches, on this fixed range (1/8x .. 8x uniform). A fixed range cannot invent
#: contrast: attention that is nearly uniform shows as nearly one colour (the middle of the ramp), however
#: small its spread. Min-max stretching, by contrast, paints a 2 % spread over the whole colour ramp.
RELATIVE_LOG2_RANGE: tuple[float, float] = (-3.0, 3.0)
ATTENTION_SCALE_LABEL = "attention vs uniform 1/N (log2; 0 = uniform)"


def relative_attention(values: np.ndarray) -> np.ndarray:
    """Attention ``(n,)`` or ``(q, n)`` as multiples of uniform attention ``1/n`` (per row; 1 = uniform).

    Rows are renormalised over their finite entries first, so a region's subset of patches is compared
    with its own uniform level. NaN stays NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    squeeze = v.ndim == 1
    v = v[None] if squeeze else v
    ok = np.isfinite(v)
    n = ok.sum(axis=-1, keepdims=True)
    total = np.where(ok, v, 0.0).sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(ok & (total > 0), v / np.where(total > 0, total, 1.0) * n, np.nan)
    return out[0] if squeeze else out


def attention_log2(values: np.ndarray) -> np.ndarray:
    """``log2`` of :func:`relative_attention` (0 = uniform), not clipped; zero attention gives ``-inf``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log2(relative_attention(values))


def to_unit_range(log2_values: np.ndarray, limits: tuple[float, float] = RELATIVE_LOG2_RANGE) -> np.ndarray:
    """Map log2 relative attention onto [0, 1] with the fixed ``limits`` (clipped), for :func:`colorize`."""
    lo, hi = limits
    v = np.asarray(log2_values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(v), np.nan, np.clip((v - lo) / (hi - lo), 0.0, 1.0))


def attention_spread(values: np.ndarray) -> dict[str, float]:
    """How far attention ``(n,)`` is from uniform: ``n``, min / median / max as multiples of ``1/n`` and the
    coefficient of variation (std / mean). Stated beside every heatmap so readers can judge its contrast."""
    rel = relative_attention(values)
    rel = rel[np.isfinite(rel)]
    if rel.size == 0:
        return {"n": 0, "min": float("nan"), "median": float("nan"), "max": float("nan"), "cv": float("nan")}
    return {
        "n": int(rel.size),
        "min": float(rel.min()),
        "median": float(np.median(rel)),
        "max": float(rel.max()),
        "cv": float(rel.std() / rel.mean()) if rel.mean() > 0 else float("nan"),
    }


def spread_text(spread: dict[str, float]) -> str:
    """One line for a caption: ``263 patches; attention 0.97x-1.03x uniform (CV 2.1%)``."""
    if not spread.get("n"):
        return "no patches"
    return (
        f"{spread['n']} patches; attention {spread['min']:.2f}x-{spread['max']:.2f}x uniform "
        f"(CV {spread['cv']:.1%})"
    )


def colorbar_ticks(limits: tuple[float, float] = RELATIVE_LOG2_RANGE) -> list[tuple[float, str]]:
    """``(log2 value, label)`` ticks of the attention colour bar: ``1/8x … 1x … 8x``."""
    lo, hi = (int(math.floor(limits[0])), int(math.ceil(limits[1])))
    ticks = []
    for k in range(lo, hi + 1):
        label = f"{2**k:g}x" if k >= 0 else f"1/{2**-k:g}x"
        ticks.append((float(k), label))
    return ticks


def top_k(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest entries, largest first (ties: lower index first)."""
    v = np.asarray(values, dtype=np.float64)
    k = max(0, min(int(k), v.size))
    idx = np.argsort(-v, kind="stable")[:k]
    return idx.astype(np.int64), v[idx]


def patch_boxes(grid: PatchGrid, indices: np.ndarray | None = None) -> np.ndarray:
    """``(k, 4, 2)`` rectangle corners ``(y, x)`` in level-0 pixels (napari shapes order) of the patches."""
    coords = grid.coords if indices is None else grid.coords[np.asarray(indices, dtype=np.int64)]
    s = float(grid.size_level0)
    x, y = coords[:, 0].astype(np.float64), coords[:, 1].astype(np.float64)
    # patch pixels span [x, x+s); as napari pixel centres the box edges sit half a pixel outside them
    x0, y0, x1, y1 = x - 0.5, y - 0.5, x + s - 0.5, y + s - 0.5
    return np.stack(
        [np.stack([y0, x0], 1), np.stack([y0, x1], 1), np.stack([y1, x1], 1), np.stack([y1, x0], 1)], 1
    )


# ------------------------------------------------------------------------------------------------ colour

#: Matplotlib's "turbo"-like ramp (eight stops; Google's Turbo, Apache-2.0): blue (low) -> red (high).
#: Chosen because its blues/greens/yellows stand apart from eosin pink and haematoxylin purple.
_TURBO = np.array(
    [
        [48, 18, 59],
        [70, 107, 227],
        [40, 187, 236],
        [49, 241, 152],
        [164, 252, 59],
        [237, 208, 58],
        [251, 128, 34],
        [122, 4, 3],
    ],
    dtype=np.float64,
)


def colorize(values01: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """Map values in [0, 1] to RGBA uint8 with the turbo ramp; NaN becomes fully transparent."""
    v = np.asarray(values01, dtype=np.float64)
    ok = np.isfinite(v)
    t = np.clip(np.where(ok, v, 0.0), 0.0, 1.0) * (len(_TURBO) - 1)
    i0 = np.clip(np.floor(t).astype(np.int64), 0, len(_TURBO) - 2)
    f = (t - i0)[..., None]
    rgb = _TURBO[i0] * (1 - f) + _TURBO[i0 + 1] * f
    a = np.where(ok, round(255 * alpha), 0)[..., None]
    return np.concatenate([rgb, a], axis=-1).round().astype(np.uint8)


def overlay(
    rgb: np.ndarray, raster: Raster, slide_dimensions: tuple[int, int], *, alpha: float = 0.5
) -> np.ndarray:
    """Blend a normalised ``raster`` (values in [0, 1], NaN = none) over ``rgb``, a whole-slide thumbnail of
    a slide whose level 0 is ``slide_dimensions`` = (width, height). Returns RGB uint8 of ``rgb``'s shape."""
    h, w = rgb.shape[:2]
    w0, h0 = slide_dimensions
    # level-0 coordinate of each thumbnail pixel centre -> raster cell (nearest neighbour: cells stay crisp)
    xs = (np.arange(w) + 0.5) * (w0 / w)
    ys = (np.arange(h) + 0.5) * (h0 / h)
    ox, oy = raster.origin
    cols = np.floor((xs - ox) / raster.downsample).astype(np.int64)
    rows = np.floor((ys - oy) / raster.downsample).astype(np.int64)
    rh, rw = raster.data.shape[-2:]
    valid = (rows[:, None] >= 0) & (rows[:, None] < rh) & (cols[None, :] >= 0) & (cols[None, :] < rw)
    vals = raster.data[np.clip(rows, 0, rh - 1)[:, None], np.clip(cols, 0, rw - 1)[None, :]]
    vals = np.where(valid, vals, np.nan)
    rgba = colorize(vals, alpha=alpha).astype(np.float64)
    a = rgba[..., 3:4] / 255.0
    return (rgb[..., :3].astype(np.float64) * (1 - a) + rgba[..., :3] * a).round().astype(np.uint8)
