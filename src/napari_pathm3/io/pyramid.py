"""Slide -> multiscale list of dask arrays (one per level, one chunk per native tile, read on demand),
and bounded-memory downsampled reads for thumbnails and tissue detection."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .downsample import read_downsampled  # noqa: F401 - moved to io/downsample.py; still importable here

if TYPE_CHECKING:
    import dask.array as da

    from .backends.capabilities import TileDecoder
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
            return empty[(slice(None), slice(None)) + rest] if rest else empty
        px = self.slide.read_level_native(x0, y0, self.level, x1 - x0, y1 - y0)
        if self.ndim == 2:
            px = px[:, :, 0]
        return px[(slice(None), slice(None)) + rest] if rest else px


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
        reader,
        chunks=(ch, cw, *reader.shape[2:]),
        asarray=False,
        lock=False,
        fancy=False,
        name=f"pathm3-{slide.fingerprint}-{level}",
    )


def multiscale(slide: Slide, *, direct_tiff: bool = True) -> list[da.Array]:
    """One lazy dask array per pyramid level, largest first. Levels smaller than a pixel are dropped.

    ``direct_tiff``: backends with a direct tile decoder (plain tiled RGB TIFF/SVS pyramids) serve chunks
    from it (same pixels, less CPU per tile); ``False`` reads every chunk through ``Slide.read_region``."""
    levels = _tiff_levels(slide) if direct_tiff else None
    return levels or [level_array(slide, i) for i in range(slide.level_count)]


#: Backends with :class:`~.backends.capabilities.DirectTiles` (plain tiled RGB TIFF pyramids: generic TIFF,
#: Aperio SVS) serve chunks from tiles decoded directly (:class:`~.backends.tiff_tiles.TiffTiles`: imagecodecs,
#: the same pixels as OpenSlide, checked in tests): per chunk one ``pread`` and one decode, with less Python
#: per chunk than a tifffile-zarr store (zarr's async codec pipeline) and a fraction of OpenSlide's CPU per
#: tile (benchmarks/bench_view.py). Other files: ``Slide.read_level_native``.
class _TileLevel:
    """Array-like view of one plain tiled TIFF level (dask calls ``__getitem__`` with one chunk's slices)."""

    def __init__(self, slide: Slide, tiles: TileDecoder, level: int) -> None:
        self.slide, self.tiles, self.level = slide, tiles, level
        w, h = slide.level_dimensions[level]
        self.shape: tuple[int, ...] = (h, w, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        y0, y1, _ = key[0].indices(self.shape[0])
        x0, x1, _ = key[1].indices(self.shape[1])
        out = np.empty((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)
        if out.size and not self._read(x0, y0, out):  # a missing or undecodable tile: the slide reads it
            out = self.slide.read_level_native(x0, y0, self.level, x1 - x0, y1 - y0)
        return out[(slice(None), slice(None)) + key[2:]] if len(key) > 2 else out

    def _read(self, x: int, y: int, out: np.ndarray) -> bool:
        try:
            return self.tiles.read_into(self.level, x, y, out)
        except Exception:  # noqa: BLE001 - the slide's read raises the proper SlideReadError, if any
            return False


def _tiff_levels(slide: Slide) -> list[da.Array] | None:
    # no tile cache: napari asks for each chunk once and keeps what it shows; one tile per level is kept
    tiles = slide.tile_decoder(cache_bytes=0)
    if tiles is None or not all(tiles.supports(i) for i in range(slide.level_count)):
        if tiles is not None:
            tiles.close()
        return None
    import dask.array as da

    return [
        da.from_array(
            _TileLevel(slide, tiles, i),
            chunks=(*level_chunks(slide, i), 3),
            asarray=False,
            lock=False,
            fancy=False,
            name=f"pathm3-tiff-{slide.fingerprint}-{i}",
        )
        for i in range(slide.level_count)
    ]


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
