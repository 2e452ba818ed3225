"""Polygons <-> GeoJSON FeatureCollections in level-0 pixel coordinates (what QuPath imports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


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
            props["classification"] = {"name": str(props["class"])}
        features.append(
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props}
        )
    return {"type": "FeatureCollection", "features": features}


def geojson_to_polygons(data: dict[str, Any]) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Inverse of :func:`polygons_to_geojson` (outer rings of Polygon and MultiPolygon features)."""
    polys, props = [], []
    feats = data.get("features", [data] if data.get("type") == "Feature" else [])
    for feat in feats:
        geom = feat.get("geometry") or {}
        rings = {"Polygon": [geom.get("coordinates", [[]])], "MultiPolygon": geom.get("coordinates", [])}.get(
            geom.get("type"), []
        )
        for poly in rings:
            ring = np.asarray(poly[0], dtype=float)
            if len(ring) >= 2 and np.allclose(ring[0], ring[-1]):
                ring = ring[:-1]
            polys.append(ring)
            props.append(dict(feat.get("properties") or {}))
    return polys, props
