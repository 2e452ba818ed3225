"""OpenSlide backend (SVS, NDPI, MRXS, SCN, BIF, DICOM WSI, pyramidal TIFF). OpenSlide handles are
thread-safe, so one handle serves every dask/reader thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def import_openslide() -> Any:
    try:
        import openslide
    except ImportError as err:  # pragma: no cover - a dependency, but the binary may be missing
        raise ImportError(
            "openslide is not available; install it with `pip install openslide-python openslide-bin`"
        ) from err
    return openslide


class OpenSlideBackend:
    name = "openslide"
    thread_safe = True

    def __init__(self, path: Path) -> None:
        openslide = import_openslide()
        self._slide = openslide.OpenSlide(str(path))
        self.vendor: str = self._slide.properties.get("openslide.vendor", "unknown")

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._slide.properties)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [tuple(d) for d in self._slide.level_dimensions]  # type: ignore[misc]

    @property
    def level_downsamples(self) -> list[float]:
        return [float(d) for d in self._slide.level_downsamples]

    def tile_size(self, level: int) -> tuple[int, int] | None:
        p = self._slide.properties
        w, h = p.get(f"openslide.level[{level}].tile-width"), p.get(f"openslide.level[{level}].tile-height")
        return (int(w), int(h)) if w and h else None

    @property
    def associated_images(self) -> list[str]:
        return list(self._slide.associated_images)

    def read_rgba(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        return np.asarray(self._slide.read_region((x, y), level, (w, h)))

    def close(self) -> None:
        self._slide.close()
