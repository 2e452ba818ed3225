"""Word and phrase maps -> napari image layers (one pixel per grid step, never one shape per patch; a
multiscale pyramid once the raster is larger than :data:`MULTISCALE_SIDE`), and a fast switch of the shown word
(no layer rebuilt, only its data replaced).

Maps use the aggregate heatmap's fixed scale: log2 of the value relative to uniform 1/N, range -3..+3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .heatmaps import RELATIVE_LOG2_RANGE, attention_log2, grid_cells, grid_shape
from .layer_kinds import KIND_KEY, ResultLayerKind
from .layers import HEATMAP_STYLE, _bar_out_of_the_overlay, _units

if TYPE_CHECKING:
    from .tiling import PatchGrid

__all__ = ["MapRaster", "map_label", "map_layer", "phrase_map_layers", "switch_map"]

#: smallest pyramid level side kept (pixels)
_MIN_SIDE = 64
#: rasters with a longer side are shown as a pyramid (a 100k-patch slide is ~320 px a side: one level is
#: cheaper to swap than three; a pyramid pays off where one level no longer fits a GPU texture comfortably)
MULTISCALE_SIDE = 2048


def map_label(what: str) -> str:
    """Colour bar label of a word / phrase map."""
    return f"{what}: relevance vs uniform 1/N (log2; 0 = uniform)"


class MapRaster:
    """Scatters per-patch values of one grid onto its raster pyramid; the cell index is computed once, so a
    switch costs one ``bincount`` over the patches plus the pyramid's strided means."""

    def __init__(self, grid: PatchGrid) -> None:
        self.grid = grid
        self.shape = grid_shape(grid)
        rows, cols = grid_cells(grid)
        k = max(1, round(grid.size_level0 / grid.step_level0))
        flat, owner = [], []
        for dr in range(k):
            for dc in range(k):
                r, c = rows + dr, cols + dc
                ok = (r >= 0) & (c >= 0) & (r < self.shape[0]) & (c < self.shape[1])
                flat.append(r[ok] * self.shape[1] + c[ok])
                owner.append(np.flatnonzero(ok))
        self._flat = np.concatenate(flat)
        self._owner = np.concatenate(owner)
        size = self.shape[0] * self.shape[1]
        self._count = np.bincount(self._flat, minlength=size).astype(np.float64)

    def raster(self, values: np.ndarray) -> np.ndarray:
        """``(H, W)`` float32: log2 relative value per cell, NaN without a patch."""
        v = attention_log2(np.asarray(values, dtype=np.float64))
        v = np.where(np.isneginf(v), RELATIVE_LOG2_RANGE[0] - 1.0, v)
        total = np.bincount(self._flat, weights=v[self._owner], minlength=self._count.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(self._count > 0, total / np.maximum(self._count, 1), np.nan)
        return out.reshape(self.shape).astype(np.float32)

    @property
    def multiscale(self) -> bool:
        return max(self.shape) > MULTISCALE_SIDE

    def pyramid(self, values: np.ndarray) -> list[np.ndarray]:
        """The raster and, for a raster over :data:`MULTISCALE_SIDE`, its 2x nearest downsamples down to
        :data:`_MIN_SIDE` (napari multiscale)."""
        levels = [self.raster(values)]
        while self.multiscale and min(levels[-1].shape) >= 2 * _MIN_SIDE:
            levels.append(levels[-1][::2, ::2])
        return levels

    def transform(self, slide_scale: tuple[float, float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
        from .heatmaps import Raster

        return Raster(np.zeros(self.shape, np.float32), float(self.grid.step_level0)).transform(slide_scale)


def map_layer(
    values: np.ndarray,
    grid: PatchGrid | MapRaster,
    *,
    name: str,
    what: str,
    slide_scale: tuple[float, float],
    units: tuple[str, str] | None,
    metadata: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any], str]:
    """Layer-data tuple of a word or phrase map: a multiscale image on the slide's scale. ``grid``: the
    patch grid, or a :class:`MapRaster` already built for it (reused when switching words)."""
    raster = grid if isinstance(grid, MapRaster) else MapRaster(grid)
    levels = raster.pyramid(values)
    scale, translate = raster.transform(slide_scale)
    kwargs = {
        "name": name,
        "scale": scale,
        "translate": translate,
        "contrast_limits": RELATIVE_LOG2_RANGE,
        "interpolation2d": "nearest",
        "multiscale": len(levels) > 1,
        "metadata": {**(metadata or {}), KIND_KEY: ResultLayerKind.WORD_MAP.value, "scale": map_label(what)},
        **HEATMAP_STYLE,
        **_units(units, 2),
    }
    return (levels if len(levels) > 1 else levels[0]), kwargs, "image"


def switch_map(layer: Any, values: np.ndarray, raster: MapRaster, *, what: str) -> None:
    """Show ``values`` in an existing map layer (the interactive word switch): only the data changes; what
    the map is goes to ``metadata["map"]`` without an event (a metadata event costs a repaint of the layer
    list, ~40 ms under load)."""
    levels = raster.pyramid(values)
    layer.data = levels if getattr(layer, "multiscale", False) else levels[0]
    meta = getattr(layer, "metadata", None)
    if isinstance(meta, dict):
        meta["map"] = what  # in place: no event
    colorbar = getattr(layer, "colorbar", None)
    if colorbar is not None and not colorbar.visible:
        _bar_out_of_the_overlay(colorbar)
        colorbar.visible = True


def phrase_map_layers(result: Any) -> list[tuple[Any, dict[str, Any], str]]:
    """One image layer per phrase map of a result (``caption_slide(queries=...)``'s phrases, a zero-shot
    run's class maps), named ``"<slide> phrase: <phrase>"``, hidden until the user shows one. Few phrases, so
    one layer each; a grid's raster index is computed once for all of them."""
    if not result.phrase_maps:
        return []
    raster = MapRaster(result.grid)
    units = ("um", "um") if result.mpp_xy is not None else None
    layers = []
    for pm in result.phrase_maps:
        data, kwargs, kind = map_layer(
            pm.values,
            raster,
            name=f"{result.slide_name} phrase: {pm.phrase}",
            what=f"phrase '{pm.phrase}'",
            slide_scale=result.slide_scale,
            units=units,
            metadata={"slide_path": result.slide_path, "method": pm.method},
        )
        kwargs["metadata"][KIND_KEY] = ResultLayerKind.PHRASE_MAP.value
        kwargs["visible"] = False
        layers.append((data, kwargs, kind))
    return layers
