"""tifffile backend for TIFFs that are not brightfield RGB: 16-bit greyscale, multichannel fluorescence
(QPTIFF, OME-TIFF), anything whose samples are not 8-bit RGB(A).

OpenSlide turns such files into 8-bit RGBA without a word (a 16-bit or multiplex image then looks dark and
would be captioned as if it were H&E), and tiffslide hands back the native samples under RGB metadata. This
backend reads them as what they are: ``(h, w, channels)`` in the file's dtype, level by level, through
tifffile's zarr view (one chunk per native tile).
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ...errors import NotBrightfieldError
from .base import BackendKind, Fit, PixelFormat
from .capabilities import NativeSamples

if TYPE_CHECKING:
    import zarr

#: TIFF photometric interpretations of colour images (RGB, palette, YCbCr)
_RGB_PHOTOMETRIC = (2, 3, 6)
TIFF_SUFFIXES = (".tif", ".tiff", ".qptiff", ".btf", ".tf8", ".tf2")


def is_non_rgb_tiff(path: Path) -> bool:
    """True when ``path`` is a TIFF whose main image is not 8-bit RGB(A) (e.g. fluorescence, 16-bit grey)."""
    if not path.name.lower().endswith(TIFF_SUFFIXES):
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    # remembered per file version: napari and the widgets open the same slide several times
    return _is_non_rgb_tiff(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _is_non_rgb_tiff(path: str, _mtime_ns: int, _size: int) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            page = series.keyframe
            samples, photometric = int(page.samplesperpixel), int(page.photometric)
            dtype = np.dtype(series.dtype)
    except Exception:  # not a TIFF tifffile understands: the other backends decide
        return False
    rgb = dtype == np.uint8 and (photometric == 3 or (photometric in _RGB_PHOTOMETRIC and samples in (3, 4)))
    return not rgb


class TiffFileBackend(NativeSamples):
    """Reads are serialised on one lock (tifffile shares a file handle)."""

    kind: ClassVar[BackendKind] = BackendKind.TIFFFILE

    def __init__(self, path: Path) -> None:
        import tifffile
        import zarr

        self._path = path
        self._lock = threading.Lock()
        self._tif = tifffile.TiffFile(path)
        try:
            series = self._tif.series[0]
            axes = series.axes.upper()
            if "Y" not in axes or "X" not in axes:
                raise ValueError(f"image axes {axes!r} have no Y and X")
            self._levels: list[zarr.Array] = [
                zarr.open_array(series.aszarr(level=i), mode="r") for i in range(len(series.levels))
            ]
            self._series = series
        except Exception:
            self._tif.close()
            raise
        extra = [i for i, a in enumerate(axes) if a not in "YX"]
        big = [i for i in extra if series.shape[i] > 1]
        # the channel axis: samples, then channels, then any other non-singleton axis (Z, T... take index 0)
        self._channel_axis = next((i for i in big if axes[i] in "SC"), big[0] if big else None)
        self._axes = axes
        self.dtype = np.dtype(series.dtype)
        self.channels = 1 if self._channel_axis is None else int(series.shape[self._channel_axis])
        self._keyframe = series.keyframe

    @classmethod
    def fit(cls, path: Path) -> Fit:
        # OpenSlide would silently turn such a file into 8-bit RGB: nothing else may read it under "auto"
        return Fit.ONLY if is_non_rgb_tiff(path) else Fit.NO

    @property
    def vendor(self) -> str:
        return "tifffile"

    @property
    def pixels(self) -> PixelFormat:
        return PixelFormat(rgb=False, dtype=self.dtype, channels=self.channels)

    def mpp_xy(self) -> tuple[float, float] | None:
        return self._mpp()

    def objective_power(self) -> float | None:
        return None  # TIFF tags hold no magnification

    def _index(self, x: int, y: int, w: int, h: int) -> tuple[slice | int, ...]:
        key: list[slice | int] = []
        for i, a in enumerate(self._axes):
            if a == "Y":
                key.append(slice(y, y + h))
            elif a == "X":
                key.append(slice(x, x + w))
            elif i == self._channel_axis:
                key.append(slice(None))
            else:
                key.append(0)
        return tuple(key)

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """``(h, w, channels)`` in the file's dtype; ``x, y`` in ``level`` pixels; outside the image is 0."""
        arr = self._levels[level]
        lw, lh = self.level_dimensions[level]
        out = np.zeros((h, w, self.channels), self.dtype)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        if x1 <= x0 or y1 <= y0:
            return out
        with self._lock:
            block = np.asarray(arr[self._index(x0, y0, x1 - x0, y1 - y0)])
        kept = [a for i, a in enumerate(self._axes) if a in "YX" or i == self._channel_axis]
        order = [kept.index("Y"), kept.index("X")] + (
            [kept.index(self._axes[self._channel_axis])] if self._channel_axis is not None else []
        )
        block = block.transpose(order)
        out[y0 - y : y1 - y, x0 - x : x1 - x] = block if block.ndim == 3 else block[..., None]
        return out

    def read_rgba(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        raise NotBrightfieldError(f"{self._path.name}: {self.channels}-channel {self.dtype} samples, not RGB")

    @property
    def properties(self) -> dict[str, str]:
        props = {
            "tifffile.axes": self._axes,
            "tifffile.dtype": str(self.dtype),
            "tifffile.channels": str(self.channels),
            "tifffile.photometric": str(int(self._keyframe.photometric)),
        }
        mpp = self._mpp()
        if mpp is not None:
            props["tifffile.mpp-x"], props["tifffile.mpp-y"] = str(mpp[0]), str(mpp[1])
        return props

    def _mpp(self) -> tuple[float, float] | None:
        tags = self._keyframe.tags
        try:
            xres, yres = tags["XResolution"].value, tags["YResolution"].value
            unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
        except (KeyError, TypeError, ValueError):
            return None
        um = {2: 25400.0, 3: 10000.0}.get(unit)  # inch, centimetre
        try:
            px, py = xres[0] / xres[1], yres[0] / yres[1]
        except (TypeError, ZeroDivisionError, IndexError):
            return None
        if um is None or px <= 0 or py <= 0:
            return None
        return um / px, um / py

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        y, x = self._axes.index("Y"), self._axes.index("X")
        return [(int(lv.shape[x]), int(lv.shape[y])) for lv in self._series.levels]

    @property
    def level_downsamples(self) -> list[float]:
        w0 = self.level_dimensions[0][0]
        return [w0 / w for w, _ in self.level_dimensions]

    def tile_size(self, level: int) -> tuple[int, int] | None:
        page = self._series.levels[level].keyframe
        return (int(page.tilewidth), int(page.tilelength)) if page.is_tiled else None

    def close(self) -> None:
        self._tif.close()


BACKEND = TiffFileBackend
