"""Inference: a slide (or feature bag) and a :class:`~napari_pathm3.jobs.CaptionRequest` -> a
:class:`~napari_pathm3.result.SlideResult`.

- :mod:`.models`: checkpoint -> model and encoder, its display name, classification and caption passes;
- :mod:`.stages`: tissue -> patches -> features -> model -> caption, each timed and reported;
- :mod:`.pipeline`: :func:`caption_slide`, the stages in order on one slide;
- :mod:`.bags`: :func:`caption_feature_bag` for precomputed features.

The demo model is resolved above this package (:mod:`napari_pathm3.api` passes its checkpoint folder down).
"""

from __future__ import annotations

from pathlib import Path

from .._types import PathLike
from ..result import SlideResult
from .bags import FEATURE_SUFFIXES, bag_grid, caption_feature_bag, is_feature_bag
from .models import (
    classify,
    generate_caption,
    load_encoder,
    load_model,
    model_name,
    model_warnings,
    provenance_of,
)
from .pipeline import caption_slide, slide_with_mpp
from .stages import STAGES, patches_in_region

__all__ = [
    "FEATURE_SUFFIXES",
    "STAGES",
    "SlideResult",
    "bag_grid",
    "caption_feature_bag",
    "caption_slide",
    "classify",
    "generate_caption",
    "is_feature_bag",
    "load_encoder",
    "load_model",
    "model_name",
    "model_warnings",
    "patches_in_region",
    "provenance_of",
    "save_heatmap_png",
    "slide_with_mpp",
]


def save_heatmap_png(
    result: SlideResult, path: PathLike, *, max_size: int = 1024, alpha: float = 0.5
) -> Path:
    """Write the heatmap figure (attention on a fixed scale relative to uniform, colour bar, class,
    probabilities and caption); see :func:`napari_pathm3.heatmap_png.save_heatmap_png`."""
    from ..heatmap_png import save_heatmap_png as write

    return write(result, path, max_size=max_size, alpha=alpha)
