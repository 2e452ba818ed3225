"""OpenSlide backend (SVS, NDPI, MRXS, SCN, BIF, DICOM WSI, pyramidal TIFF). OpenSlide handles are
thread-safe, so one handle serves every dask/reader thread (PatchReader opens one per thread)."""

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
        """``(h, w, 3)`` RGB when every pixel is opaque (the common case, decoded straight into numpy),
        else ``(h, w, 4)`` RGBA with straight alpha from openslide-python (the caller composites it)."""
        rgb = _read_opaque_rgb(self._slide, x, y, level, w, h)
        if rgb is not None:
            return rgb
        return np.asarray(self._slide.read_region((x, y), level, (w, h)))

    def close(self) -> None:
        self._slide.close()


def _read_opaque_rgb(slide: Any, x: int, y: int, level: int, w: int, h: int) -> np.ndarray | None:
    """Decode into a numpy buffer and copy to RGB by planes, or ``None`` when some pixel is transparent.

    openslide-python's ``read_region`` converts premultiplied ARGB to straight RGBA in place, wraps it in a
    PIL image and ``np.asarray`` copies it; dropping alpha copies it again through a 4-byte stride. Here the
    C library writes into our buffer and one copy per colour plane makes the RGB array (napari chunks and
    patches both read through this).
    """
    import ctypes
    import sys

    if sys.byteorder != "little":  # the byte view below assumes little-endian words
        return None
    try:
        from openslide import lowlevel

        read = lowlevel._read_region
        handle = slide._osr
    except (ImportError, AttributeError):  # another openslide-python layout: the public path
        return None
    words = np.empty((h, w), np.uint32)
    read(handle, words.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), x, y, level, w, h)
    if words.size == 0 or words.min() < 0xFF000000:  # alpha < 255 somewhere: premultiplied pixels
        return None
    bgra = words.view(np.uint8).reshape(h, w, 4)  # little-endian ARGB words = B, G, R, A bytes
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[..., 0] = bgra[..., 2]
    rgb[..., 1] = bgra[..., 1]
    rgb[..., 2] = bgra[..., 0]
    return rgb
