"""Optional capabilities of a slide backend. A backend class inherits the ones it offers; readers ask
``Slide.capability(DirectTiles)`` (an ``isinstance`` check) and fall back to ``Slide.read_region`` without it.

* :class:`NativeSamples`: pixels that are not 8-bit RGB, read as stored (required when ``pixels.rgb`` is false).
* :class:`DirectTiles`: a decoder that writes a level's tiles straight into a caller's buffer
  (:class:`TileDecoder`); the patch reader and the napari pyramid use it.
* :class:`ThreadedPixels`: a reader with per-thread state (handles, buffers) whose reads share no lock
  (:class:`PixelReader`); the patch reader's worker threads use it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import numpy as np

#: decoded tiles a TileDecoder may keep (a 256-px RGB tile is 192 KiB): two rows of tiles across a 100k-px
#: wide level, so the tile row shared by consecutive patch rows is decoded once.
TILE_CACHE_BYTES = 160 << 20


class NativeSamples(ABC):
    @abstractmethod
    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """``(h, w, channels)`` in the file's dtype; ``x, y`` in ``level`` pixels; outside the image is 0."""


class TileDecoder(Protocol):
    """Region reads decoded tile by tile (thread-safe); the exact pixels of the backend's own reads."""

    def supports(self, level: int) -> bool: ...

    def read_into(self, level: int, x: int, y: int, out: np.ndarray) -> bool:
        """Fill ``out`` (``(h, w, 3)`` uint8, may be a strided view) from level coordinates ``(x, y)``;
        ``False`` (``out`` untouched or partly written) when it cannot: the caller reads through the slide."""
        ...

    def close(self) -> None:
        """Release caches and files (a later read may reopen them)."""
        ...


class DirectTiles(ABC):
    @abstractmethod
    def tile_decoder(self, *, cache_bytes: int = TILE_CACHE_BYTES) -> TileDecoder | None:
        """A decoder for this file's levels, or ``None`` when they are not laid out so it can be exact."""


class PixelReader(Protocol):
    """Region reads from per-thread state: what :meth:`read` returns stays valid until the same thread's
    next read, so a worker copies it out before reading again."""

    @property
    def rgb_planes(self) -> tuple[int, int, int]:
        """Indices of R, G and B on the last axis of :meth:`read`'s arrays (e.g. ``(2, 1, 0)`` for BGRA)."""
        ...

    def read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray | None:
        """``(h, w, c)`` uint8 at level-0 ``location``, ``size`` at ``level``; ``None`` when some pixel is
        transparent (the caller composites through ``Slide.read_region``)."""
        ...

    def close(self) -> None: ...


class ThreadedPixels(ABC):
    @abstractmethod
    def pixel_reader(self) -> PixelReader | None:
        """A reader for the patch reader's threads, or ``None`` when unavailable here."""
