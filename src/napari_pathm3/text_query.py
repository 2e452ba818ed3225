"""``query_heatmap``: where a typed phrase applies on a slide, from a PathM3 model's image-text path or from a
CLIP-style vision-language patch encoder (``"clip:<id or folder>"``), without captioning.

The slide goes through the same tissue -> patches -> features stages as :func:`~napari_pathm3.inference.caption_slide`
(same feature cache), then :func:`napari_pathm3.grounding.phrase_map` or
:func:`napari_pathm3.features.clip.phrase_values` scores the patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._types import PathLike
from .config import TilingConfig
from .grounding import PhraseMap
from .inference import is_feature_bag, load_encoder, load_model, slide_with_mpp
from .inference.stages import feature_stage, grid_stages, region_polygons
from .io.slide import Slide
from .jobs import CaptionRequest, RunContext
from .tiling import PatchGrid, TissueMask

__all__ = ["QueryResult", "encoder_tiling", "query_heatmap", "zero_shot_slide"]


def zero_shot_templates() -> tuple[str, ...]:
    """The prompt templates zero-shot classification uses by default (CONCH/PLIP-style; loads torch)."""
    from .features.clip import DEFAULT_TEMPLATES

    return tuple(DEFAULT_TEMPLATES)


def zero_shot_name(source: str) -> str:
    """The model name of a zero-shot result: ``zero-shot: <folder or repo name> (clip:<spec>)``."""
    spec = source.removeprefix("clip:")
    return f"zero-shot: {Path(spec).name or spec} ({source})"


def encoder_tiling(encoder: Any) -> TilingConfig:
    """The grid a CLIP-style encoder is run on without a PathM3 model: its µm/px and input size."""
    return TilingConfig(target_mpp=encoder.mpp, patch_size=encoder.input_size or 224)


@dataclass(frozen=True, eq=False)
class QueryResult:
    """A phrase map on a slide's patch grid."""

    slide_path: str
    mpp_xy: tuple[float, float] | None
    grid: PatchGrid
    phrase_map: PhraseMap
    model_name: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def slide_scale(self) -> tuple[float, float]:
        return (1.0, 1.0) if self.mpp_xy is None else (float(self.mpp_xy[1]), float(self.mpp_xy[0]))

    def summary(self) -> dict[str, Any]:
        return {
            "slide": self.slide_path,
            "model": self.model_name,
            "num_patches": len(self.grid),
            **self.phrase_map.summary(),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


@dataclass(frozen=True, eq=False)
class _SlideFeatures:
    features: np.ndarray
    grid: PatchGrid
    tissue: TissueMask
    where: dict[str, Any]  # slide_path, slide_dimensions, mpp_xy
    region: list[np.ndarray] | None


def _slide_features(
    target: Slide | PathLike,
    encoder: Any,
    model_tiling: TilingConfig | None,
    request: CaptionRequest,
    ctx: RunContext,
) -> _SlideFeatures:
    """Tissue -> patches (the request's grid rule over ``model_tiling``) -> features of the slide."""
    with slide_with_mpp(target, request.mpp) as slide:
        polygons = None if request.region is None else region_polygons(request.region, slide)
        tiling = request.tiling_for(model_tiling, slide.mpp)
        grid, tissue = grid_stages(slide, tiling, request.tissue, polygons, ctx)
        feats = feature_stage(slide, grid, encoder, request, ctx)
        where = {"slide_path": str(slide.path), "slide_dimensions": slide.dimensions, "mpp_xy": slide.mpp_xy}
    return _SlideFeatures(feats, grid, tissue, where, polygons)


def query_heatmap(
    target: Slide | PathLike, phrase: str, request: CaptionRequest, context: RunContext | None = None
) -> QueryResult:
    """The phrase map of ``phrase`` on a slide (see :func:`napari_pathm3.api.query_heatmap`); the method is
    ``request.phrase_method``."""
    from .inference import model_name
    from .threads import apply_thread_policy

    apply_thread_policy()
    if not str(phrase).strip():
        raise ValueError("phrase: empty; type a few words, e.g. 'solid nests'")
    ctx = context or RunContext()
    if request.is_clip:
        from .features.clip import phrase_values
        from .features.encoders import cached_encoder, canonical_name

        enc = cached_encoder(canonical_name(request.model), request.device)
        got = _slide_features(target, enc, encoder_tiling(enc), request, ctx)
        with ctx.timed("phrase"):
            values, prompts = phrase_values(enc, got.features, phrase)
        pm = PhraseMap(phrase, values, f"CLIP patch-text similarity ({enc.name})", info={"prompts": prompts})
        return QueryResult(got.where["slide_path"], got.where["mpp_xy"], got.grid, pm, enc.name, ctx.timings)
    if is_feature_bag(target):
        raise ValueError(
            "query_heatmap needs a slide; for a feature bag use caption_slide(..., queries=[...])"
        )
    from .grounding import phrase_map

    method = request.phrase_method
    pm3 = load_model(request.model, device=request.device, text_side=method in ("itc", "joint"))
    enc = load_encoder(request.encoder, model=pm3, device=request.device)
    got = _slide_features(target, enc, pm3.config.tiling, request, ctx)
    with ctx.timed("phrase"):
        result = phrase_map(pm3, got.features, phrase, method=method)
    return QueryResult(
        got.where["slide_path"], got.where["mpp_xy"], got.grid, result, model_name(pm3), ctx.timings
    )


def zero_shot_slide(
    target: Slide | PathLike,
    class_names: Sequence[str],
    request: CaptionRequest,
    *,
    templates: Sequence[str] | None = None,
    context: RunContext | None = None,
) -> Any:
    """Zero-shot slide classification with a CLIP-style encoder ``request.model`` (``"clip:<id or folder>"``):
    a :class:`~napari_pathm3.result.SlideResult` whose ``attention`` is the predicted class's patch map and
    whose ``phrase_maps`` hold every class's map (no caption, no learned queries)."""
    from .features.clip import DEFAULT_TEMPLATES, zero_shot
    from .features.encoders import cached_encoder, canonical_name
    from .heatmaps import top_k as _top_k
    from .result import SlideResult
    from .threads import apply_thread_policy

    apply_thread_policy()
    if not request.is_clip:
        raise ValueError(
            f"zero-shot classification needs a CLIP-style encoder 'clip:<id or folder>', not {request.model!r}"
        )
    ctx = context or RunContext()
    templates = tuple(t for t in (templates or DEFAULT_TEMPLATES) if t.strip()) or DEFAULT_TEMPLATES
    enc = cached_encoder(canonical_name(request.model), request.device)
    got = _slide_features(target, enc, encoder_tiling(enc), request, ctx)
    with ctx.timed("zero_shot"):
        probs, per_class = zero_shot(enc, got.features, class_names, templates=templates)
    names = list(probs)
    label = max(probs, key=probs.__getitem__)
    attention = per_class[names.index(label)]
    idx, scores = _top_k(attention, request.top_k)
    maps = tuple(
        PhraseMap(c, per_class[i], f"zero-shot class map ({enc.name})", info={"prompts": list(templates)})
        for i, c in enumerate(names)
    )
    return SlideResult(
        **got.where,
        label=label,
        probabilities=probs,
        caption="",
        attention=attention,
        query_attention=np.zeros((0, len(got.grid)), np.float32),
        grid=got.grid,
        tissue=got.tissue,
        top_indices=idx,
        top_scores=scores,
        model_name=zero_shot_name(enc.name),
        encoder_name=enc.name,
        device=str(enc.device),
        region=got.region,
        timings=dict(ctx.timings),
        phrase_maps=maps,
    )
