"""``query_heatmap``: where a typed phrase applies on a slide, from a PathM3 model's image-text path or from a
CLIP-style vision-language patch encoder (``"clip:<id or folder>"``), without captioning.

The slide goes through the same tissue -> patches -> features stages as :func:`~napari_pathm3.inference.caption_slide`
(same feature cache), then :func:`napari_pathm3.grounding.phrase_map` or
:func:`napari_pathm3.features.clip.phrase_values` scores the patches.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._types import CancelToken, PathLike, ProgressFn
from .config import TilingConfig, TissueConfig
from .grounding import PhraseMap
from .inference import (
    _feature_stage,
    _grid_stages,
    is_feature_bag,
    load_encoder,
    load_model,
)
from .io.slide import Slide, as_slide
from .tiling import PatchGrid

__all__ = ["QueryResult", "encoder_tiling", "query_heatmap", "zero_shot_slide"]


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


def _features(
    slide_or_path: Slide | PathLike,
    encoder: Any,
    *,
    device: str,
    region: Sequence[np.ndarray] | None,
    tiling: TilingConfig,
    tissue: TissueConfig | None,
    cache_dir: PathLike | None,
    timings: dict[str, float],
    progress: ProgressFn | None,
    cancel: CancelToken | None,
) -> tuple[np.ndarray, PatchGrid, str, tuple[float, float] | None]:
    polygons = None if region is None else [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in region]
    with as_slide(slide_or_path) as slide:
        grid, _ = _grid_stages(slide, tiling, tissue, polygons, timings, progress, cancel)
        feats = _feature_stage(slide, grid, encoder, cache_dir, device, timings, progress, cancel)
        return feats, grid, str(slide.path), slide.mpp_xy


def query_heatmap(
    slide_or_path: Slide | PathLike,
    phrase: str,
    *,
    model: Any,
    encoder: Any = None,
    device: str = "auto",
    region: Sequence[np.ndarray] | None = None,
    tiling: TilingConfig | None = None,
    tissue: TissueConfig | None = None,
    cache_dir: PathLike | None = None,
    method: str = "auto",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> QueryResult:
    """The phrase map of ``phrase`` on a slide (see :func:`napari_pathm3.api.query_heatmap`)."""
    from .inference import model_name
    from .threads import apply_thread_policy

    apply_thread_policy()
    if not str(phrase).strip():
        raise ValueError("phrase: empty; type a few words, e.g. 'solid nests'")
    timings: dict[str, float] = {}
    if isinstance(model, str) and model.startswith("clip:"):
        from .features.clip import phrase_values
        from .features.encoders import cached_encoder, canonical_name

        enc = cached_encoder(canonical_name(model), device)
        feats, grid, path, mpp = _features(
            slide_or_path,
            enc,
            device=device,
            region=region,
            tiling=tiling or encoder_tiling(enc),
            tissue=tissue,
            cache_dir=cache_dir,
            timings=timings,
            progress=progress,
            cancel=cancel,
        )
        t0 = time.perf_counter()
        values, prompts = phrase_values(enc, feats, phrase)
        pm = PhraseMap(phrase, values, f"CLIP patch-text similarity ({enc.name})", info={"prompts": prompts})
        timings["phrase"] = time.perf_counter() - t0
        return QueryResult(path, mpp, grid, pm, enc.name, timings)
    if is_feature_bag(slide_or_path):
        raise ValueError(
            "query_heatmap needs a slide; for a feature bag use caption_slide(..., queries=[...])"
        )
    from .grounding import phrase_map

    pm3 = load_model(model, device=device, text_side=method in ("itc", "joint"))
    enc = load_encoder(encoder, model=pm3, device=device)
    feats, grid, path, mpp = _features(
        slide_or_path,
        enc,
        device=device,
        region=region,
        tiling=tiling or pm3.config.tiling or TilingConfig(),
        tissue=tissue,
        cache_dir=cache_dir,
        timings=timings,
        progress=progress,
        cancel=cancel,
    )
    t0 = time.perf_counter()
    result = phrase_map(pm3, feats, phrase, method=method)
    timings["phrase"] = time.perf_counter() - t0
    return QueryResult(path, mpp, grid, result, model_name(pm3), timings)


def zero_shot_slide(
    slide_or_path: Slide | PathLike,
    *,
    model: str,
    class_names: Sequence[str],
    templates: Sequence[str] | None = None,
    device: str = "auto",
    region: Sequence[np.ndarray] | None = None,
    tiling: TilingConfig | None = None,
    tissue: TissueConfig | None = None,
    cache_dir: PathLike | None = None,
    top_k: int = 8,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Any:
    """Zero-shot slide classification with a CLIP-style encoder ``model`` (``"clip:<id or folder>"``):
    a :class:`~napari_pathm3.result.SlideResult` whose ``attention`` is the predicted class's patch map and
    whose ``phrase_maps`` hold every class's map (no caption, no learned queries)."""
    from .features.clip import DEFAULT_TEMPLATES, zero_shot
    from .features.encoders import cached_encoder, canonical_name
    from .heatmaps import top_k as _top_k
    from .result import SlideResult
    from .threads import apply_thread_policy

    apply_thread_policy()
    if not (isinstance(model, str) and model.startswith("clip:")):
        raise ValueError(
            f"zero-shot classification needs a CLIP-style encoder 'clip:<id or folder>', not {model!r}"
        )
    templates = tuple(t for t in (templates or DEFAULT_TEMPLATES) if t.strip()) or DEFAULT_TEMPLATES
    timings: dict[str, float] = {}
    enc = cached_encoder(canonical_name(model), device)
    polygons = None if region is None else [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in region]
    tiling = tiling or encoder_tiling(enc)
    with as_slide(slide_or_path) as slide:
        grid, tissue_mask = _grid_stages(slide, tiling, tissue, polygons, timings, progress, cancel)
        feats = _feature_stage(slide, grid, enc, cache_dir, device, timings, progress, cancel)
        where = {"slide_path": str(slide.path), "slide_dimensions": slide.dimensions, "mpp_xy": slide.mpp_xy}
    t0 = time.perf_counter()
    probs, per_class = zero_shot(enc, feats, class_names, templates=templates)
    timings["zero_shot"] = time.perf_counter() - t0
    names = list(probs)
    label = max(probs, key=probs.__getitem__)
    attention = per_class[names.index(label)]
    idx, scores = _top_k(attention, top_k)
    maps = tuple(
        PhraseMap(c, per_class[i], f"zero-shot class map ({enc.name})", info={"prompts": list(templates)})
        for i, c in enumerate(names)
    )
    return SlideResult(
        **where,
        label=label,
        probabilities=probs,
        caption="",
        attention=attention,
        query_attention=np.zeros((0, len(grid)), np.float32),
        grid=grid,
        tissue=tissue_mask,
        top_indices=idx,
        top_scores=scores,
        model_name=f"zero-shot {enc.name}",
        encoder_name=enc.name,
        device=str(enc.device),
        region=polygons,
        timings=timings,
        phrase_maps=maps,
    )
