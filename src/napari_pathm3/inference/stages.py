"""The stages of a captioning run, each reported as a :class:`~napari_pathm3._types.Progress` event and
timed in the run's :class:`~napari_pathm3.jobs.RunContext`: ``TISSUE`` -> ``PATCHES`` (the grid, inside the
region) -> ``FEATURES`` (through the feature cache) -> ``MODEL`` -> ``CAPTION`` (with the word and phrase
maps). Cancellation is checked between stages and inside feature extraction."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._types import PathLike, Stage
from ..config import TilingConfig, TissueConfig
from ..errors import NoTissueError, PathM3Error
from ..heatmaps import top_k as _top_k
from ..jobs import CaptionRequest, RunContext
from ..result import SlideResult
from ..tiling import PatchGrid, TissueMask, check_grid, detect_tissue, make_grid
from .models import classify, generate_caption

if TYPE_CHECKING:
    from ..features.encoders import FrozenEncoder
    from ..io.slide import Slide
    from ..model.pathm3 import PathM3Model

#: The stages of :func:`napari_pathm3.inference.caption_slide` in order (the widget's progress bar shows them).
STAGES = (Stage.TISSUE, Stage.PATCHES, Stage.FEATURES, Stage.MODEL, Stage.CAPTION)


def patches_in_region(grid: PatchGrid, polygons: Sequence[np.ndarray]) -> np.ndarray:
    """Boolean ``(n,)``: patch centre inside any of ``polygons`` (``(k, 2)`` level-0 ``x, y``)."""
    from skimage.measure import points_in_poly

    centers = grid.centers()
    keep = np.zeros(len(grid), bool)
    for poly in polygons:
        poly = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(poly) >= 3:
            keep |= points_in_poly(centers, poly)
    return keep


def region_polygons(region: Any, slide: Any) -> list[np.ndarray]:
    """The region's polygons, each a finite ``(k, 2)`` level-0 array on the slide (:class:`RegionError`)."""
    from ..errors import RegionError
    from ..schemas import check_polygon

    if isinstance(region, np.ndarray) and region.ndim == 2:  # one polygon passed bare
        region = [region]
    try:
        polys = list(region)
    except TypeError:
        raise RegionError(
            f"region: expected a list of (k, 2) polygons, got {type(region).__name__}"
        ) from None
    if not polys:
        raise RegionError("region: no polygons; draw a shape or pass region=None for the whole slide")
    dims = getattr(slide, "dimensions", None)
    return [check_polygon(p, name=f"region polygon {i}", dimensions=dims) for i, p in enumerate(polys)]


def grid_stages(
    slide: Slide,
    tiling: TilingConfig,
    tissue: TissueConfig | None,
    region: list[np.ndarray] | None,
    ctx: RunContext,
) -> tuple[PatchGrid, TissueMask]:
    """The "tissue" and "patches" stages: the tissue mask and the patch grid (inside ``region``)."""
    # no mpp, an absurd grid, not brightfield RGB: one clear error now, before tissue detection
    check_grid(slide, tiling)
    ctx.report(0, len(STAGES), Stage.TISSUE)
    with ctx.timed(Stage.TISSUE):
        tissue_mask = detect_tissue(slide, tissue, progress=ctx.within(Stage.TISSUE))
    if tissue_mask.empty:
        raise NoTissueError(
            f"{slide.path.name}: no tissue detected; lower the tissue threshold (--tissue-threshold, "
            "e.g. 0.03, or 'tissue threshold' in the widget) or check the slide"
        )
    ctx.check()
    ctx.report(1, len(STAGES), Stage.PATCHES)
    with ctx.timed(Stage.PATCHES):
        grid = make_grid(slide, tiling, tissue=tissue_mask)
        if region is not None:
            grid = grid.subset(patches_in_region(grid, region))
    if len(grid) == 0:
        where = "inside the selected region" if region is not None else "on the slide"
        raise NoTissueError(
            f"{slide.path.name}: no patch with at least {tiling.min_tissue_fraction:.0%} tissue {where}; "
            "draw a larger region or lower the minimum tissue fraction (--min-tissue, or the widget setting)"
        )
    return grid, tissue_mask


def feature_stage(
    slide: Slide,
    grid: PatchGrid,
    encoder: FrozenEncoder,
    request: CaptionRequest,
    ctx: RunContext,
) -> np.ndarray:
    """The "features" stage: the grid's patch features, through the request's feature cache (if any)."""
    from ..features.cache import cached_features

    ctx.check()
    ctx.report(2, len(STAGES), Stage.FEATURES)
    cache_dir: PathLike | None = request.cache_dir
    with ctx.timed(Stage.FEATURES):
        return cached_features(
            slide,
            grid,
            encoder,
            cache_dir=cache_dir,
            device=request.device,
            progress=ctx.within(Stage.FEATURES),
            cancel=ctx.cancel,
        )


@dataclass(frozen=True)
class Outputs:
    """What the model and caption stages produced for one bag of patches."""

    probabilities: dict[str, float]
    caption: str
    caption_withheld: bool
    attention: np.ndarray
    query_attention: np.ndarray
    top_indices: np.ndarray
    top_scores: np.ndarray
    word_maps: Any = None  # grounding.WordMaps | None
    phrase_maps: tuple[Any, ...] = ()  # grounding.PhraseMap per asked phrase

    def result(self, **slide_fields: Any) -> SlideResult:
        """The :class:`SlideResult` of these outputs and ``slide_fields`` (path, grid, model name, ...)."""
        return SlideResult(
            label=max(self.probabilities, key=self.probabilities.__getitem__),
            probabilities=self.probabilities,
            caption=self.caption,
            caption_withheld=self.caption_withheld,
            attention=self.attention,
            query_attention=self.query_attention,
            top_indices=self.top_indices,
            top_scores=self.top_scores,
            word_maps=self.word_maps,
            phrase_maps=self.phrase_maps,
            **slide_fields,
        )


def model_stages(pm: PathM3Model, features: np.ndarray, request: CaptionRequest, ctx: RunContext) -> Outputs:
    """The "model" and "caption" stages shared by slides and feature bags: class probabilities, the caption
    (replaced by the verdict when the model has not learned to caption), mean and per-query attention over
    the patches, the top-``top_k`` patches and the word and phrase maps asked for."""
    from ..model.verdict import NOT_CAPTIONING, verdict_of

    n_patches, total = len(features), len(STAGES)
    ctx.check()
    ctx.report(3, total, Stage.MODEL)
    with ctx.timed(Stage.MODEL):
        probs, query_attention = classify(pm, features, text=request.text)
    ctx.check()
    ctx.report(4, total, Stage.CAPTION)
    with ctx.timed(Stage.CAPTION):
        caption = generate_caption(pm, features, max_new_tokens=request.max_new_tokens, progress=ctx.progress)
    ctx.report(total, total, Stage.DONE)
    verdict = verdict_of(pm)
    withheld = verdict is not None and verdict.caption_withheld
    if withheld:  # its caption would be the same for every slide: say so instead
        caption = NOT_CAPTIONING
    names = tuple(pm.config.class_names)
    probabilities = {n: float(p) for n, p in zip(names, np.asarray(probs, dtype=float), strict=True)}
    if not probabilities:
        raise PathM3Error("the model returned no class probabilities")
    query_attention = np.asarray(query_attention, dtype=np.float32).reshape(-1, n_patches)
    attention = query_attention.mean(axis=0)
    idx, scores = _top_k(attention, request.top_k)
    words, phrases = grounding_stage(pm, features, "" if withheld else caption, request, ctx)
    return Outputs(probabilities, caption, withheld, attention, query_attention, idx, scores, words, phrases)


def grounding_stage(
    pm: PathM3Model, features: np.ndarray, caption: str, request: CaptionRequest, ctx: RunContext
) -> tuple[Any, tuple[Any, ...]]:
    """Word maps of the caption (none for a withheld one: pass ``""``) and the phrase maps asked for; timed
    with the caption stage."""
    from .. import grounding

    t0 = time.perf_counter()
    words = None
    if request.word_maps and caption:
        words = grounding.word_maps(pm, features, caption, method=request.word_method)
    phrases = tuple(
        grounding.phrase_map(pm, features, q, method=request.phrase_method) for q in request.queries
    )
    if words is not None or phrases:  # part of the caption stage (the maps' own seconds are in the result)
        key = Stage.CAPTION.value
        ctx.timings[key] = ctx.timings.get(key, 0.0) + time.perf_counter() - t0
    return words, phrases
