"""Polygons <-> GeoJSON FeatureCollections in level-0 pixel coordinates (what QuPath imports)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._types import PathLike
from ..errors import NonFiniteError


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


def json_text(data: Any, *, what: str = "result") -> str:
    """Strict JSON text (``indent=2``): NaN and Infinity, which are not JSON, raise
    :class:`~napari_pathm3.errors.NonFiniteError` naming the first such value instead of being written."""
    try:
        return json.dumps(data, indent=2, default=_json_default, allow_nan=False)
    except ValueError as err:
        where = _first_non_finite(json.loads(json.dumps(data, default=_json_default)), "")
        raise NonFiniteError(
            f"{what} not written: {where or 'a value'} is not a finite number (NaN/Inf is not valid JSON); "
            "the model or its features hold NaN/Inf: check the checkpoint and the feature bag"
        ) from err


def finite_or_null(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, tuples, numbers, numpy values) with NaN/Inf replaced by ``None``: for
    summaries where "undefined" is a legitimate value (a metric without a validation set), so the JSON stays
    valid."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return finite_or_null(obj.tolist())
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def _first_non_finite(obj: Any, at: str) -> str | None:
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{at or 'the value'} = {obj}"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        found = _first_non_finite(v, f"{at}[{k!r}]" if at else repr(k))
        if found:
            return found
    return None


def write_json_atomic(path: PathLike, data: Any) -> Path:
    """Write strict JSON (see :func:`json_text`) through a temporary file and ``os.replace`` so readers never
    see half a file."""
    path = Path(path)
    text = json_text(data, what=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
