"""Polygons <-> GeoJSON FeatureCollections in level-0 pixel coordinates (what QuPath imports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .qupath import classification, object_id

#: QuPath needs a colour per class: a fixed palette indexed by a stable hash of the name
_PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def class_color(name: str) -> tuple[int, int, int]:
    """A stable colour for a class name (the same in every file and run)."""
    import zlib

    return _PALETTE[zlib.crc32(name.encode()) % len(_PALETTE)]


def polygons_to_geojson(
    polygons: Sequence[np.ndarray], properties: Sequence[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``polygons``: ``(k, 2)`` arrays of ``(x, y)`` level-0 pixels. Rings are closed as GeoJSON requires."""
    features = []
    for i, poly in enumerate(polygons):
        ring = np.asarray(poly, dtype=float).reshape(-1, 2).tolist()
        if ring and ring[0] != ring[-1]:
            ring.append(ring[0])
        props = dict(properties[i]) if properties is not None else {}
        props.setdefault("objectType", "annotation")
        if "class" in props and "classification" not in props:
            props["classification"] = classification(str(props["class"]), class_color(str(props["class"])))
        features.append(
            {
                "type": "Feature",
                "id": object_id("polygon", i, ring),  # QuPath ids: UUID strings (stable for the same shapes)
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "features": features}


def geojson_to_polygons(data: dict[str, Any]) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Inverse of :func:`polygons_to_geojson` (outer rings of Polygon and MultiPolygon features)."""
    polys, props = [], []
    feats = data.get("features", [data] if data.get("type") == "Feature" else [])
    for feat in feats:
        geom = feat.get("geometry") or {}
        rings = {"Polygon": [geom.get("coordinates", [[]])], "MultiPolygon": geom.get("coordinates", [])}.get(
            str(geom.get("type")), []
        )
        for poly in rings:
            ring = np.asarray(poly[0], dtype=float)
            if len(ring) >= 2 and np.allclose(ring[0], ring[-1]):
                ring = ring[:-1]
            polys.append(ring)
            props.append(dict(feat.get("properties") or {}))
    return polys, props
