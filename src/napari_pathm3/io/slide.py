"""``open_slide(path) -> Slide``: one thread-safe API over the slide backends (:mod:`.backends`).

Pixels come back as RGB uint8 with transparent areas composited on white. Coordinates are level-0 pixels
``(x, y)``; sizes are ``(width, height)`` at the requested level, as in OpenSlide.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import numpy as np

from .._types import PathLike
from ..errors import MissingMppError, NotBrightfieldError, SlideReadError
from .backends import AUTO, BackendKind, open_backend
from .backends.base import rgba_to_rgb
from .backends.capabilities import (
    TILE_CACHE_BYTES,
    DirectTiles,
    NativeSamples,
    PixelReader,
    ThreadedPixels,
    TileDecoder,
)

log = logging.getLogger(__name__)

#: a backend's name (a :class:`BackendKind` value) or ``"auto"``
Backend = BackendKind | str

#: File suffixes we claim in napari (other readers get everything else).
SLIDE_SUFFIXES = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".dcm",
    ".qptiff",
)


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` file, or any file with the DICOM Part 10 preamble ("DICM" at byte 128): PACS exports often
    name instances by UID without an extension."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM instances of a folder (with or without the ``.dcm`` extension), sorted by name."""
    return sorted(q for q in folder.iterdir() if q.is_file() and is_dicom_file(q))


def _resolve_path(path: PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise SlideReadError(f"{p}: no such file or directory")
    if p.is_dir():
        dcm = dicom_files(p)
        if not dcm:
            raise SlideReadError(
                f"{p}: directory holds no DICOM files; pass a slide file or a DICOM WSI folder"
            )
        return dcm[0]  # OpenSlide finds the series' other instances itself
    if p.stat().st_size == 0:
        raise SlideReadError(f"{p}: file is empty")
    return p


class Slide:
    """A whole-slide image. Use :func:`open_slide`; close it (or use ``with``) to release file handles."""

    def __init__(self, path: PathLike, *, backend: Backend = AUTO, mpp: float | None = None) -> None:
        self.path = Path(path)
        self._file = _resolve_path(self.path)
        self._backend = open_backend(self._file, backend)
        self._native = self._backend if isinstance(self._backend, NativeSamples) else None
        if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
            raise ValueError(f"mpp must be a positive number, got {mpp!r}")
        self._mpp_override = mpp
        if self.mpp is None:
            warnings.warn(
                f"{self.path.name}: no microns-per-pixel in the slide metadata; using pixel units. "
                "Pass mpp=... (µm/px at level 0) to work in physical units.",
                stacklevel=3,
            )
        self._validate()

    def _validate(self) -> None:
        dims = self.level_dimensions
        if not dims or any(w <= 0 or h <= 0 for w, h in dims):
            raise SlideReadError(f"{self.path}: slide reports no readable pyramid levels ({dims})")
        if not self.is_rgb and self._native is None:
            raise SlideReadError(
                f"{self.path}: {self.backend} reports {self.pixel_kind()} pixels but cannot read them"
            )
        try:  # decoding one tile catches truncated files that still have a valid header
            w, h = dims[-1]
            if self.is_rgb or self._native is None:
                self._backend.read_rgba(0, 0, len(dims) - 1, min(w, 16), min(h, 16))
            else:
                self._native.read_level(len(dims) - 1, 0, 0, min(w, 16), min(h, 16))
        except Exception as err:
            raise SlideReadError(f"{self.path}: header is readable but pixel data is not ({err})") from err

    # -- metadata ---------------------------------------------------------------------------------------------
    @property
    def backend(self) -> BackendKind:
        """The backend reading the file (a ``str`` enum: equal to its name)."""
        return self._backend.kind

    def tile_decoder(self, *, cache_bytes: int = TILE_CACHE_BYTES) -> TileDecoder | None:
        """The backend's direct tile decoder (:class:`~.backends.capabilities.DirectTiles`) for this file,
        or ``None``: the patch reader and the napari pyramid then read through :meth:`read_region`."""
        if isinstance(self._backend, DirectTiles):
            return self._backend.tile_decoder(cache_bytes=cache_bytes)
        return None

    def pixel_reader(self) -> PixelReader | None:
        """The backend's per-thread pixel reader (:class:`~.backends.capabilities.ThreadedPixels`), or
        ``None``: the patch reader's threads then read through :meth:`read_region`."""
        if isinstance(self._backend, ThreadedPixels):
            return self._backend.pixel_reader()
        return None

    @property
    def vendor(self) -> str:
        return self._backend.vendor

    @property
    def is_rgb(self) -> bool:
        """True for brightfield RGB(A) slides (8-bit colour); False for greyscale, 16-bit or multichannel."""
        return self._backend.pixels.rgb

    @property
    def dtype(self) -> np.dtype:
        """dtype of :meth:`read_level_native` (uint8 for RGB slides)."""
        return self._backend.pixels.dtype

    @property
    def channels(self) -> int:
        """Channels of :meth:`read_level_native` (3 for RGB slides)."""
        return self._backend.pixels.channels

    def pixel_kind(self) -> str:
        """Words for the pixels: "RGB", "16-bit greyscale", "5-channel 16-bit"..."""
        if self.is_rgb:
            return "RGB"
        bits = f"{self.dtype.itemsize * 8}-bit" if self.dtype.kind in "ui" else str(self.dtype)
        return f"{bits} greyscale" if self.channels == 1 else f"{self.channels}-channel {bits}"

    def require_rgb(self) -> None:
        """Raise :class:`~napari_pathm3.errors.NotBrightfieldError` unless the slide is brightfield RGB."""
        if not self.is_rgb:
            raise NotBrightfieldError(
                f"{self.path.name} is a {self.pixel_kind()} image (fluorescence or greyscale), not brightfield "
                "RGB; PathM3 needs brightfield RGB (e.g. H&E) slides: it can be viewed but not captioned"
            )

    @cached_property
    def properties(self) -> dict[str, str]:
        return self._backend.properties

    @cached_property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return self._backend.level_dimensions

    @cached_property
    def level_downsamples(self) -> list[float]:
        return self._backend.level_downsamples

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @cached_property
    def _native_mpp(self) -> tuple[float, float] | None:
        return self._backend.mpp_xy()

    @property
    def mpp_xy(self) -> tuple[float, float] | None:
        if self._mpp_override is not None:
            return self._mpp_override, self._mpp_override
        return self._native_mpp

    @property
    def mpp(self) -> float | None:
        """µm per level-0 pixel (mean of x and y), or ``None`` when unknown."""
        xy = self.mpp_xy
        return None if xy is None else (xy[0] + xy[1]) / 2

    def require_mpp(self) -> float:
        if self.mpp is None:
            raise MissingMppError(
                f"{self.path.name}: no microns-per-pixel in metadata; give it (--mpp on the command line, "
                "mpp=... to open_slide) or tile in pixels (TilingConfig(target_mpp=None, level=...))"
            )
        return self.mpp

    @cached_property
    def objective_power(self) -> float | None:
        return self._backend.objective_power()

    def level_mpp(self, level: int) -> float | None:
        return None if self.mpp is None else self.mpp * self.level_downsamples[level]

    def tile_size(self, level: int) -> tuple[int, int] | None:
        """The file's native tile (width, height) at ``level``, or ``None`` for untiled images."""
        return self._backend.tile_size(level)

    @cached_property
    def fingerprint(self) -> str:
        """Content hash (size + first and last MiB of every file) identifying this slide for caches."""
        files = dicom_files(self.path) if self.path.is_dir() else [self._file]
        h = hashlib.sha256()
        for f in files:
            size = f.stat().st_size
            h.update(f.name.encode() + str(size).encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read(1 << 20))
        return h.hexdigest()[:32]

    def metadata(self) -> dict[str, object]:
        """Everything napari layers and result files record about the slide (JSON-friendly)."""
        return {
            "path": str(self.path),
            "backend": self.backend,
            "vendor": self.vendor,
            "mpp": self.mpp,
            "mpp_xy": self.mpp_xy,
            "objective_power": self.objective_power,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": self.level_downsamples,
            "pixels": self.pixel_kind(),
            "dtype": str(self.dtype),
            "channels": self.channels,
            "properties": self.properties,
        }

    def best_level_for_downsample(self, downsample: float) -> int:
        """Deepest level whose downsample does not exceed ``downsample`` (so reads never upsample)."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * 1.001:
                best = i
        return best

    # -- pixels -----------------------------------------------------------------------------------------------
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 array ``(height, width, 3)``; ``location`` in level-0 pixels, ``size`` at ``level``.

        Areas outside the slide or transparent in the file are white.
        """
        self.require_rgb()
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range (slide has {self.level_count})")
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"size must be positive, got {size}")
        try:
            rgba = self._backend.read_rgba(int(location[0]), int(location[1]), level, w, h)
        except Exception as err:
            raise SlideReadError(
                f"{self.path}: read of {size} at {location} (level {level}) failed: {err}"
            ) from err
        return rgba_to_rgb(rgba)

    def read_level_region(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """Like :meth:`read_region` but with ``(x, y)`` in ``level`` pixels (what dask chunks need)."""
        ds = self.level_downsamples[level]
        return self.read_region((round(x * ds), round(y * ds)), level, (w, h))

    def read_level_native(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """Pixels as stored, ``(x, y)`` in ``level`` pixels: ``(h, w, 3)`` uint8 for RGB slides (as
        :meth:`read_level_region`), else ``(h, w, channels)`` in :attr:`dtype`."""
        if self.is_rgb or self._native is None:  # (a non-RGB slide without native reads is refused at open)
            return self.read_level_region(x, y, level, w, h)
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range (slide has {self.level_count})")
        try:
            return self._native.read_level(level, int(x), int(y), int(w), int(h))
        except Exception as err:
            raise SlideReadError(
                f"{self.path}: read of {(w, h)} at {(x, y)} (level {level}) failed: {err}"
            ) from err

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """Whole-slide RGB image whose long side is at most ``max_size``, read from the best level."""
        from .downsample import read_downsampled

        w0, h0 = self.dimensions
        return read_downsampled(self, max(w0, h0) / max_size)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Slide({str(self.path)!r}, backend={self.backend!r}, levels={self.level_count}, "
            f"dimensions={self.dimensions}, mpp={self.mpp})"
        )


def open_slide(path: PathLike, *, backend: Backend = AUTO, mpp: float | None = None) -> Slide:
    """Open a whole-slide image.

    Args:
        path: slide file, or a DICOM WSI directory (any of its ``.dcm`` files works too).
        backend: ``"auto"`` (non-RGB TIFFs: tifffile; else OpenSlide, then tiffslide) or a
            :class:`~napari_pathm3.io.backends.BackendKind` (or its value).
        mpp: µm/px at level 0, overriding (or supplying missing) metadata.

    Raises:
        SlideReadError: missing, empty, truncated, unreadable or unsupported file.
    """
    return Slide(path, backend=backend, mpp=mpp)


@contextmanager
def as_slide(slide_or_path: Slide | PathLike) -> Iterator[Slide]:
    """An open :class:`Slide` as it is (the caller closes it), or a path opened here and closed on exit."""
    if isinstance(slide_or_path, Slide):
        yield slide_or_path
        return
    slide = open_slide(slide_or_path)
    try:
        yield slide
    finally:
        slide.close()
