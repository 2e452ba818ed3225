"""Direct tile decoding for plain tiled RGB TIFF pyramids (Aperio SVS, generic tiled TIFF): the
:class:`~.capabilities.TileDecoder` the OpenSlide and tiffslide backends offer.

For these files OpenSlide reads a tile's bytes, decodes them with libjpeg into premultiplied ARGB, caches and
composites them, and openslide-python converts the result again. imagecodecs (through tifffile's per-page
``decode``) decodes the same bytes with the same libjpeg-turbo straight to RGB: the pixels are identical
(``tests/io/test_tiff_tiles.py`` checks it against OpenSlide) and the CPU per tile is a fraction (977 JPEG
tiles of the generated 60k x 40k slide: 0.25 s against 1.19 s through OpenSlide, one thread).

:class:`TiffTiles` reads regions of such a level into a caller's buffer. Tile bytes come from ``os.pread`` on
a descriptor of its own (no shared file position, no lock), decoding releases the GIL, and decoded tiles stay
in a small LRU cache so patches that share a tile (224-px patches on 256-px tiles) decode it once. Anything
it cannot reproduce exactly (regions past the level edge, missing tiles, other vendors' tile layouts,
compressions or sample formats) returns ``False`` and the caller reads through the slide instead.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .capabilities import TILE_CACHE_BYTES

if TYPE_CHECKING:
    from tifffile import TiffPage

#: ``TiffPage.decode``: (tile or ``None``, indices, shape)
_Decode = Callable[..., tuple[np.ndarray | None, tuple[int, ...], tuple[int, ...]]]

log = logging.getLogger(__name__)

__all__ = ["TiffTiles"]

#: compressions decoded here: none, LZW, JPEG, deflate (lossless ones give identical pixels by definition;
#: JPEG is checked against OpenSlide in the tests)
_COMPRESSIONS = (1, 5, 7, 8, 32946)


@dataclass(frozen=True)
class _Level:
    width: int
    height: int
    tile_w: int
    tile_h: int
    tiles_x: int
    offsets: np.ndarray  # (tiles,) int64 file offsets of the tiles, row-major
    counts: np.ndarray  # (tiles,) int64 byte counts (0: missing tile)
    decode: _Decode
    jpegtables: bytes | None


class TiffTiles:
    """Region reads of the levels of a plain tiled RGB TIFF, decoded tile by tile (thread-safe)."""

    def __init__(
        self, path: Path, level_dimensions: list[tuple[int, int]], *, cache_bytes: int = TILE_CACHE_BYTES
    ):
        import tifffile

        self.path = path
        tif = tifffile.TiffFile(path)
        try:
            series = tif.series[0]
            self._levels: list[_Level | None] = [
                _level(lv.keyframe, dims) for lv, dims in zip(series.levels, level_dimensions, strict=False)
            ]
        finally:
            tif.close()  # offsets, counts and the decode closure are all we keep
        self._fd = -1  # opened on first read, closed by close() (a later read reopens it)
        self._lock = threading.Lock()  # guards the cache dict only; reads and decodes run outside it
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0

    @classmethod
    def for_file(
        cls, path: Path, level_dimensions: list[tuple[int, int]], *, cache_bytes: int = TILE_CACHE_BYTES
    ) -> TiffTiles | None:
        """A decoder for ``path`` when some of its levels are plain tiled RGB TIFF pages, else ``None``.
        The backend decides whether its vendor lays levels out as plain pages before asking."""
        try:
            tiles = cls(path, level_dimensions, cache_bytes=cache_bytes)
        except Exception as err:  # noqa: BLE001 - not a TIFF tifffile maps exactly: the slide reads it
            log.debug("%s: no direct tile decoding (%s)", path, err)
            return None
        if not any(tiles._levels):
            tiles.close()
            return None
        return tiles

    def supports(self, level: int) -> bool:
        return 0 <= level < len(self._levels) and self._levels[level] is not None

    def tile_size(self, level: int) -> tuple[int, int] | None:
        lv = self._levels[level] if 0 <= level < len(self._levels) else None
        return None if lv is None else (lv.tile_w, lv.tile_h)

    def read_into(self, level: int, x: int, y: int, out: np.ndarray) -> bool:
        """Fill ``out`` (``(h, w, 3)`` uint8, may be a strided view) with the level's pixels at level
        coordinates ``(x, y)``. ``False`` (``out`` untouched or partly written) when the region leaves the
        level or touches a missing tile: read it through the slide then."""
        lv = self._levels[level] if 0 <= level < len(self._levels) else None
        h, w = out.shape[:2]
        if lv is None or x < 0 or y < 0 or x + w > lv.width or y + h > lv.height:
            return False
        tw, th = lv.tile_w, lv.tile_h
        for ty in range(y // th, (y + h - 1) // th + 1):
            for tx in range(x // tw, (x + w - 1) // tw + 1):
                tile = self._tile(level, lv, ty * lv.tiles_x + tx)
                if tile is None:
                    return False
                x0, y0 = max(x, tx * tw), max(y, ty * th)
                x1, y1 = min(x + w, (tx + 1) * tw), min(y + h, (ty + 1) * th)
                out[y0 - y : y1 - y, x0 - x : x1 - x] = tile[
                    y0 - ty * th : y1 - ty * th, x0 - tx * tw : x1 - tx * tw
                ]
        return True

    def _tile(self, level: int, lv: _Level, index: int) -> np.ndarray | None:
        key = (level, index)
        with self._lock:
            tile = self._cache.get(key)
            if tile is not None:
                self._cache.move_to_end(key)
                return tile
        if index >= len(lv.counts) or lv.counts[index] == 0:
            return None  # missing tile: OpenSlide makes it transparent, the slide composites it
        count, offset = int(lv.counts[index]), int(lv.offsets[index])
        data = os.pread(self._descriptor(), count, offset)  # no shared file position
        decoded = lv.decode(data, index, jpegtables=lv.jpegtables)[0]
        if decoded is None:
            return None
        tile = decoded.reshape(decoded.shape[-3:])  # (1, th, tw, 3) -> (th, tw, 3)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = tile
                self._cached += tile.nbytes
                while self._cached > self._cache_bytes and len(self._cache) > 1:
                    self._cached -= self._cache.popitem(last=False)[1].nbytes
        return tile

    def _descriptor(self) -> int:
        with self._lock:
            if self._fd < 0:
                self._fd = os.open(self.path, os.O_RDONLY)
            return self._fd

    def close(self) -> None:
        """Drop the cached tiles and close the file (a later read reopens it)."""
        with self._lock:
            self._cache.clear()
            self._cached = 0
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _level(page: TiffPage, dims: tuple[int, int]) -> _Level | None:
    """The tile layout of ``page`` when it holds exactly the slide level ``dims`` as plain RGB tiles."""
    ok = (
        page.is_tiled
        and (int(page.imagewidth), int(page.imagelength)) == tuple(dims)
        and int(page.imagedepth) == 1
        and int(page.compression) in _COMPRESSIONS
        and (int(page.photometric) == 2 or (int(page.photometric) == 6 and int(page.compression) == 7))
        and int(page.samplesperpixel) == 3  # no alpha: OpenSlide would composite it
        and int(page.planarconfig) == 1
        and np.dtype(page.dtype) == np.uint8
        and len(page.dataoffsets) == len(page.databytecounts)
    )
    if not ok:
        return None
    tw, th = int(page.tilewidth), int(page.tilelength)
    return _Level(
        width=int(page.imagewidth),
        height=int(page.imagelength),
        tile_w=tw,
        tile_h=th,
        tiles_x=-(-int(page.imagewidth) // tw),
        offsets=np.asarray(page.dataoffsets, np.int64),
        counts=np.asarray(page.databytecounts, np.int64),
        decode=page.decode,
        jpegtables=page.jpegtables,
    )
