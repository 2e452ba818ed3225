""":class:`~napari_pathm3.inference.SlideResult` -> napari layer-data tuples ``(data, kwargs, layer_type)``.

Plain tuples and dicts: napari is imported only for type checking, so scripts can build the layers without
it, and ``viewer._add_layer_from_data(*t)`` (or :func:`napari_pathm3.api.show`) adds them. Every layer uses
the slide layer's units (``scale`` = µm per level-0 pixel, see :mod:`napari_pathm3._napari.reader`) plus the
``scale``/``translate`` of its raster, so it stays aligned with the slide at every zoom.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .heatmaps import attention_raster, patch_boxes, tissue_raster

if TYPE_CHECKING:
    from napari.types import LayerDataTuple

    from .inference import SlideResult
else:
    LayerDataTuple = tuple

#: Heatmap look on H&E: turbo's blue-green-yellow-red stands apart from eosin pink and haematoxylin
#: purple; half opacity keeps the morphology visible underneath; NaN (no patch) renders transparent.
HEATMAP_STYLE: dict[str, Any] = {"colormap": "turbo", "opacity": 0.5, "blending": "translucent"}
TISSUE_COLOR = (0.0, 0.85, 0.75, 1.0)  # teal: not a stain colour
TOP_K_COLOR = "#00ff66"  # green boxes read on pink and purple alike


def overlay_text(result: SlideResult) -> str:
    """One-line summary for ``viewer.text_overlay``: class, probability and caption."""
    p = result.probabilities.get(result.label, float("nan"))
    text = f"PathM3: {result.label} ({p:.1%})"
    if result.caption:
        text += f"\n{result.caption}"
    return text


def _finite_limits(a: np.ndarray) -> tuple[float, float]:
    v = a[np.isfinite(a)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    return (lo, hi) if hi > lo else (lo, lo + max(abs(lo), 1e-6))


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
    slide_scale = result.slide_scale
    units = ("um", "um") if result.mpp_xy is not None else None
    summary = result.summary()
    meta = {"pathm3": summary, "slide_scale": slide_scale, "slide_path": result.slide_path}
    layers: list[LayerDataTuple] = []

    tissue = tissue_raster(result.tissue)
    scale, translate = tissue.transform(slide_scale)
    colormap = {0: (0, 0, 0, 0), 1: TISSUE_COLOR, None: (0, 0, 0, 0)}
    layers.append((tissue.data, {
        "name": f"{prefix} tissue", "scale": scale, "translate": translate, "opacity": 0.25,
        "colormap": colormap, "visible": False, "metadata": {**meta, "kind": "tissue"}, **_units(units, 2),
    }, "labels"))  # fmt: skip

    heat = attention_raster(result.attention, result.grid)
    scale, translate = heat.transform(slide_scale)
    layers.append((heat.data, {
        "name": f"{prefix} attention", "scale": scale, "translate": translate,
        "contrast_limits": _finite_limits(heat.data), "interpolation2d": "nearest",
        "metadata": {**meta, "kind": "attention"}, **HEATMAP_STYLE, **_units(units, 2),
    }, "image"))  # fmt: skip

    if per_query and result.query_attention.size:
        stack = attention_raster(result.query_attention, result.grid)
        scale, translate = stack.transform(slide_scale)
        layers.append((stack.data, {
            "name": f"{prefix} attention per query", "scale": scale, "translate": translate,
            # every query's attention sums to 1 over the patches, so one range fits the whole stack
            "contrast_limits": _finite_limits(stack.data), "interpolation2d": "nearest",
            "axis_labels": ("query", "y", "x"), "visible": False,
            "metadata": {**meta, "kind": "query_attention"}, **HEATMAP_STYLE, **_units(units, 3),
        }, "image"))  # fmt: skip

    boxes = patch_boxes(result.grid, result.top_indices)
    edge_width = max(1.0, 0.04 * float(result.grid.size_level0))
    features = {
        "rank": np.arange(1, len(result.top_indices) + 1, dtype=np.int64),
        "attention": np.asarray(result.top_scores, dtype=np.float64),
        "index": np.asarray(result.top_indices, dtype=np.int64),
    }
    layers.append((list(boxes), {
        "name": f"{prefix} top patches", "shape_type": "rectangle", "scale": slide_scale,
        "edge_color": TOP_K_COLOR, "face_color": "transparent", "edge_width": edge_width,
        "features": features,
        # rank only: neighbouring boxes' labels would overlap; the attention is in the features table
        "text": {"string": "#{rank}", "color": TOP_K_COLOR, "size": 9, "anchor": "upper_left"},
        "metadata": {**meta, "kind": "top_patches"}, **_units(units, 2),
    }, "shapes"))  # fmt: skip
    return layers


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
