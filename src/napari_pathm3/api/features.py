"""Feature extraction verbs: a slide -> the features of every tissue patch (optionally into a store)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._types import CancelToken, PathLike, ProgressFn
from ..config import DEFAULT_ENCODER, TilingConfig
from ..io.slide import Slide, as_slide

if TYPE_CHECKING:
    from ..config import TissueConfig
    from ..io.feature_store import FeatureBag
    from ..tiling import PatchGrid, TissueMask


def slide_grid(
    slide: Slide, tiling: TilingConfig, *, tissue: TissueConfig | None = None
) -> tuple[TissueMask, PatchGrid | None]:
    """The tissue mask and patch grid of an open slide; the grid is ``None`` when it needs the slide's µm/px
    and the slide has none (an absurd grid fails first, before tissue detection)."""
    from ..tiling import check_grid, detect_tissue, make_grid

    possible = slide.mpp is not None or tiling.target_mpp is None
    if possible:
        check_grid(slide, tiling)
    mask = detect_tissue(slide, tissue)
    return mask, (make_grid(slide, tiling, tissue=mask) if possible else None)


def extract_features(
    slide: Slide | PathLike,
    *,
    encoder: str = DEFAULT_ENCODER,
    tiling: TilingConfig | None = None,
    store: PathLike | None = None,
    device: str = "auto",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> FeatureBag:
    """Tissue -> patch grid -> features of every patch.

    Args:
        slide: open slide or path.
        encoder: encoder registry name (``builtin:colorstats`` works offline; see ``features.encoders``).
        tiling: patch grid settings (default 224 px at 0.5 µm/px).
        store: zarr feature store to write (and resume); ``None`` keeps features in memory.

    Returns:
        The ``FeatureBag`` (``features (n, d)``, ``coords (n, 2)`` level-0 x, y, ...).
    """
    from ..features.extract import extract_features as _extract
    from ..tiling import check_grid, detect_tissue, make_grid

    with as_slide(slide) as s:
        check_grid(s, tiling)  # fails fast (no mpp, absurd grid, not RGB) before tissue detection
        grid = make_grid(s, tiling or TilingConfig(), tissue=detect_tissue(s))
        return _extract(s, grid, encoder, store=store, device=device, progress=progress, cancel=cancel)
