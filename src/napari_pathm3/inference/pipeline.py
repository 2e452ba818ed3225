"""``caption_slide``: one slide (or a region of it) and a :class:`~napari_pathm3.jobs.CaptionRequest` ->
class, probabilities, caption and attention. The request's grid rule decides the patches; a cancelled run
raises :class:`~napari_pathm3.errors.Cancelled` and leaves the feature cache as it was (atomic commits)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .._types import PathLike
from ..io.slide import Slide, open_slide
from ..jobs import CaptionRequest, RunContext
from ..result import SlideResult
from .bags import caption_feature_bag, is_feature_bag
from .models import honesty, load_encoder, load_model, model_name, provenance_of
from .stages import feature_stage, grid_stages, model_stages, region_polygons


@contextmanager
def slide_with_mpp(target: Slide | PathLike, mpp: float | None) -> Iterator[Slide]:
    """An open slide for ``target`` with µm/px ``mpp`` when given: an open slide as it is when ``mpp`` is
    unset or what it already has (the caller closes it), else the file opened here (closed on exit), so a
    viewer layer's own slide handle is left as it was."""
    if isinstance(target, Slide) and (
        mpp is None or (target.mpp is not None and abs(target.mpp - mpp) <= 1e-9 * mpp)
    ):
        yield target
        return
    if isinstance(target, Slide):
        slide = open_slide(target.path, backend=target.backend, mpp=mpp)  # type: ignore[arg-type]
    else:
        slide = open_slide(target, mpp=mpp)
    try:
        yield slide
    finally:
        slide.close()


def caption_slide(
    target: Slide | PathLike, request: CaptionRequest, context: RunContext | None = None
) -> SlideResult:
    """Classify and caption a slide (or the patches inside ``request.region``), or a feature bag.

    Args:
        target: an open :class:`~napari_pathm3.io.slide.Slide`, a slide path (opened and closed here) or
            a feature bag path (:func:`is_feature_bag`).
        request: the run (``request.model`` is a loaded ``PathM3Model`` or a checkpoint folder here:
            ``"demo"`` is resolved by :mod:`napari_pathm3.api`).
        context: progress (a :class:`~napari_pathm3._types.Progress` per stage, see
            :data:`~napari_pathm3.inference.STAGES`), cancellation and the stage timings.

    Raises:
        NoTissueError: no patch with enough tissue (inside the region).
        CheckpointError / EncoderError / SlideReadError / MissingMppError: see their messages.
    """
    from ..threads import apply_thread_policy

    apply_thread_policy()  # torch threads and reader workers from the free cores, re-read at every call
    ctx = context or RunContext()
    if is_feature_bag(target):
        return caption_feature_bag(target, request, ctx)  # type: ignore[arg-type]
    ctx.check()
    if request.region is not None:  # shape and NaN: before any work
        region_polygons(request.region, None)
    pm = load_model(
        request.model, device=request.device, text_side=request.needs_text_side, progress=ctx.progress
    )
    enc = load_encoder(request.encoder, model=pm, device=request.device)
    with slide_with_mpp(target, request.mpp) as slide:
        polygons = None if request.region is None else region_polygons(request.region, slide)  # on it
        tiling = request.tiling_for(pm.config.tiling, slide.mpp)
        grid, tissue_mask = grid_stages(slide, tiling, request.tissue, polygons, ctx)
        feats = feature_stage(slide, grid, enc, request, ctx)
        where = {"slide_path": str(slide.path), "slide_dimensions": slide.dimensions, "mpp_xy": slide.mpp_xy}
    out = model_stages(pm, feats, request, ctx)
    return out.result(
        **where,
        grid=grid,
        tissue=tissue_mask,
        model_name=model_name(pm),
        demo=pm.config.demo,
        provenance=provenance_of(pm),
        encoder_name=enc.name,
        device=str(pm.device),
        text=request.text,
        region=polygons,
        timings=dict(ctx.timings),
        **honesty(pm, feats),
    )
