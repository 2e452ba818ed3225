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

if TYPE_CHECKING:
    import napari

    from .result import SlideResult

__all__ = [
    "is_shapes_layer",
    "is_viewer",
    "layer_kind",
    "shapes_layer_polygons",
    "show",
    "slide_from_viewer",
    "slide_layers",
    "slide_scale",
    "text_overlay",
]


def is_viewer(obj: Any) -> bool:
    return hasattr(obj, "layers") and hasattr(obj, "add_image")


def is_shapes_layer(obj: Any) -> bool:
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
    from .layers import shapes_to_level0

    idx = sorted(layer.selected_data) if selected_only and layer.selected_data else range(len(layer.data))
    data = [layer.data[i] for i in idx]
    return shapes_to_level0(
        data, scale=tuple(layer.scale), translate=tuple(layer.translate), slide_scale=slide_scale
    )


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


def text_overlay(viewer: Any) -> Any:
    """The viewer's text overlay (``viewer.canvas.overlays.text`` since napari 0.9, ``text_overlay`` before)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    text = getattr(overlays, "text", None)
    return text if text is not None else viewer.text_overlay
