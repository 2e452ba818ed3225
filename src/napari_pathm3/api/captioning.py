"""The captioning verbs: a slide (path, open slide, napari viewer or feature bag) and a
:class:`~napari_pathm3.jobs.CaptionRequest` -> a result. The one entry point the API, the CLI and the
widgets share: ``"demo"`` is resolved, a viewer gives its slide and a Shapes layer its polygons, here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._types import CancelToken, ProgressFn
from ..io.slide import Slide, as_slide
from ..jobs import CaptionRequest, RunContext
from ..result import SlideResult
from ..viewer import is_shapes_layer, is_viewer, shapes_layer_polygons, slide_from_viewer, slide_scale
from .models import resolve_demo

#: the zero-shot encoder :func:`zero_shot_classify` uses unless told otherwise
DEFAULT_ZERO_SHOT = "clip:vinid/plip"


def build_request(request: CaptionRequest | None, options: dict[str, Any]) -> CaptionRequest:
    """``request`` with keyword ``options`` applied (validated by :class:`CaptionRequest`), or a new one."""
    if request is None:
        return CaptionRequest(**options)
    return request.replace(**options) if options else request


def run_context(
    context: RunContext | None, progress: ProgressFn | None, cancel: CancelToken | None
) -> RunContext:
    """``context``, or one made of the loose ``progress`` / ``cancel`` keywords."""
    if context is not None:
        if progress is not None or cancel is not None:
            raise TypeError("pass progress and cancel in the context, or as keywords, not both")
        return context
    return RunContext(progress=progress, cancel=cancel)


def _target_and_request(target: object, request: CaptionRequest) -> tuple[object, CaptionRequest]:
    """A viewer -> its slide; a Shapes layer as region -> its polygons in the slide's level-0 pixels."""
    slide = slide_from_viewer(target) if is_viewer(target) else target
    if request.region is not None and is_shapes_layer(request.region):
        if isinstance(slide, Slide):
            scale = slide_scale(slide)
        else:  # a path: the shapes' world units need the slide's µm/px
            with as_slide(slide) as opened:
                scale = slide_scale(opened)
        request = request.replace(region=shapes_layer_polygons(request.region, slide_scale=scale))
    return slide, request


def run_caption(target: Any, request: CaptionRequest, context: RunContext | None = None) -> SlideResult:
    """THE captioning entry point: resolve the target and ``"demo"``, then run the pipeline."""
    from ..inference import caption_slide as _caption

    ctx = context or RunContext()
    slide, request = _target_and_request(target, request)
    model = resolve_demo(request.model, device=request.device, progress=ctx.progress, cancel=ctx.cancel)
    return _caption(slide, request.replace(model=model), ctx)


def caption_slide(
    target: Any,
    request: CaptionRequest | None = None,
    *,
    context: RunContext | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    **options: Any,
) -> SlideResult:
    """Classify and caption a slide.

    Args:
        target: a slide path, an open :class:`Slide`, a napari viewer (its selected slide layer, else
            the first slide layer opened with napari-pathm3), or a precomputed feature bag (``.h5`` of
            TRIDENT/CLAM, a ``.zarr`` feature store bag, ``.npy``/``.pt``/``.safetensors``: no slide is read).
        request: a :class:`~napari_pathm3.jobs.CaptionRequest`; or give its fields as keywords (``options``):
            ``model`` (checkpoint folder, ``"demo"`` (default) or a loaded model), ``encoder`` (``None`` =
            the model's own), ``device``, ``region`` (level-0 polygons, or a napari Shapes layer: its
            selected shapes, else all), ``text``, ``tiling`` (default: the model's), ``min_tissue_fraction``,
            ``level``, ``mpp``, ``tissue``, ``cache_dir``, ``top_k``, ``word_maps``, ``queries`` (phrases to
            map, e.g. ``["solid nests"]``), ``word_method``, ``phrase_method`` (see :func:`query_heatmap`).
        context: a :class:`~napari_pathm3.jobs.RunContext` (progress, cancel, timings); or ``progress`` and
            ``cancel`` as keywords.

    Returns:
        :class:`SlideResult` with ``label``, ``probabilities``, ``caption``, ``attention`` and more;
        ``warnings`` holds problems with the result and ``caption_withheld`` says when the model has not
        learned to caption (from the verdict recorded when it was trained; the caption then says so).
    """
    return run_caption(target, build_request(request, options), run_context(context, progress, cancel))


def query_heatmap(
    target: Any,
    phrase: str,
    request: CaptionRequest | None = None,
    *,
    context: RunContext | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    **options: Any,
) -> Any:
    """Where ``phrase`` applies on a slide: a patch heatmap, without captioning.

    Args:
        target: slide path, open :class:`Slide`, napari viewer or feature bag (as :func:`caption_slide`).
        phrase: a few words, e.g. ``"solid nests"``.
        request, options: as in :func:`caption_slide`; ``model`` is a PathM3 checkpoint folder / ``"demo"``
            / loaded model (its image-text path; ``method`` ``"auto"``, ``"singleton"``, ``"lm"``, ``"itc"``
            or ``"joint"``), or a CLIP-style vision-language encoder ``"clip:<id or folder>"`` (e.g.
            ``"clip:vinid/plip"``): patch-text similarity with a prompt ensemble.

    Returns:
        :class:`napari_pathm3.text_query.QueryResult`: ``phrase_map`` (``values`` ``(n,)``, a distribution
        over the patches), ``grid`` and :meth:`~napari_pathm3.text_query.QueryResult.layer` for napari.
    """
    from ..text_query import query_heatmap as _query

    if "method" in options:  # the documented keyword of this verb
        options["phrase_method"] = options.pop("method")
    req = build_request(request, options)
    ctx = run_context(context, progress, cancel)
    slide, req = _target_and_request(target, req)
    if not req.is_clip:
        model = resolve_demo(req.model, device=req.device, progress=ctx.progress, cancel=ctx.cancel)
        req = req.replace(model=model)
    return _query(slide, phrase, req, ctx)


def zero_shot_classify(
    target: Any,
    class_names: Sequence[str],
    request: CaptionRequest | None = None,
    *,
    context: RunContext | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    **options: Any,
) -> SlideResult:
    """Zero-shot slide classification with a CLIP-style patch encoder (no trained PathM3 model).

    Args:
        target: slide path, open :class:`Slide` or napari viewer.
        class_names: two or more class names, e.g. ``["tumour", "normal tissue"]``.
        request, options: as in :func:`caption_slide`; ``model`` is ``"clip:<HF id or folder>"`` (PLIP by
            default; its weights must be in the HF cache offline).
            ``templates``: prompt templates with ``{}`` for the class name (default: five CONCH/PLIP-style
            ones).

    Returns:
        :class:`SlideResult` (``caption`` empty; ``phrase_maps`` one patch map per class).
    """
    from ..text_query import zero_shot_slide

    templates: Sequence[str] | None = options.pop("templates", None)
    if request is None:
        options.setdefault("model", DEFAULT_ZERO_SHOT)
    req = build_request(request, options)
    slide, req = _target_and_request(target, req)
    ctx = run_context(context, progress, cancel)
    return zero_shot_slide(slide, class_names, req, templates=templates, context=ctx)
