"""The public scripting API: the same operations as the widgets and the CLI, paths in, typed results out.

>>> from napari_pathm3 import api
>>> with api.open_slide("case.svs") as slide:                            # doctest: +SKIP
...     result = api.caption_slide(slide, model="checkpoints/pathm3")
>>> result.label, result.probabilities, result.caption                  # doctest: +SKIP
>>> api.show(result, viewer)                                             # doctest: +SKIP

Importing this module loads neither Qt nor napari (nor torch): those come with the calls that need them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._types import CancelToken, PathLike, ProgressFn
from .config import DEFAULT_ENCODER, TilingConfig, TissueConfig
from .errors import PathM3Error, SlideReadError
from .io.slide import Slide, as_slide
from .io.slide import open_slide as _open_slide
from .result import SlideResult

if TYPE_CHECKING:
    import napari

    from .io.feature_store import FeatureBag
    from .model.pathm3 import PathM3Model
    from .training.loop import TrainResult

#: the ``model`` value that names the offline demo model (trained on first use; see :mod:`napari_pathm3.demo`)
DEMO = "demo"

__all__ = [
    "SlideResult",
    "caption_slide",
    "export_ome_zarr",
    "export_qupath",
    "export_spatialdata",
    "extract_features",
    "load_model",
    "open_slide",
    "query_heatmap",
    "read_regions",
    "show",
    "train",
    "zero_shot_classify",
]


def open_slide(path: PathLike, *, backend: str = "auto", mpp: float | None = None) -> Slide:
    """Open a whole-slide image with the first backend that reads it. Use as a context manager to close it.

    Args:
        path: slide file or DICOM WSI folder.
        backend: ``"auto"`` or a :class:`~napari_pathm3.io.backends.BackendKind` value.
        mpp: µm/px at level 0 when the file lacks it.
    """
    return _open_slide(path, backend=backend, mpp=mpp)


def load_model(
    model: PathLike | PathM3Model,
    *,
    device: str = "auto",
    text_side: bool = True,
    progress: ProgressFn | None = None,
) -> PathM3Model:
    """Load a PathM3 checkpoint folder, or ``"demo"`` for the offline demo model (trained on first use).

    Args:
        model: checkpoint folder (``config.json`` + ``model.safetensors``), ``"demo"``, or a loaded model.
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cuda"``, ``"mps"`` or ``"cpu"``.
        text_side: False skips the Q-Former's text-only weights (~300 MB at paper sizes): enough for
            :func:`caption_slide` and classification from images; the model then refuses text input.
        progress: ``LOAD_MODEL`` events with the bytes of the weights read so far (and the demo model's
            training events when it is trained first).

    Returns:
        The model in eval mode. Raises ``CheckpointError`` when the folder is not a usable checkpoint.
    """
    from .inference import load_model as _load

    source = resolve_demo(model, device=device, progress=progress)
    return _load(source, device=device, text_side=text_side, progress=progress)


def resolve_demo(
    model: PathLike | PathM3Model,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> PathLike | PathM3Model:
    """``"demo"`` -> the demo model's checkpoint folder (trained first when not cached); anything else as is."""
    if isinstance(model, str) and model == DEMO:
        from .demo import ensure_demo_model

        return ensure_demo_model(device=device, progress=progress, cancel=cancel)
    return model


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
    from .features.extract import extract_features as _extract
    from .tiling import check_grid, detect_tissue, make_grid

    with as_slide(slide) as s:
        check_grid(s, tiling)  # fails fast (no mpp, absurd grid, not RGB) before tissue detection
        grid = make_grid(s, tiling or TilingConfig(), tissue=detect_tissue(s))
        return _extract(s, grid, encoder, store=store, device=device, progress=progress, cancel=cancel)


def caption_slide(
    target: Any,
    *,
    model: PathLike | PathM3Model = DEMO,
    encoder: str | None = None,
    device: str = "auto",
    region: Any = None,
    text: str | None = None,
    tiling: TilingConfig | None = None,
    tissue: TissueConfig | None = None,
    cache_dir: PathLike | None = None,
    top_k: int = 8,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    word_maps: bool = True,
    queries: Sequence[str] = (),
    phrase_method: str = "auto",
    word_method: str = "auto",
) -> SlideResult:
    """Classify and caption a slide.

    Args:
        target: a slide path, an open :class:`Slide`, a napari viewer (its selected slide layer, else
            the first slide layer opened with napari-pathm3), or a precomputed feature bag (``.h5`` of
            TRIDENT/CLAM, a ``.zarr`` feature store bag, ``.npy``/``.pt``/``.safetensors``: no slide is read).
        model: checkpoint folder, ``"demo"`` or a loaded model.
        encoder: patch encoder name; ``None`` = the model's own.
        device: ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``.
        region: level-0 polygons (``(k, 2)`` arrays of x, y), or a napari Shapes layer (its selected shapes,
            else all of them); ``None`` = whole slide.
        text: optional text for text-conditioned classification.
        tiling: patch grid (default: the model's); tissue: tissue detection settings (default: Otsu).
        cache_dir: feature cache folder (features are reused on later runs).
        top_k: number of highest-attention patches to report.
        word_maps: one patch map per caption word (``result.word_maps``; docs/method.md §8).
        queries: phrases to map over the patches (``result.phrase_maps``), e.g. ``["solid nests"]``.
        word_method: ``"auto"`` (singleton up to 4096 patches, else gradient x attention), ``"singleton"``
            or ``"gradient x attention"``.
        phrase_method: ``"auto"`` (default: singleton up to 4096 patches, else lm), ``"singleton"``, ``"lm"``, ``"itc"`` or ``"joint"``; see :func:`query_heatmap`.

    Returns:
        :class:`SlideResult` with ``label``, ``probabilities``, ``caption``, ``attention`` and more;
        ``warnings`` holds problems with the result (e.g. "this model has not learned to caption", from the
        verdict recorded when the model was trained; the caption then says so instead of junk text).
    """
    from .inference import caption_slide as _caption

    slide: Slide | PathLike = _slide_from(target) if _is_viewer(target) else target
    if region is not None and hasattr(region, "data") and hasattr(region, "selected_data"):
        if not isinstance(slide, Slide):  # a path: the shapes' world units need the slide's mpp
            with open_slide(slide) as opened:
                scale = _scale_of(opened)
        else:
            scale = _scale_of(slide)
        region = shapes_layer_polygons(region, slide_scale=scale)
    model = resolve_demo(model, device=device, progress=progress, cancel=cancel)
    result = _caption(
        slide,
        model=model,
        encoder=encoder,
        device=device,
        region=region,
        text=text,
        tiling=tiling,
        tissue=tissue,
        cache_dir=cache_dir,
        top_k=top_k,
        progress=progress,
        cancel=cancel,
        word_maps=word_maps,
        queries=queries,
        phrase_method=phrase_method,
        word_method=word_method,
    )
    return result


def query_heatmap(
    target: Any,
    phrase: str,
    *,
    model: PathLike | PathM3Model | str = DEMO,
    encoder: str | None = None,
    device: str = "auto",
    region: Any = None,
    tiling: TilingConfig | None = None,
    tissue: TissueConfig | None = None,
    cache_dir: PathLike | None = None,
    method: str = "auto",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Any:
    """Where ``phrase`` applies on a slide: a patch heatmap, without captioning.

    Args:
        target: slide path, open :class:`Slide`, napari viewer or feature bag (as :func:`caption_slide`).
        phrase: a few words, e.g. ``"solid nests"``.
        model: a PathM3 checkpoint folder / ``"demo"`` / loaded model (its image-text path: ``method``
            ``"lm"``, ``"itc"`` or ``"joint"``), or a CLIP-style vision-language encoder ``"clip:<id or
            folder>"`` (e.g. ``"clip:vinid/plip"``): patch-text similarity with a prompt ensemble.
        encoder, device, region, tiling, tissue, cache_dir: as in :func:`caption_slide`.

    Returns:
        :class:`napari_pathm3.text_query.QueryResult`: ``phrase_map`` (``values`` ``(n,)``, a distribution
        over the patches), ``grid`` and :meth:`~napari_pathm3.text_query.QueryResult.layer` for napari.
    """
    from .text_query import query_heatmap as _query

    slide: Slide | PathLike = _slide_from(target) if _is_viewer(target) else target
    if region is not None and hasattr(region, "data") and hasattr(region, "selected_data"):
        with as_slide(slide) as opened:
            region = shapes_layer_polygons(region, slide_scale=_scale_of(opened))
    if not (isinstance(model, str) and model.startswith("clip:")):
        model = resolve_demo(model, device=device, progress=progress, cancel=cancel)
    return _query(
        slide,
        phrase,
        model=model,
        encoder=encoder,
        device=device,
        region=region,
        tiling=tiling,
        tissue=tissue,
        cache_dir=cache_dir,
        method=method,
        progress=progress,
        cancel=cancel,
    )


def zero_shot_classify(
    target: Any,
    class_names: Sequence[str],
    *,
    model: str = "clip:vinid/plip",
    templates: Sequence[str] | None = None,
    device: str = "auto",
    region: Any = None,
    cache_dir: PathLike | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> SlideResult:
    """Zero-shot slide classification with a CLIP-style patch encoder (no trained PathM3 model).

    Args:
        target: slide path, open :class:`Slide` or napari viewer.
        class_names: two or more class names, e.g. ``["tumour", "normal tissue"]``.
        model: ``"clip:<HF id or folder>"`` (PLIP by default; its weights must be in the HF cache offline).
        templates: prompt templates with ``{}`` for the class name (default: five CONCH/PLIP-style ones).

    Returns:
        :class:`SlideResult` (``caption`` empty; ``phrase_maps`` one patch map per class).
    """
    from .text_query import zero_shot_slide

    slide: Slide | PathLike = _slide_from(target) if _is_viewer(target) else target
    if region is not None and hasattr(region, "data") and hasattr(region, "selected_data"):
        with as_slide(slide) as opened:
            region = shapes_layer_polygons(region, slide_scale=_scale_of(opened))
    return zero_shot_slide(
        slide,
        model=model,
        class_names=class_names,
        templates=templates,
        device=device,
        region=region,
        cache_dir=cache_dir,
        progress=progress,
        cancel=cancel,
    )


def train(
    regions: Sequence[tuple[Slide | PathLike, Sequence[Any]]],
    *,
    output_dir: PathLike,
    class_names: Sequence[str] | None = None,
    encoder: str = DEFAULT_ENCODER,
    device: str = "auto",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    **hyperparameters: Any,
) -> TrainResult:
    """Train a PathM3 model on annotated regions and save it to ``output_dir``.

    Args:
        regions: ``[(slide, [Region, ...]), ...]`` (``training.regions.Region``: polygon or mask in level-0
            pixels, class, optional caption).
        output_dir: checkpoint folder to write.
        class_names: class order (default: sorted region labels).
        encoder: patch encoder name.
        hyperparameters: passed to the trainer (epochs, lr, batch_size, alpha, model_size "tiny" | "small" |
            "paper" ...); lr and alpha default to the size preset's (docs/training.md).

    Returns:
        The trainer's result (``TrainResult``) with the checkpoint path; ``result.warnings`` says when the model
        has not learned to classify or to caption (also kept in ``best/training_verdict.json``).
    """
    from .training.region_trainer import train_on_regions

    return train_on_regions(
        regions,
        output_dir=output_dir,
        class_names=class_names,
        encoder=encoder,
        device=device,
        progress=progress,
        cancel=cancel,
        **hyperparameters,
    )


def show(result: SlideResult, viewer: napari.Viewer | None = None, *, per_query: bool = True) -> list[Any]:
    """Add a result's layers to ``viewer`` (default: the current one) and put its class and caption in the
    viewer's text overlay. Layers of an earlier run with the same names are replaced.

    Returns:
        The new layers.
    """
    from .layers import follow_active_layer, overlay_text, result_layers, style_added_layer

    if viewer is None:
        import napari

        viewer = napari.current_viewer()
        if viewer is None:
            raise PathM3Error("no napari viewer is open; pass viewer=...")
    added = []
    for data, kwargs, kind in result_layers(result, per_query=per_query):
        name = kwargs["name"]
        if name in viewer.layers:
            viewer.layers.remove(name)
        added.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
        style_added_layer(added[-1], viewer)
    overlay = text_overlay(viewer)
    overlay.text = overlay_text(result)
    overlay.position = "top_left"  # bottom corners hold notifications and the scale bar
    overlay.visible = True
    follow_active_layer(viewer, overlay)  # the text belongs to this slide: hidden/replaced for another one
    return added


def text_overlay(viewer: Any) -> Any:
    """The viewer's text overlay (``viewer.canvas.overlays.text`` since napari 0.9, ``text_overlay`` before)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    text = getattr(overlays, "text", None)
    return text if text is not None else viewer.text_overlay


# ------------------------------------------------------------------------------------------------ helpers


def _is_viewer(obj: Any) -> bool:
    return hasattr(obj, "layers") and hasattr(obj, "add_image")


def slide_layers(viewer: Any, *, brightfield: bool = False) -> list[Any]:
    """Layers holding a slide opened by napari-pathm3 (``metadata["pathm3_slide"]``).

    Args:
        brightfield: only RGB layers of brightfield slides, the ones the encoders can caption (not the
            channel layers of a fluorescence slide, nor a greyscale one).
    """
    return [
        lay
        for lay in viewer.layers
        if isinstance(getattr(lay, "metadata", None), dict)
        and isinstance(lay.metadata.get("pathm3_slide"), Slide)
        and (not brightfield or (lay.metadata["pathm3_slide"].is_rgb and bool(getattr(lay, "rgb", False))))
    ]


def layer_kind(layer: Any) -> str:
    """``"image"``, ``"shapes"``, ``"labels"``, ... of a napari layer, without napari's private
    ``_type_string`` (plugin widgets get layers behind a proxy that refuses private attributes)."""
    return str(layer.__class__.__name__).lower()


def _slide_from(viewer: Any) -> Slide:
    active = viewer.layers.selection.active
    layers = slide_layers(viewer)
    if active is not None and active in layers:
        return active.metadata["pathm3_slide"]
    if not layers:
        raise SlideReadError("no slide layer in the viewer; open a slide with napari-pathm3 first")
    return layers[0].metadata["pathm3_slide"]


def _scale_of(slide: Any) -> tuple[float, float]:
    mpp = getattr(slide, "mpp_xy", None)
    return (1.0, 1.0) if mpp is None else (float(mpp[1]), float(mpp[0]))


def shapes_layer_polygons(
    layer: Any, *, slide_scale: tuple[float, float], selected_only: bool = True
) -> list[np.ndarray]:
    """A Shapes layer's polygons (its selected shapes, or all when none is selected) as level-0 ``(x, y)``."""
    from .layers import shapes_to_level0

    idx = sorted(layer.selected_data) if selected_only and layer.selected_data else range(len(layer.data))
    data = [layer.data[i] for i in idx]
    return shapes_to_level0(
        data, scale=tuple(layer.scale), translate=tuple(layer.translate), slide_scale=slide_scale
    )


# ------------------------------------------------------------------------------------------------ interchange


def read_regions(path: PathLike, *, object_types: Sequence[str] = ("annotation",)) -> list[Any]:
    """Classified polygons of a QuPath (or our) GeoJSON file as training regions (level-0 pixels).

    Unclassified objects are left out; the result feeds :func:`napari_pathm3.training.regions.bags_from_regions`
    (labels drawn in QuPath train a model here).
    """
    from .io.qupath import read_geojson
    from .training.regions import Region

    return [
        Region(label=a.label, polygon=a.polygon, name=a.name or a.id, caption=None)
        for a in read_geojson(path, object_types=object_types)
        if a.label
    ]


def export_spatialdata(
    result: SlideResult, path: PathLike, *, features: Any = None, include_image: bool = False
) -> Any:
    """Write a result as a SpatialData zarr in wsidata/LazySlide layout (see :mod:`napari_pathm3.exports`)."""
    from .exports import export_spatialdata as write

    return write(result, path, features=features, include_image=include_image)


def export_qupath(result: SlideResult, path: PathLike) -> Any:
    """Write a result as QuPath GeoJSON: measurement-map tiles and classified annotations."""
    from .exports import save_qupath_geojson

    return save_qupath_geojson(result, path)


def export_ome_zarr(result: SlideResult, path: PathLike, *, maps: dict[str, np.ndarray] | None = None) -> Any:
    """Write attention, per-query and any extra per-patch ``maps`` as an OME-Zarr image aligned with the slide."""
    from .exports import export_ome_zarr as write

    return write(result, path, maps=maps)
