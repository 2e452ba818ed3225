"""tiffslide backend: TIFFs that OpenSlide refuses (e.g. stripped, non-pyramidal RGB TIFFs).

tifffile shares one file handle per TiffSlide, so each thread opens its own (thread-local) handle. Plain tiled
levels offer :class:`~.capabilities.DirectTiles` (the same tifffile/imagecodecs decode, without the zarr layer).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .base import RGB8, BackendKind, Fit, PixelFormat, mpp_from, number_from, tile_from
from .capabilities import TILE_CACHE_BYTES, DirectTiles, TileDecoder

if TYPE_CHECKING:
    from tiffslide import TiffSlide

_MPP_KEYS = (("tiffslide.mpp-x", "tiffslide.mpp-y"), ("aperio.MPP", "aperio.MPP"))
_POWER_KEYS = ("tiffslide.objective-power", "aperio.AppMag")


class _Local(threading.local):
    slide: TiffSlide | None = None


class TiffSlideBackend(DirectTiles):
    kind: ClassVar[BackendKind] = BackendKind.TIFFSLIDE

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = _Local()
        self._handles: list[TiffSlide] = []
        self._lock = threading.Lock()
        self._main = self._open()
        self._props = {str(k): str(v) for k, v in self._main.properties.items() if v is not None}

    @classmethod
    def fit(cls, path: Path) -> Fit:
        return Fit.MAYBE  # after OpenSlide, which reads more vendors' metadata

    def _open(self) -> TiffSlide:
        import tiffslide

        handle = tiffslide.TiffSlide(str(self._path))
        with self._lock:
            self._handles.append(handle)
        self._local.slide = handle
        return handle

    def _slide(self) -> TiffSlide:
        handle = self._local.slide
        return self._open() if handle is None else handle

    @property
    def vendor(self) -> str:
        return self._props.get("tiffslide.vendor") or "generic-tiff"

    @property
    def pixels(self) -> PixelFormat:
        return RGB8  # "auto" sends non-RGB TIFFs to the tifffile backend

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._props)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [(int(w), int(h)) for w, h in self._main.level_dimensions]

    @property
    def level_downsamples(self) -> list[float]:
        return [float(d) for d in self._main.level_downsamples]

    def mpp_xy(self) -> tuple[float, float] | None:
        return mpp_from(self._props, _MPP_KEYS)

    def objective_power(self) -> float | None:
        return number_from(self._props, _POWER_KEYS)

    def tile_size(self, level: int) -> tuple[int, int] | None:
        return tile_from(self._props, "tiffslide", level)

    def read_rgba(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        return np.asarray(self._slide().read_region((x, y), level, (w, h), as_array=True))

    def tile_decoder(self, *, cache_bytes: int = TILE_CACHE_BYTES) -> TileDecoder | None:
        from .tiff_tiles import TiffTiles

        return TiffTiles.for_file(self._path, self.level_dimensions, cache_bytes=cache_bytes)

    def close(self) -> None:
        with self._lock:
            for handle in self._handles:
                handle.close()
            self._handles.clear()


BACKEND = TiffSlideBackend
