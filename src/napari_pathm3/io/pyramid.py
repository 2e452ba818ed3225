"""Slide -> multiscale list of dask arrays (one per level, one chunk per native tile, read on demand),
and bounded-memory downsampled reads for thumbnails and tissue detection."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .downsample import read_downsampled  # noqa: F401 - moved to io/downsample.py; still importable here

if TYPE_CHECKING:
    import dask.array as da

    from .slide import Slide

#: Chunk edge for untiled (stripped) images, whose "native tile" would be the whole level.
UNTILED_CHUNK = 1024
#: Native tiles smaller than this are grouped so napari does not schedule thousands of tiny tasks.
MIN_CHUNK = 256


class _LevelReader:
    """Array-like view of one level; dask calls ``__getitem__`` with one chunk's slices.

    RGB slides give ``(h, w, 3)`` uint8; other slides their native samples: ``(h, w)`` for one channel,
    ``(h, w, c)`` for several, in the file's dtype (so the dask metadata equals what every chunk holds).
    """

    def __init__(self, slide: Slide, level: int) -> None:
        self.slide, self.level = slide, level
        w, h = slide.level_dimensions[level]
        self._rgb = slide.is_rgb
        c = 3 if self._rgb else slide.channels
        self.shape: tuple[int, ...] = (h, w, c) if c > 1 else (h, w)
        self.dtype = np.dtype(np.uint8) if self._rgb else slide.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        ys, xs = key[0], key[1]
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        rest = key[2:]
        if y1 <= y0 or x1 <= x0:
            empty = np.zeros((max(0, y1 - y0), max(0, x1 - x0), *self.shape[2:]), self.dtype)
            return empty[(slice(None), slice(None), *rest)] if rest else empty
        px = self.slide.read_level_native(x0, y0, self.level, x1 - x0, y1 - y0)
        if self.ndim == 2:
            px = px[:, :, 0]
        return px[(slice(None), slice(None), *rest)] if rest else px


def level_chunks(slide: Slide, level: int) -> tuple[int, int]:
    """Dask chunk (height, width) for ``level``: the native tile, grouped up to at least MIN_CHUNK."""
    tile = slide.tile_size(level)
    w, h = slide.level_dimensions[level]
    if tile is None or tile[0] >= w and tile[1] >= h and max(w, h) > UNTILED_CHUNK:
        return (min(h, UNTILED_CHUNK), min(w, UNTILED_CHUNK))
    tw, th = tile
    tw *= max(1, math.ceil(MIN_CHUNK / tw))
    th *= max(1, math.ceil(MIN_CHUNK / th))
    return (min(h, th), min(w, tw))


def level_array(slide: Slide, level: int) -> da.Array:
    import dask.array as da

    ch, cw = level_chunks(slide, level)
    reader = _LevelReader(slide, level)
    return da.from_array(
        reader, chunks=(ch, cw, *reader.shape[2:]), asarray=False, lock=False, fancy=False,
        name=f"pathm3-{slide.fingerprint}-{level}",
    )  # fmt: skip


def multiscale(slide: Slide, *, direct_tiff: bool = True) -> list[da.Array]:
    """One lazy dask array per pyramid level, largest first. Levels smaller than a pixel are dropped.

    ``direct_tiff``: plain tiled RGB TIFF/SVS pyramids read their tiles through tifffile's zarr view (same
    pixels, less CPU per tile); ``False`` reads every chunk through ``Slide.read_region``."""
    levels = _tiff_levels(slide) if direct_tiff else None
    return levels or [level_array(slide, i) for i in range(slide.level_count)]


#: Plain tiled RGB TIFF pyramids (generic TIFF, Aperio SVS) are shown through tifffile's zarr view, whose
#: tiles imagecodecs decodes directly: the same pixels as OpenSlide (checked in tests) for ~30% less CPU per
#: tile than OpenSlide's decode + composite (benchmarks/bench_view.py). Every other file goes through OpenSlide.
_TIFF_SUFFIXES = (".tif", ".tiff", ".svs")


def _tiff_levels(slide: Slide) -> list[da.Array] | None:
    file = getattr(slide, "_file", None)
    if slide.backend != "openslide" or file is None or file.suffix.lower() not in _TIFF_SUFFIXES:
        return None
    if not getattr(slide, "is_rgb", True):  # non-RGB samples keep their own path
        return None
    try:
        import dask.array as da
        import tifffile
        import zarr

        tif = tifffile.TiffFile(file)  # closed with the arrays that hold it (napari layers keep it open)
        levels = tif.series[0].levels
        if len(levels) != slide.level_count or not all(
            lv.shape == (h, w, 3) and lv.dtype == np.uint8 and lv.keyframe.is_tiled
            for lv, (w, h) in zip(levels, slide.level_dimensions, strict=True)
        ):
            tif.close()
            return None
        node = zarr.open(tif.series[0].aszarr(), mode="r")
        arrays = [node] if len(levels) == 1 else [node[str(i)] for i in range(len(levels))]
        return [
            da.from_zarr(a, chunks=(*level_chunks(slide, i), 3), name=f"pathm3-tiff-{slide.fingerprint}-{i}")
            for i, a in enumerate(arrays)
        ]
    except Exception:  # noqa: BLE001 - anything tifffile cannot map exactly goes through OpenSlide
        return None


def contrast_limits(slide: Slide) -> list[tuple[float, float]]:
    """Display range per channel: ``(0, 255)`` for RGB; else the 0.1-99.9 % percentiles of the smallest level
    (so a 16-bit or fluorescence image does not open nearly black against its dtype's full range)."""
    if slide.is_rgb:
        return [(0.0, 255.0)]
    level = slide.level_count - 1
    w, h = (min(v, 4096) for v in slide.level_dimensions[level])  # bounded read, even without a pyramid
    step = max(1, math.ceil(max(w, h) / 1024))
    px = slide.read_level_native(0, 0, level, w, h)[::step, ::step]
    out = []
    for c in range(px.shape[2]):
        lo, hi = (float(v) for v in np.percentile(px[..., c], (0.1, 99.9)))
        if hi <= lo:
            hi = lo + 1.0
        out.append((lo, hi))
    return out
