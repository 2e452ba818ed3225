"""A test-only slide backend: a ``.npy`` RGB array as a one-level slide (the worked example of
docs/architecture.md, "Adding a slide backend").

In the package this file would be ``io/backends/npy.py`` next to one enum member (``NPY = auto()`` in
``BackendKind``); ``tests/io/test_backends.py`` adds the member and registers this module under that name.
It inherits :class:`DirectTiles`, so the patch reader and the napari pyramid use its decoder.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import ClassVar

import numpy as np

from napari_pathm3.io import backends
from napari_pathm3.io.backends import DirectTiles, Fit, PixelFormat, TileDecoder
from napari_pathm3.io.backends.base import RGB8
from napari_pathm3.io.backends.capabilities import TILE_CACHE_BYTES

TILE = 64


class NpyBackend(DirectTiles):
    # the member the test adds; in the package: ``kind: ClassVar[BackendKind] = BackendKind.NPY``
    kind: ClassVar[backends.BackendKind] = backends.BackendKind("npy")

    def __init__(self, path: Path) -> None:
        self._pixels = np.load(path, mmap_mode="r")
        if self._pixels.ndim != 3 or self._pixels.shape[2] != 3 or self._pixels.dtype != np.uint8:
            raise ValueError(f"not an (h, w, 3) uint8 array: {self._pixels.shape} {self._pixels.dtype}")

    @classmethod
    def fit(cls, path: Path) -> Fit:
        return Fit.ONLY if path.suffix == ".npy" else Fit.NO

    @property
    def vendor(self) -> str:
        return "numpy"

    @property
    def pixels(self) -> PixelFormat:
        return RGB8

    @property
    def properties(self) -> dict[str, str]:
        return {"npy.shape": str(self._pixels.shape)}

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        h, w = self._pixels.shape[:2]
        return [(w, h)]

    @property
    def level_downsamples(self) -> list[float]:
        return [1.0]

    def mpp_xy(self) -> tuple[float, float] | None:
        return None  # a bare array has no metadata: open_slide(..., mpp=...) supplies it

    def objective_power(self) -> float | None:
        return None

    def tile_size(self, level: int) -> tuple[int, int] | None:
        return (TILE, TILE)

    def read_rgba(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        out = np.zeros((h, w, 4), np.uint8)  # transparent outside the image: the slide makes it white
        H, W = self._pixels.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x, :3] = self._pixels[y0:y1, x0:x1]
            out[y0 - y : y1 - y, x0 - x : x1 - x, 3] = 255
        return out

    def tile_decoder(self, *, cache_bytes: int = TILE_CACHE_BYTES) -> TileDecoder | None:
        return NpyTiles(self._pixels)

    def close(self) -> None:
        pass


class NpyTiles:
    """The direct path: copies straight from the memory map into the caller's buffer (and counts reads)."""

    def __init__(self, pixels: np.ndarray) -> None:
        self._pixels = pixels
        self._lock = threading.Lock()
        self.reads = 0

    def supports(self, level: int) -> bool:
        return level == 0

    def read_into(self, level: int, x: int, y: int, out: np.ndarray) -> bool:
        h, w = out.shape[:2]
        H, W = self._pixels.shape[:2]
        if level != 0 or x < 0 or y < 0 or x + w > W or y + h > H:
            return False  # past the edge: the slide reads (and composites) it
        out[...] = self._pixels[y : y + h, x : x + w]
        with self._lock:
            self.reads += 1
        return True

    def close(self) -> None:
        pass


BACKEND = NpyBackend
