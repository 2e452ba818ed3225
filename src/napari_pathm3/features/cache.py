"""Features of a patch grid through the on-disk feature cache (one zarr store per slide, encoder and grid)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from .._types import CancelToken, PathLike, ProgressFn
from ..io.feature_store import cache_path

if TYPE_CHECKING:
    from pathlib import Path

    from ..io.slide import Slide
    from ..tiling.grid import PatchGrid
    from .encoders import FrozenEncoder


def store_path(cache_dir: PathLike, slide: Slide, encoder: FrozenEncoder, grid: PatchGrid) -> Path:
    """The cache store of ``grid``'s patches of ``slide`` encoded by ``encoder``."""
    key = {"grid": grid.params(), "coords": hashlib.sha256(grid.coords.tobytes()).hexdigest()}
    return cache_path(
        cache_dir,
        slide_stem=slide.path.stem,
        fingerprint=slide.fingerprint,
        encoder_name=encoder.name,
        grid_key=key,
    )


def cached_store(cache_dir: PathLike, slide: Slide, encoder_name: str, grid: PatchGrid) -> Path:
    """:func:`store_path` from the encoder's registry name (no weights loaded): where its features are."""
    key = {"grid": grid.params(), "coords": hashlib.sha256(grid.coords.tobytes()).hexdigest()}
    return cache_path(
        cache_dir,
        slide_stem=slide.path.stem,
        fingerprint=slide.fingerprint,
        encoder_name=encoder_name,
        grid_key=key,
    )


def cached_features(
    slide: Slide,
    grid: PatchGrid,
    encoder: FrozenEncoder,
    *,
    cache_dir: PathLike | None = None,
    device: str = "auto",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """``(n, d)`` float32 features of the grid's patches (read from / written into the cache when given)."""
    from .extract import extract_features

    store = None if cache_dir is None else store_path(cache_dir, slide, encoder, grid)
    bag = extract_features(slide, grid, encoder, store=store, device=device, progress=progress, cancel=cancel)
    return np.asarray(bag.features, dtype=np.float32)
