""":class:`~napari_pathm3.inference.SlideResult` -> napari layer-data tuples ``(data, kwargs, layer_type)``.

Plain tuples and dicts: napari is imported only for type checking, so scripts can build the layers without
it, and ``viewer._add_layer_from_data(*t)`` (or :func:`napari_pathm3.api.show`) adds them. Every layer uses
the slide layer's units (``scale`` = µm per level-0 pixel, see :mod:`napari_pathm3._napari.reader`) plus the
``scale``/``translate`` of its raster, so it stays aligned with the slide at every zoom.
"""

from __future__ import annotations

import textwrap
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from .heatmaps import (
    ATTENTION_SCALE_LABEL,
    RELATIVE_LOG2_RANGE,
    attention_log2,
    attention_raster,
    attention_spread,
    patch_boxes,
    spread_text,
    tissue_raster,
)
from .layer_kinds import KIND_KEY, ResultLayerKind, result_layer_kind

if TYPE_CHECKING:
    from napari.types import LayerDataTuple

    from .result import SlideResult
else:
    LayerDataTuple = tuple

#: Heatmap look on H&E: turbo's blue-green-yellow-red stands apart from eosin pink and haematoxylin
#: purple; half opacity keeps the morphology visible underneath; NaN (no patch) renders transparent.
HEATMAP_STYLE: dict[str, Any] = {"colormap": "turbo", "opacity": 0.5, "blending": "translucent"}
TISSUE_COLOR = (0.0, 0.85, 0.75, 1.0)  # teal: not a stain colour
TOP_K_TEXT_COLOR = "#ff00ff"
TOP_K_COLOR = "#ff00ff"  # magenta: in no turbo heatmap colour and no H&E stain shade


#: characters per line of the canvas text overlay (napari does not wrap it; long captions ran off the canvas)
OVERLAY_WIDTH = 40  # characters: the canvas beside a docked widget is narrow


def overlay_text(result: SlideResult, *, width: int = OVERLAY_WIDTH) -> str:
    """Summary for the viewer's text overlay: class, probability, caption (wrapped to ``width`` characters)
    and the result's warnings (e.g. a model that has not learned to caption)."""
    p = result.probabilities.get(result.label, float("nan"))
    lines = ["DEMO MODEL - NOT DIAGNOSTIC"] if is_demo_result(result) else []
    lines += textwrap.wrap(f"PathM3 ({result.slide_name}): {result.label} ({p:.1%})", width)
    accuracy = result.accuracy_text() if hasattr(result, "accuracy_text") else ""
    if accuracy:  # a probability means little without how often the model was right
        lines += textwrap.wrap(accuracy, width)
    warnings = tuple(getattr(result, "warnings", ()) or ())
    lines += [ln for w in warnings for ln in textwrap.wrap(f"Warning: {w}", width)]
    if result.caption and not getattr(result, "caption_withheld", False):
        lines += textwrap.wrap(result.caption, width)
        agree = getattr(result, "caption_class_agreement", None) or {}
        if agree.get("agrees") is False:
            lines += textwrap.wrap(f"Warning: {agree['note']}", width)
    return "\n".join(lines)


def is_demo_result(result: SlideResult) -> bool:
    """A result of the demo model (its checkpoint says so)."""
    return bool(getattr(result, "demo", False))


def _log2_attention(values: np.ndarray) -> np.ndarray:
    """log2 attention relative to uniform, zero attention floored one step under the colour range."""
    v = attention_log2(values)
    return np.where(np.isneginf(v), RELATIVE_LOG2_RANGE[0] - 1.0, v)


def result_layers(
    result: SlideResult, *, name: str | None = None, per_query: bool = True
) -> list[LayerDataTuple]:
    """Layers of a captioning result: tissue mask (labels), attention heatmap (image), per-query attention
    stack ``(q, H, W)`` (image, browsed with the dimension slider) and the top-k patches (shapes).

    Args:
        result: the output of :func:`~napari_pathm3.inference.caption_slide`.
        name: layer-name prefix (default: the slide's file name without suffix).
        per_query: include the per-query attention stack.
    """
    prefix = name if name is not None else result.slide_name
    units = ("um", "um") if result.mpp_xy is not None else None
    meta = {
        "pathm3": result.summary(),
        "slide_scale": result.slide_scale,
        "slide_path": result.slide_path,
        "pathm3_overlay": overlay_text(result),
    }
    layers = [_tissue_layer(result, prefix, meta, units)]
    # one fixed scale (log2 of attention relative to uniform 1/N) for every heatmap: near-uniform attention
    # stays one colour instead of being stretched into invented hotspots (see napari_pathm3.heatmaps)
    meta["scale"] = ATTENTION_SCALE_LABEL
    meta["spread"] = spread_text(attention_spread(result.attention))
    layers.append(_attention_layer(result, prefix, meta, units))
    if per_query and result.query_attention.size:
        layers.append(_query_attention_layer(result, prefix, meta, units))
    layers.append(_top_patches_layer(result, prefix, meta, units))
    return layers


def _tissue_layer(result: SlideResult, prefix: str, meta: dict, units: tuple | None) -> LayerDataTuple:
    tissue = tissue_raster(result.tissue)
    scale, translate = tissue.transform(result.slide_scale)
    colormap = {0: (0, 0, 0, 0), 1: TISSUE_COLOR, None: (0, 0, 0, 0)}
    kwargs = {
        "name": f"{prefix} tissue",
        "scale": scale,
        "translate": translate,
        "opacity": 0.25,
        "colormap": colormap,
        "visible": False,
        "metadata": {**meta, KIND_KEY: ResultLayerKind.TISSUE.value},
        **_units(units, 2),
    }
    return tissue.data, kwargs, "labels"


def _attention_layer(result: SlideResult, prefix: str, meta: dict, units: tuple | None) -> LayerDataTuple:
    heat = attention_raster(_log2_attention(result.attention), result.grid)
    scale, translate = heat.transform(result.slide_scale)
    kwargs = {
        "name": f"{prefix} attention",
        "scale": scale,
        "translate": translate,
        "contrast_limits": RELATIVE_LOG2_RANGE,
        "interpolation2d": "nearest",
        "metadata": {**meta, KIND_KEY: ResultLayerKind.ATTENTION.value},
        **HEATMAP_STYLE,
        **_units(units, 2),
    }
    return heat.data, kwargs, "image"


def _query_attention_layer(
    result: SlideResult, prefix: str, meta: dict, units: tuple | None
) -> LayerDataTuple:
    stack = attention_raster(_log2_attention(result.query_attention), result.grid)
    scale, translate = stack.transform(result.slide_scale)
    kwargs = {
        "name": f"{prefix} attention per query",
        "scale": scale,
        "translate": translate,
        # each query's attention is compared with its own uniform level: one fixed range for the stack
        "contrast_limits": RELATIVE_LOG2_RANGE,
        "interpolation2d": "nearest",
        "axis_labels": ("query", "y", "x"),
        "visible": False,
        "metadata": {**meta, KIND_KEY: ResultLayerKind.QUERY_ATTENTION.value},
        **HEATMAP_STYLE,
        **_units(units, 3),
    }
    return stack.data, kwargs, "image"


def _top_patches_layer(result: SlideResult, prefix: str, meta: dict, units: tuple | None) -> LayerDataTuple:
    features = {
        "rank": np.arange(1, len(result.top_indices) + 1, dtype=np.int64),
        "attention": np.asarray(result.top_scores, dtype=np.float64),
        "index": np.asarray(result.top_indices, dtype=np.int64),
    }
    kwargs = {
        "name": f"{prefix} top patches",
        "shape_type": "rectangle",
        "scale": result.slide_scale,
        "edge_color": TOP_K_COLOR,
        "face_color": "transparent",
        "edge_width": max(1.0, 0.04 * float(result.grid.size_level0)),
        "features": features,
        # rank only: neighbouring boxes' labels would overlap; the attention is in the features table.
        # The rank alone, centred in its own box (a label above a box sat on the neighbouring box; "#6"
        # overflowed the demo's small boxes into the next one), 12 pt, fully opaque.
        "text": {"string": "{rank}", "color": TOP_K_TEXT_COLOR, "size": 12, "anchor": "center"},
        "opacity": 1.0,
        "metadata": {**meta, KIND_KEY: ResultLayerKind.TOP_PATCHES.value},
        **_units(units, 2),
    }
    return list(patch_boxes(result.grid, result.top_indices)), kwargs, "shapes"


def style_added_layer(layer: Any, viewer: Any | None = None) -> None:
    """Finish a layer added from :func:`result_layers`: the aggregate heatmap shows its colour bar (napari
    >= 0.5.5), labelled ``1/8x .. 8x`` and titled when ``viewer`` is given (:func:`label_colorbar`); the
    per-query stack shows its query slider only while it is visible."""
    kind = result_layer_kind(layer)
    heatmaps = (ResultLayerKind.ATTENTION, ResultLayerKind.QUERY_ATTENTION)
    colorbar = getattr(layer, "colorbar", None)
    if colorbar is not None and kind in heatmaps:
        _bar_out_of_the_overlay(colorbar)
    if colorbar is not None and kind is ResultLayerKind.ATTENTION:
        colorbar.visible = True
    if kind is ResultLayerKind.QUERY_ATTENTION:
        _follow_query_visibility(layer)
    if viewer is not None and kind in heatmaps and colorbar is not None:
        # napari makes a bar's visual when it is first shown (the per-query stack's is hidden at first)
        if not label_colorbar(viewer, layer):
            colorbar.events.visible.connect(lambda _e=None: label_colorbar(viewer, layer))


# ------------------------------------------------------------------------------------------ colour bar
#: the colour bar's title (drawn along the bar): its ticks read as multiples of uniform attention
COLORBAR_TITLE = "attention / uniform"


def ratio_label(log2_value: float) -> str:
    """A colour-bar tick (log2 of attention relative to uniform) as the multiple it stands for: ``-3`` ->
    ``1/8x``, ``0`` -> ``1x``, ``2`` -> ``4x``; ticks between powers of two get two significant digits."""
    if float(log2_value).is_integer():
        k = int(log2_value)
        return f"{2**k:g}x" if k >= 0 else f"1/{2**-k:g}x"
    return f"{2.0**log2_value:.2g}x"


def _bar_out_of_the_overlay(colorbar: Any) -> None:
    """The colour bar at the bottom right: the result's text overlay fills the top left and, on a narrow
    canvas, runs under a top-right bar."""
    try:
        colorbar.position = "bottom_right"
    except (AttributeError, ValueError):  # a napari without positioned canvas overlays
        pass


def label_colorbar(viewer: Any, layer: Any) -> bool:
    """Relabel napari's colour bar of a heatmap layer ``1/8x .. 8x`` with a title along the bar.

    napari (0.9) labels the bar with the layer's values (log2, -3..3) and has no option for tick labels, so
    this wraps the tick formatter of the bar's vispy axis (private napari/vispy objects, reached without
    importing Qt). Returns ``False`` when they are not there (no Qt window, another napari version): the
    result text and the layer's metadata still state the scale.
    """
    try:
        visual = viewer.window._qt_viewer.canvas._layer_overlay_to_visual[layer][layer.colorbar]
        visual = visual[0] if isinstance(visual, list) else visual
        axis = visual.node.ticks
        ticker = axis.ticker
        original = ticker._get_tick_frac_labels
        measure = visual.node.set_ticks_and_get_text_size
    except (AttributeError, KeyError, IndexError, TypeError):
        return False
    if getattr(original, "pathm3", False):
        return True

    def labelled() -> tuple[Any, Any, list[str]]:
        major, minor, labels = original()
        return major, minor, [ratio_label(float(t)) for t in labels]

    def measured(*args: Any, **kwargs: Any) -> tuple[float, float]:
        # the title runs along the bar beyond the tick labels: napari sizes the overlay's box (and its
        # place in the corner) from the tick labels only, so make room for one more line of text
        width, line = measure(*args, **kwargs)
        axis.axis_font_size = axis.tick_font_size
        axis.axis_label_margin = width + 0.6 * line
        return width + 1.4 * line, line

    labelled.pathm3 = True  # type: ignore[attr-defined]
    ticker._get_tick_frac_labels = labelled
    visual.node.set_ticks_and_get_text_size = measured
    axis.axis_label = COLORBAR_TITLE
    visual._on_ticks_change()
    return True


# ------------------------------------------------------------------------------------------ query slider
def _follow_query_visibility(layer: Any) -> None:
    """napari shows a dimension slider for every axis with more than one step, even for hidden layers: keep
    the per-query stack in the layer's metadata and give the layer all its queries only while it is shown
    (hidden: a single query, so no slider clutters the viewer)."""
    meta = layer.metadata
    if "query_stack" not in meta:
        meta["query_stack"] = np.asarray(layer.data)
    layer.events.visible.connect(lambda _e=None: sync_query_stack(layer))
    sync_query_stack(layer)


def sync_query_stack(layer: Any) -> None:
    """All queries while ``layer`` is visible (the slider browses them), the first one while hidden."""
    stack = layer.metadata["query_stack"]
    want = stack if layer.visible else stack[:1]
    if layer.data.shape != want.shape:
        layer.data = want
        # napari does not refresh a hidden layer's cached extent (the slider's range) on new data; the
        # scale setter clears it
        layer.scale = layer.scale


# ------------------------------------------------------------------------------------------ text overlay
_connected: weakref.WeakSet[Any] = weakref.WeakSet()


def _layer_path(layer: Any) -> str | None:
    meta = getattr(layer, "metadata", None) or {}
    if "slide_path" in meta:
        return str(meta["slide_path"])
    slide = meta.get("pathm3_slide")
    path = getattr(slide, "path", None)
    return str(path) if path is not None else None


def overlay_for_layer(viewer: Any, layer: Any) -> str | None:
    """The overlay text that belongs to ``layer``: its own result's text, the latest result of its slide when
    it is a slide layer, ``""`` for a slide without a result, ``None`` for layers unrelated to slides."""
    if layer is None:
        return None
    meta = getattr(layer, "metadata", None) or {}
    if "pathm3_overlay" in meta:
        return str(meta["pathm3_overlay"])
    path = _layer_path(layer)
    if path is None:
        return None
    for other in reversed(list(viewer.layers)):  # the newest result layers of that slide
        m = getattr(other, "metadata", None) or {}
        if "pathm3_overlay" in m and str(m.get("slide_path")) == path:
            return str(m["pathm3_overlay"])
    return ""


def sync_overlay(viewer: Any, overlay: Any) -> None:
    """Show the text of the active layer's slide; hide the overlay when a slide without a result is active."""
    text = overlay_for_layer(viewer, viewer.layers.selection.active)
    if text is None:  # an unrelated layer (user shapes, points): leave the overlay as it is
        return
    overlay.text = text
    overlay.visible = bool(text)


def follow_active_layer(viewer: Any, overlay: Any) -> None:
    """Keep ``overlay`` on the active layer's slide (connected once per viewer): a caption never stays over
    another slide."""
    if viewer in _connected:
        return
    _connected.add(viewer)
    viewer.layers.selection.events.active.connect(lambda _e=None: sync_overlay(viewer, overlay))
    viewer.layers.events.removed.connect(lambda _e=None: sync_overlay(viewer, overlay))


def match_slide_units(viewer: Any, layer: Any) -> bool:
    """Give a plain layer the slide layers' unit (napari warns "Inconsistent units across layers" at every
    layer change while one layer is in pixels and the slides are in µm, and then drops units).

    Only layers drawn in world coordinates (scale 1, every axis in pixels; e.g. a new shapes layer for a
    region) are changed: their coordinates already are the slides' µm. Returns whether it changed ``layer``.
    """
    units = {
        tuple(str(u) for u in lay.units)
        for lay in viewer.layers
        if "pathm3_slide" in (getattr(lay, "metadata", None) or {})
    }
    if len(units) != 1:
        return False
    (slide_units,) = units
    own = tuple(str(u) for u in getattr(layer, "units", ()))
    if not own or own == slide_units[-len(own) :] or set(own) != {"pixel"}:
        return False
    if any(float(s) != 1.0 for s in layer.scale) or len(set(slide_units)) != 1:
        return False
    layer.units = (slide_units[0],) * len(own)
    extent = getattr(getattr(layer, "events", None), "extent", None)
    if (
        extent is not None
    ):  # napari 0.9 caches the layer list's extent (and units) until a layer's extent event
        extent()
    return True


def _units(units: tuple[str, str] | None, ndim: int) -> dict[str, Any]:
    if units is None:
        return {}
    # napari wants one unit for all axes of all layers (else it warns and drops units); the query axis
    # has scale 1, so calling its steps µm changes nothing on screen
    return {"units": (units[0],) * (ndim - 2) + units}


def shapes_to_level0(
    data: list[np.ndarray],
    *,
    scale: tuple[float, ...],
    translate: tuple[float, ...],
    slide_scale: tuple[float, float],
) -> list[np.ndarray]:
    """napari shape vertices ``(y, x)`` in a layer's data space -> ``(x, y)`` level-0 pixels of the slide.

    World coordinates are ``data * scale + translate``; the slide layer maps level-0 pixel ``p`` to world
    ``p * slide_scale``, so a shapes layer drawn in world units (scale 1) and one sharing the slide's scale both
    convert correctly.
    """
    s = np.asarray(scale, dtype=float)[-2:]
    t = np.asarray(translate, dtype=float)[-2:]
    ss = np.asarray(slide_scale, dtype=float)[-2:]
    return [((np.asarray(v, dtype=float)[:, -2:] * s + t) / ss)[:, ::-1] for v in data]
