"""tiffslide backend: TIFFs that OpenSlide refuses (e.g. stripped, non-pyramidal RGB TIFFs).

tifffile shares one file handle per TiffSlide, so each thread opens its own (thread-local) handle."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np


class TiffSlideBackend:
    name = "tiffslide"
    thread_safe = True  # via per-thread handles

    def __init__(self, path: Path) -> None:
        import tiffslide

        self._path = path
        self._local = threading.local()
        self._handles: list[Any] = []
        self._lock = threading.Lock()
        self._main = self._open(tiffslide)
        self.vendor: str = str(self._main.properties.get("tiffslide.vendor") or "generic-tiff")

    def _open(self, tiffslide: Any) -> Any:
        handle = tiffslide.TiffSlide(str(self._path))
        with self._lock:
            self._handles.append(handle)
        self._local.slide = handle
        return handle

    def _slide(self) -> Any:
        handle = getattr(self._local, "slide", None)
        if handle is None:
            import tiffslide

            handle = self._open(tiffslide)
        return handle

    @property
    def properties(self) -> dict[str, str]:
        return {k: str(v) for k, v in self._main.properties.items() if v is not None}

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [tuple(int(v) for v in d) for d in self._main.level_dimensions]  # type: ignore[misc]

    @property
    def level_downsamples(self) -> list[float]:
        return [float(d) for d in self._main.level_downsamples]

    def tile_size(self, level: int) -> tuple[int, int] | None:
        p = self._main.properties
        w, h = p.get(f"tiffslide.level[{level}].tile-width"), p.get(f"tiffslide.level[{level}].tile-height")
        return (int(w), int(h)) if w and h else None

    @property
    def associated_images(self) -> list[str]:
        return list(self._main.associated_images)

    def read_rgba(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        return np.asarray(self._slide().read_region((x, y), level, (w, h), as_array=True))

    def close(self) -> None:
        with self._lock:
            for handle in self._handles:
                handle.close()
            self._handles.clear()
