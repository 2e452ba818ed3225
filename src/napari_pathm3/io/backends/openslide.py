"""OpenSlide backend (SVS, NDPI, MRXS, SCN, BIF, DICOM WSI, pyramidal TIFF).

OpenSlide handles are thread-safe, so one handle serves every dask thread. Two fast paths live here, beside
the only code that knows OpenSlide's vendor property keys and its ctypes binding:

* :class:`~.capabilities.DirectTiles` for vendors whose levels are plain tiled TIFF pages (Aperio, generic
  TIFF): :class:`~.tiff_tiles.TiffTiles` decodes the same tiles to the same pixels at a fraction of the CPU.
* :class:`~.capabilities.ThreadedPixels`: per-thread handles that decode into per-thread buffers (no lock
  shared between the patch reader's threads; OpenSlide's premultiplied ARGB words viewed as bytes).
"""

from __future__ import annotations

import ctypes
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .base import RGB8, BackendKind, Fit, PixelFormat, mpp_from, number_from, tile_from
from .capabilities import TILE_CACHE_BYTES, DirectTiles, PixelReader, ThreadedPixels, TileDecoder

if TYPE_CHECKING:
    from openslide import OpenSlide

#: vendors whose levels are the TIFF pages' tiles laid on a plain grid (no overlaps, no stitching)
_PLAIN_VENDORS = ("aperio", "generic-tiff")
_MPP_KEYS = (("openslide.mpp-x", "openslide.mpp-y"), ("aperio.MPP", "aperio.MPP"))
_POWER_KEYS = ("openslide.objective-power", "aperio.AppMag")


def import_openslide() -> ModuleType:
    try:
        import openslide
    except ImportError as err:  # pragma: no cover - a dependency, but the binary may be missing
        raise ImportError(
            "openslide is not available; install it with `pip install openslide-python openslide-bin`"
        ) from err
    return openslide


class OpenSlideBackend(DirectTiles, ThreadedPixels):
    kind: ClassVar[BackendKind] = BackendKind.OPENSLIDE

    def __init__(self, path: Path) -> None:
        self._path = path
        self._slide: OpenSlide = import_openslide().OpenSlide(str(path))
        self._props = {str(k): str(v) for k, v in self._slide.properties.items()}

    @classmethod
    def fit(cls, path: Path) -> Fit:
        return Fit.MAYBE  # OpenSlide detects its formats itself; "auto" tries it first

    @property
    def vendor(self) -> str:
        return self._props.get("openslide.vendor", "unknown")

    @property
    def pixels(self) -> PixelFormat:
        return RGB8  # OpenSlide renders every format as 8-bit ARGB

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._props)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [(int(w), int(h)) for w, h in self._slide.level_dimensions]

    @property
    def level_downsamples(self) -> list[float]:
        return [float(d) for d in self._slide.level_downsamples]

    def mpp_xy(self) -> tuple[float, float] | None:
        return mpp_from(self._props, _MPP_KEYS)

    def objective_power(self) -> float | None:
        return number_from(self._props, _POWER_KEYS)

    def tile_size(self, level: int) -> tuple[int, int] | None:
        return tile_from(self._props, "openslide", level)

    def read_rgba(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """``(h, w, 3)`` RGB when every pixel is opaque (the common case, decoded straight into numpy),
        else ``(h, w, 4)`` RGBA with straight alpha from openslide-python (the slide composites it)."""
        rgb = _read_opaque_rgb(self._slide, x, y, level, w, h)
        if rgb is not None:
            return rgb
        return np.asarray(self._slide.read_region((x, y), level, (w, h)))

    def tile_decoder(self, *, cache_bytes: int = TILE_CACHE_BYTES) -> TileDecoder | None:
        if self.vendor not in _PLAIN_VENDORS:
            return None
        from .tiff_tiles import TiffTiles

        return TiffTiles.for_file(self._path, self.level_dimensions, cache_bytes=cache_bytes)

    def pixel_reader(self) -> PixelReader | None:
        if sys.byteorder != "little":  # the byte view of ARGB words assumes little-endian
            return None
        try:
            return _ThreadPixels(str(self._path))
        except (ImportError, AttributeError):  # another openslide-python layout: Slide.read_region
            return None

    def close(self) -> None:
        self._slide.close()


#: the module's backend (the registry imports ``<kind value>.BACKEND``)
BACKEND = OpenSlideBackend


class _ThreadPixels:
    """Per-thread OpenSlide handles that decode into per-thread buffers (no lock shared between threads).

    :meth:`read` returns a ``(h, w, 4)`` BGRA view of the calling thread's buffer (valid until that thread's
    next read), or ``None`` when the region has transparent pixels.
    """

    rgb_planes = (2, 1, 0)  # little-endian ARGB words = B, G, R, A bytes

    def __init__(self, path: str) -> None:
        from openslide import OpenSlide, lowlevel

        self._open, self._read_region = OpenSlide, lowlevel._read_region  # C call; ctypes releases the GIL
        self.path = path
        self._local = _Local()
        self._handles: list[OpenSlide] = []
        self._lock = threading.Lock()  # guards only the list of handles (to close them)

    def read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray | None:
        local = self._local
        handle = local.handle
        if handle is None:
            handle = local.handle = self._open(self.path)
            with self._lock:
                self._handles.append(handle)
        w, h = size
        if local.buf.size < w * h:
            local.buf = np.empty(w * h, np.uint32)
        words = local.buf[: w * h]
        ptr = words.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32))
        self._read_region(handle._osr, ptr, int(location[0]), int(location[1]), int(level), int(w), int(h))
        if words.min() < 0xFF000000:  # some alpha < 255: premultiplied pixels, composite elsewhere
            return None
        return words.view(np.uint8).reshape(h, w, 4)

    def close(self) -> None:
        with self._lock:
            handles, self._handles = self._handles, []
        for handle in handles:
            handle.close()
        self._local = _Local()


class _Local(threading.local):
    """One reader thread's OpenSlide handle and decode buffer (class attributes: each thread's defaults)."""

    handle: OpenSlide | None = None
    buf: np.ndarray = np.empty(0, np.uint32)


def _read_opaque_rgb(slide: OpenSlide, x: int, y: int, level: int, w: int, h: int) -> np.ndarray | None:
    """Decode into a numpy buffer and copy to RGB by planes, or ``None`` when some pixel is transparent.

    openslide-python's ``read_region`` converts premultiplied ARGB to straight RGBA in place, wraps it in a
    PIL image and ``np.asarray`` copies it; dropping alpha copies it again through a 4-byte stride. Here the
    C library writes into our buffer and one copy per colour plane makes the RGB array (napari chunks and
    patches both read through this).
    """
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
