"""napari writer contribution: shapes layers -> GeoJSON in level-0 pixels (QuPath opens it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io.geojson import polygons_to_geojson
from ..jsonfile import write_json_atomic


def shapes_to_level0_polygons(data: list[np.ndarray], meta: dict[str, Any]) -> list[np.ndarray]:
    """napari shapes vertices ``(y, x)`` in layer data coordinates -> ``(x, y)`` level-0 pixels.

    Our layers share the slide's ``scale`` (µm per level-0 pixel), so data coordinates are level-0 pixels;
    a layer drawn in world units (scale 1) is converted with the slide mpp kept in its metadata.
    """
    scale = np.asarray(meta.get("scale", (1.0, 1.0)), dtype=float)[-2:]
    translate = np.asarray(meta.get("translate", (0.0, 0.0)), dtype=float)[-2:]
    slide_scale = np.asarray((meta.get("metadata") or {}).get("slide_scale", scale), dtype=float)[-2:]
    out = []
    for verts in data:
        world = np.asarray(verts, dtype=float)[:, -2:] * scale + translate
        out.append((world / slide_scale)[:, ::-1])
    return out


def write_shapes_geojson(path: str, data: list[np.ndarray], meta: dict[str, Any]) -> list[str]:
    features = meta.get("features")
    props: list[dict[str, Any]] = [{} for _ in data]
    if features is not None and len(features):
        records = features.to_dict("records") if hasattr(features, "to_dict") else list(features)
        props = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in records]
    write_json_atomic(path, polygons_to_geojson(shapes_to_level0_polygons(data, meta), props))
    return [path]
