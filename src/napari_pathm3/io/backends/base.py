"""What every slide backend answers: the :class:`SlideBackend` protocol, its kinds and its pixel format.

A backend is one module of this package named after its :class:`BackendKind` member's value; the module's
``BACKEND`` is the class. Optional fast paths are capabilities (:mod:`.capabilities`) a backend class
inherits, so the readers find them with ``isinstance`` and never by the backend's name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np


class BackendKind(str, Enum):
    """The slide backends, in the order ``"auto"`` tries them. Each value is its module's name here and
    the member's name in lower case; members are ``str`` (equal to their value). ``str, Enum`` rather than
    ``StrEnum``: the package supports Python 3.10."""

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[object]) -> str:
        return name.lower()  # what StrEnum's auto() gives (Python 3.11+), here for 3.10 too

    def __str__(self) -> str:
        return str(self.value)

    OPENSLIDE = auto()
    TIFFSLIDE = auto()
    TIFFFILE = auto()


class Fit(Enum):
    """How a backend suits a file, asked before ``"auto"`` opens it."""

    NO = auto()  # "auto" skips this backend for the file (it may still be named explicitly)
    MAYBE = auto()  # "auto" tries it in enum order
    ONLY = auto()  # "auto" uses this backend alone: another would read the file wrongly


@dataclass(frozen=True)
class PixelFormat:
    """What the pixels are: brightfield 8-bit RGB, or native samples (greyscale, 16-bit, multichannel;
    three uint8 channels can be fluorescence too, so ``rgb`` is stated, not inferred)."""

    rgb: bool
    dtype: np.dtype
    channels: int


#: 8-bit RGB: what OpenSlide and tiffslide deliver (alpha composited by the slide)
RGB8 = PixelFormat(rgb=True, dtype=np.dtype(np.uint8), channels=3)


class SlideBackend(Protocol):
    """One open slide file. Reads are thread-safe (each backend says how in its module docstring).

    Coordinates: ``read_rgba`` takes level-0 ``(x, y)`` and a size at ``level``, as OpenSlide does.
    Backends whose :attr:`pixels` are not RGB also implement :class:`~.capabilities.NativeSamples`.
    """

    kind: ClassVar[BackendKind]

    def __init__(self, path: Path) -> None: ...

    @classmethod
    def fit(cls, path: Path) -> Fit:
        """Whether ``"auto"`` should try this backend for ``path`` (cheap: no pixel is read)."""
        ...

    @property
    def vendor(self) -> str: ...

    @property
    def pixels(self) -> PixelFormat: ...

    @property
    def properties(self) -> dict[str, str]: ...

    @property
    def level_dimensions(self) -> list[tuple[int, int]]: ...

    @property
    def level_downsamples(self) -> list[float]: ...

    def mpp_xy(self) -> tuple[float, float] | None:
        """µm per level-0 pixel (x, y) from the file's metadata, or ``None``."""
        ...

    def objective_power(self) -> float | None: ...

    def tile_size(self, level: int) -> tuple[int, int] | None:
        """The file's native tile (width, height) at ``level``, or ``None`` for untiled images."""
        ...

    def read_rgba(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """``(h, w, 3)`` RGB or ``(h, w, 4)`` RGBA (straight alpha) uint8; the slide composites alpha."""
        ...

    def close(self) -> None: ...


def mpp_from(props: Mapping[str, str], keys: Sequence[tuple[str, str]]) -> tuple[float, float] | None:
    """The first pair of ``keys`` (x key, y key) whose values are positive finite numbers."""
    for kx, ky in keys:
        try:
            x, y = float(props[kx]), float(props[ky])
        except (KeyError, ValueError):
            continue
        if x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y):
            return x, y
    return None


def number_from(props: Mapping[str, str], keys: Sequence[str]) -> float | None:
    """The first of ``keys`` whose value is a number."""
    for key in keys:
        try:
            return float(props[key])
        except (KeyError, ValueError):
            continue
    return None


def tile_from(props: Mapping[str, str], prefix: str, level: int) -> tuple[int, int] | None:
    """``<prefix>.level[<level>].tile-width/-height`` (the OpenSlide/tiffslide property layout)."""
    try:
        w, h = (
            int(props[f"{prefix}.level[{level}].tile-width"]),
            int(props[f"{prefix}.level[{level}].tile-height"]),
        )
    except (KeyError, ValueError):
        return None
    return (w, h) if w > 0 and h > 0 else None  # tiffslide says 0 for stripped images


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """RGB uint8 with transparent pixels composited on white (greyscale is repeated to three channels)."""
    if rgba.ndim == 2:
        return np.repeat(rgba[..., None], 3, axis=2).astype(np.uint8)
    if rgba.shape[2] == 3:
        return np.ascontiguousarray(rgba, dtype=np.uint8)
    alpha8 = rgba[..., 3:4]
    if bool((alpha8 == 255).all()):  # the common case: no copies beyond dropping alpha
        return np.ascontiguousarray(rgba[..., :3])
    rgb, alpha = rgba[..., :3].astype(np.uint16), alpha8.astype(np.uint16)
    # composite on white: rgb·a + 255·(1 − a)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
