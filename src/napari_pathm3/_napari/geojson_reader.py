"""napari reader contribution: QuPath (or our) GeoJSON annotations -> a shapes layer with a ``class`` column.

The shapes carry the classes (``features["class"]``, edge colours from QuPath's class colours), so the Train
widget takes them as labelled regions: labels drawn in QuPath train a model here. GeoJSON holds level-0 pixels;
the layer gets the ``scale`` (µm/px) of the slide open in the viewer, so it lies over it (in pixels when none
is open; the Train widget then still maps the shapes by that slide's scale).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PathM3Error
from ..io.qupath import Annotation, read_geojson

log = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]
SUFFIXES = (".geojson",)
_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def napari_get_geojson_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """The reader for a ``.geojson`` file with polygon objects; ``None`` for anything else."""
    p = Path(path[0] if isinstance(path, list) else path)
    if p.suffix.lower() not in SUFFIXES or not p.is_file():
        return None
    try:
        annotations = read_geojson(p, object_types=None)
    except PathM3Error as err:
        log.info("napari-pathm3 does not read %s: %s", p, err)
        return None
    return lambda _path: [geojson_layer_data(annotations, name=p.stem, scale=_open_slide_scale())]


def _open_slide_scale() -> tuple[float, float] | None:
    """(µm/px y, x) of the slide layer in the current viewer, if one is open."""
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # no napari / no viewer (scripts, tests)
        return None
    for layer in [] if viewer is None else viewer.layers:
        if "pathm3_slide" in getattr(layer, "metadata", {}):
            return float(layer.scale[-2]), float(layer.scale[-1])
    return None


def _rgba(
    color: tuple[int, int, int] | None, label: str | None, palette: dict[str, tuple[int, int, int]]
) -> list[float]:
    if color is None:
        color = palette.setdefault(label or "", _PALETTE[len(palette) % len(_PALETTE)])
    return [c / 255.0 for c in color] + [1.0]


def geojson_layer_data(
    annotations: list[Annotation], *, name: str, scale: tuple[float, float] | None = None
) -> LayerData:
    """A shapes layer-data tuple: polygons ``(y, x)`` in level-0 pixels, ``class``/``name``/``object_type``
    features, class colours as edge colours. Unclassified objects get the class "" (ignored by training)."""
    palette: dict[str, tuple[int, int, int]] = {}
    data = [np.asarray(a.polygon, float)[:, ::-1] for a in annotations]
    kwargs: dict[str, Any] = {
        "name": name,
        "shape_type": "polygon",
        "features": {
            "class": [a.label or "" for a in annotations],
            "name": [a.name for a in annotations],
            "object_type": [a.object_type for a in annotations],
        },
        "edge_color": [_rgba(a.color, a.label, palette) for a in annotations] or "yellow",
        "edge_width": 2,
        "face_color": "transparent",
        "metadata": {"source": "GeoJSON (level-0 pixels)"},
    }
    if scale is not None:
        kwargs["scale"] = scale
        kwargs["metadata"]["slide_scale"] = scale
    return (data, kwargs, "shapes")
