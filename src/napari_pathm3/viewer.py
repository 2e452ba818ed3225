"""The viewer side of the API, the inverse of :mod:`napari_pathm3.layers`: which slide and which region a
napari viewer holds (our slide layers, a Shapes layer's polygons in level-0 pixels), and :func:`show`, which
adds a result's layers and overlay text to a viewer.

napari only, no Qt: napari is imported in :func:`show` alone (for ``current_viewer``); everything else reads
the duck-typed viewer and layers, so :mod:`napari_pathm3.api` stays free of napari at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import PathM3Error, SlideReadError
from .io.slide import Slide
from .layers import (
    OVERLAY_WIDTH,
    label_colorbar,
    match_slide_units,
    overlay_text,
    shapes_to_level0,
    sync_overlay,
)
from .word_layers import MapRaster, map_label, map_layer, switch_map

if TYPE_CHECKING:
    import napari

    from .result import SlideResult

__all__ = [
    "OVERLAY_WIDTH",
    "MapRaster",
    "label_colorbar",
    "map_label",
    "map_layer",
    "match_slide_units",
    "overlay_text",
    "switch_map",
    "sync_overlay",
    "is_shapes_layer",
    "is_viewer",
    "layer_kind",
    "layer_mpp_xy",
    "layer_scale",
    "regions_from_layer",
    "shapes_layer_polygons",
    "show",
    "show_phrase_maps",
    "slide_from_viewer",
    "slide_layers",
    "slide_scale",
    "text_overlay",
]


def is_viewer(obj: object) -> bool:
    return hasattr(obj, "layers") and hasattr(obj, "add_image")


def is_shapes_layer(obj: object) -> bool:
    return hasattr(obj, "data") and hasattr(obj, "selected_data")


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


def layer_mpp_xy(layer: Any) -> tuple[float, float] | None:
    """µm/px ``(x, y)`` our reader recorded with a slide layer (``None``: opened in pixels)."""
    xy = (layer.metadata or {}).get("mpp_xy")
    return None if not xy else (float(xy[0]), float(xy[1]))


def layer_scale(layer: Any) -> tuple[float, float]:
    """The ``(y, x)`` world scale of a layer's last two axes."""
    s = tuple(float(v) for v in layer.scale[-2:])
    return s[0], s[1]


def slide_from_viewer(viewer: Any) -> Slide:
    """The selected slide layer's slide, else the first slide layer's."""
    active = viewer.layers.selection.active
    layers = slide_layers(viewer)
    if active is not None and active in layers:
        return active.metadata["pathm3_slide"]
    if not layers:
        raise SlideReadError("no slide layer in the viewer; open a slide with napari-pathm3 first")
    return layers[0].metadata["pathm3_slide"]


def slide_scale(slide: Any) -> tuple[float, float]:
    """napari ``scale`` (y, x) of a slide's layer: µm per level-0 pixel, or (1, 1) without µm/px."""
    mpp = getattr(slide, "mpp_xy", None)
    return (1.0, 1.0) if mpp is None else (float(mpp[1]), float(mpp[0]))


def shapes_layer_polygons(
    layer: Any, *, slide_scale: tuple[float, float], selected_only: bool = True
) -> list[np.ndarray]:
    """A Shapes layer's polygons (its selected shapes, or all when none is selected) as level-0 ``(x, y)``."""

    idx = sorted(layer.selected_data) if selected_only and layer.selected_data else range(len(layer.data))
    data = [layer.data[i] for i in idx]
    return shapes_to_level0(
        data, scale=tuple(layer.scale), translate=tuple(layer.translate), slide_scale=slide_scale
    )


def _caption_for(label: str, caption: Any) -> str:
    text = (
        "" if caption is None or (isinstance(caption, float) and np.isnan(caption)) else str(caption).strip()
    )
    return text or f"{label}."


def _valid_label(value: Any) -> bool:
    return (
        value is not None and not (isinstance(value, float) and np.isnan(value)) and str(value).strip() != ""
    )


def regions_from_layer(layer: Any, slide_scale: tuple[float, float]) -> list[Any]:
    """Training regions of one shapes or labels layer: its ``features`` column ``class`` names each shape's
    (or label id's) class, an optional ``caption`` column its caption (default "<class>."); a labels layer's
    row with ``index`` = label id (or row number = label id) gives that label's class."""
    from .training.regions import Region, regions_from_labels

    feats = layer.features
    if "class" not in getattr(feats, "columns", ()):
        raise PathM3Error(
            f"layer {layer.name!r} has no 'class' column in its features; add one, e.g. "
            f"viewer.layers[{layer.name!r}].features = {{'class': [...], 'caption': [...]}}"
        )
    captions = feats["caption"].tolist() if "caption" in feats.columns else [None] * len(feats)
    classes = feats["class"].tolist()
    if layer_kind(layer) == "shapes":
        polys = shapes_to_level0(
            list(layer.data),
            scale=tuple(layer.scale),
            translate=tuple(layer.translate),
            slide_scale=slide_scale,
        )
        out = []
        for i, (poly, cls, cap) in enumerate(zip(polys, classes, captions, strict=False)):
            if _valid_label(cls) and len(poly) >= 3:
                out.append(
                    Region(
                        label=str(cls),
                        polygon=poly,
                        caption=_caption_for(str(cls), cap),
                        name=f"{layer.name}#{i}",
                    )
                )
        return out
    if layer_kind(layer) == "labels":
        ids = feats["index"].tolist() if "index" in feats.columns else list(range(len(feats)))
        spec = {
            int(v): (str(c), _caption_for(str(c), cap))
            for v, c, cap in zip(ids, classes, captions, strict=False)
            if int(v) != 0 and _valid_label(c)
        }
        data = np.asarray(layer.data[0] if layer.multiscale else layer.data)
        s = np.asarray(layer.scale[-2:], float)
        t = np.asarray(layer.translate[-2:], float)
        ss = np.asarray(slide_scale, float)
        ds = s / ss
        # label pixel k spans world [t + (k - 1/2) s, ...]; level-0 pixel p spans world [(p - 1/2) ss, ...]
        origin = (t - 0.5 * s) / ss + 0.5
        return regions_from_labels(
            data, spec, downsample=float(ds.mean()), origin=(float(origin[1]), float(origin[0]))
        )
    raise PathM3Error(f"layer {layer.name!r} is a {layer_kind(layer)} layer; use shapes or labels")


def show(
    result: SlideResult,
    viewer: napari.Viewer | None = None,
    *,
    per_query: bool = True,
    units: tuple[float, float] | None = None,
) -> list[Any]:
    """Add a result's layers to ``viewer`` (default: the current one) and put its class and caption in the
    viewer's text overlay. Layers of an earlier run with the same names are replaced.

    Args:
        units: µm/px ``(x, y)`` of the slide layer the result is shown over, when it differs from the
            result's (a slide opened without µm/px stays in pixels although the run used an entered value).

    Returns:
        The new layers.
    """
    from .layers import follow_active_layer, overlay_text, result_layers, style_added_layer

    if viewer is None:
        import napari

        viewer = napari.current_viewer()
        if viewer is None:
            raise PathM3Error("no napari viewer is open; pass viewer=...")
    if units != result.mpp_xy:
        result = result.in_units(units)
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


def show_phrase_maps(result: SlideResult, viewer: Any) -> list[Any]:
    """The result's phrase maps (a zero-shot run's class maps) as image layers, replacing this slide's
    earlier ones."""
    from .layer_kinds import ResultLayerKind, is_result_layer
    from .word_layers import phrase_map_layers

    for lay in [lay for lay in viewer.layers if is_result_layer(lay, ResultLayerKind.PHRASE_MAP)]:
        if (lay.metadata or {}).get("slide_path") == result.slide_path:
            viewer.layers.remove(lay)
    return [viewer.add_image(data, **kwargs) for data, kwargs, _ in phrase_map_layers(result)]


def text_overlay(viewer: Any) -> Any:
    """The viewer's text overlay (``viewer.canvas.overlays.text`` since napari 0.9, ``text_overlay`` before)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    text = getattr(overlays, "text", None)
    return text if text is not None else viewer.text_overlay
