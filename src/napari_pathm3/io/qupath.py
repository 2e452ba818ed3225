"""QuPath GeoJSON, both ways: measurement-map tiles and classified annotations out, annotations in.

QuPath's rules (0.4+): coordinates are level-0 pixels, no CRS; ``properties.objectType`` is one of
``annotation`` / ``detection`` / ``tile`` / ``cell``; ``classification`` is an object ``{"name", "color"}``
(``color`` = ``[r, g, b]``); ``measurements`` is a flat ``{name: number}`` object (tiles that carry them drive
*Measure > Show measurement maps*); ids are UUID strings. QuPath writes either a FeatureCollection or a bare
list of Features; both are read. Older files (and QuPath < 0.4) give ``classification`` as a plain string.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from .._types import PathLike
from ..errors import PathM3Error

OBJECT_TYPES = ("annotation", "detection", "tile", "cell")
#: a stable namespace: the same export gives the same ids (byte-reproducible files)
_NS = uuid.UUID("8b0e7c1e-2f0a-4c55-9d4a-6a1c3f7e2b10")


@dataclass(frozen=True, kw_only=True)
class Annotation:
    """One object of a QuPath GeoJSON file.

    Attributes:
        polygon: ``(k, 2)`` outer-ring vertices ``(x, y)`` in level-0 pixels (not closed).
        label: class name (``classification.name``), ``None`` when unclassified.
        color: ``(r, g, b)`` of the class, when given.
        object_type: ``annotation`` / ``detection`` / ``tile`` / ``cell``.
        name, id: the object's name and id ("" when absent).
        measurements: ``{name: value}``.
    """

    polygon: np.ndarray
    label: str | None = None
    color: tuple[int, int, int] | None = None
    object_type: str = "annotation"
    name: str = ""
    id: str = ""
    measurements: dict[str, float] = field(default_factory=dict)


def object_id(*parts: object) -> str:
    """A UUID string derived from ``parts`` (stable across runs)."""
    return str(uuid.uuid5(_NS, "\x1f".join(map(str, parts))))


def classification(name: str, color: Sequence[int] | None = None) -> dict[str, Any]:
    """QuPath's classification object ``{"name", "color": [r, g, b]}``."""
    out: dict[str, Any] = {"name": str(name)}
    if color is not None:
        out["color"] = [int(c) for c in color][:3]
    return out


def _ring(poly: np.ndarray) -> list[list[float]]:
    ring = np.asarray(poly, dtype=float).reshape(-1, 2).tolist()
    if ring and ring[0] != ring[-1]:
        ring.append(ring[0])
    return ring


def _finite(measurements: Mapping[str, Any]) -> dict[str, float]:
    """JSON has no NaN/Inf: QuPath shows a missing measurement as NaN, so non-finite values are left out."""
    out = {}
    for k, v in measurements.items():
        f = float(v)
        if math.isfinite(f):
            out[str(k)] = f
    return out


def feature(
    polygon: np.ndarray,
    *,
    object_type: str,
    id: str,
    name: str | None = None,
    label: str | None = None,
    color: Sequence[int] | None = None,
    measurements: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One QuPath GeoJSON Feature (a Polygon in level-0 pixels)."""
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {OBJECT_TYPES}, got {object_type!r}")
    props: dict[str, Any] = {"objectType": object_type}
    if name:
        props["name"] = name
    if label is not None:
        props["classification"] = classification(label, color)
    if measurements:
        props["measurements"] = _finite(measurements)
    props.update(extra or {})
    return {
        "type": "Feature",
        "id": id,
        "geometry": {"type": "Polygon", "coordinates": [_ring(polygon)]},
        "properties": props,
    }


def tile_features(
    coords: np.ndarray,
    size_level0: float,
    measurements: Mapping[str, np.ndarray],
    *,
    id_prefix: str = "",
) -> list[dict[str, Any]]:
    """Square tiles ``objectType: "tile"`` with per-tile ``measurements`` (each a ``(n,)`` array).

    Built column-wise (one ``tolist`` per column): 100k tiles take about a second, not a Python call per
    value.
    """
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    n, s = len(coords), float(size_level0)
    cols = {str(k): np.asarray(v, dtype=np.float64) for k, v in measurements.items()}
    for k, v in cols.items():
        if v.shape != (n,):
            raise ValueError(f"measurement {k!r}: expected ({n},), got {v.shape}")
    x0, y0 = coords[:, 0], coords[:, 1]
    x1, y1 = x0 + s, y0 + s
    rings = np.stack([x0, y0, x1, y0, x1, y1, x0, y1, x0, y0], 1).reshape(n, 5, 2).tolist()
    names = list(cols)
    values = np.stack([cols[k] for k in names], 1) if names else np.zeros((n, 0))
    finite = np.isfinite(values)
    rows = cast(list[list[float]], values.tolist())
    ok_rows = cast(list[bool], finite.all(axis=1).tolist())
    # one name-based UUID for the set with tile i in its low 48 bits (the node field): the version and
    # variant bits stay, the ids are distinct and the same on every export (uuid5 per tile is 3x slower)
    base = uuid.uuid5(_NS, f"{id_prefix}\x1ftiles").int & ~((1 << 48) - 1)
    out = []
    for i in range(n):
        if ok_rows[i]:
            meas = dict(zip(names, rows[i], strict=True))
        else:  # JSON has no NaN: a missing measurement is left out (QuPath shows it as NaN)
            meas = {k: v for k, v, ok in zip(names, rows[i], finite[i], strict=True) if ok}
        out.append(
            {
                "type": "Feature",
                "id": str(uuid.UUID(int=base | i)),
                "geometry": {"type": "Polygon", "coordinates": [rings[i]]},
                "properties": {"objectType": "tile", "measurements": meas},
            }
        )
    return out


def _tile_template(names: list[str]) -> str:
    """``%``-template of one tile Feature: id, 10 ring numbers, then the measurements, in JSON."""
    # level-0 pixels to 0.01 px; measurements to 7 significant digits (float32 precision): %g is ~2x faster
    # than repr's shortest round-trip digits, and QuPath stores measurements as float32 anyway
    ring = ",".join(["[%.10g,%.10g]"] * 5)
    meas = ",".join(f"{json.dumps(k).replace('%', '%%')}:%.7g" for k in names)
    return (
        '{"type":"Feature","id":"%s","geometry":{"type":"Polygon","coordinates":[[' + ring + "]]},"
        '"properties":{"objectType":"tile","measurements":{' + meas + "}}}"
    )


def tile_feature_lines(
    coords: np.ndarray, size_level0: float, measurements: Mapping[str, np.ndarray], *, id_prefix: str = ""
) -> Iterator[str]:
    """The JSON text of :func:`tile_features` (measurements to 7 significant digits), one Feature at a time,
    formatted by one ``%`` per tile (faster than building and dumping dicts; what large exports stream)."""
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    n, s = len(coords), float(size_level0)
    names = [str(k) for k in measurements]
    values = np.stack([np.asarray(measurements[k], np.float64) for k in measurements], 1) if names else None
    if values is not None and values.shape != (n, len(names)):
        raise ValueError(f"measurements must be ({n},) each, got {values.shape}")
    x0, y0 = coords[:, 0], coords[:, 1]
    x1, y1 = x0 + s, y0 + s
    ring = np.stack([x0, y0, x1, y0, x1, y1, x0, y1, x0, y0], 1)
    table = ring if values is None else np.concatenate([ring, values], 1)
    finite = np.ones(n, bool) if values is None else np.isfinite(values).all(1)
    template = _tile_template(names)
    base = uuid.uuid5(_NS, f"{id_prefix}\x1ftiles").int & ~((1 << 48) - 1)
    oks = cast(list[bool], finite.tolist())
    for i, (row, ok) in enumerate(zip(table.tolist(), oks, strict=True)):
        uid = str(uuid.UUID(int=base | i))
        if ok:
            yield template % (uid, *row)
        else:  # a row with NaN: the slow path leaves those measurements out
            meas = {k: v for k, v in zip(names, row[10:], strict=True) if math.isfinite(v)}
            ring_i = [row[j : j + 2] for j in range(0, 10, 2)]
            yield json.dumps(
                {
                    "type": "Feature",
                    "id": uid,
                    "geometry": {"type": "Polygon", "coordinates": [ring_i]},
                    "properties": {"objectType": "tile", "measurements": meas},
                },
                separators=(",", ":"),
            )


def write_feature_collection(
    path: PathLike, features: Sequence[Mapping[str, Any]], *, tiles: Iterator[str] | None = None
) -> Path:
    """Stream a FeatureCollection to ``path`` (beside it, then renamed): ``tiles`` (JSON lines from
    :func:`tile_feature_lines`) first, then ``features``. Strict JSON: NaN raises."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write('{"type":"FeatureCollection","features":[')
            first = True
            for text in tiles or ():
                fh.write(text if first else "," + text)
                first = False
            for f in features:
                text = json.dumps(f, separators=(",", ":"), allow_nan=False)
                fh.write(text if first else "," + text)
                first = False
            fh.write("]}\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def feature_collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: PathLike, data: Mapping[str, Any]) -> Path:
    """Compact strict JSON (no NaN), written beside ``path`` and renamed into place."""
    from ..jsonfile import write_json_atomic

    return write_json_atomic(path, data, indent=None)


# ------------------------------------------------------------------------------------------------ reading


def _color(value: Any) -> tuple[int, int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) >= 3:
        return int(value[0]), int(value[1]), int(value[2])
    if isinstance(value, int):  # QuPath's packed ARGB integer (older exports)
        return (value >> 16) & 255, (value >> 8) & 255, value & 255
    return None


def _label(props: Mapping[str, Any]) -> tuple[str | None, tuple[int, int, int] | None]:
    cls = props.get("classification")
    if isinstance(cls, Mapping):
        name = cls.get("name")
        if name is None and isinstance(cls.get("names"), list):  # derived classes: "Tumor: Positive"
            name = ": ".join(map(str, cls["names"]))
        return (None if name is None else str(name)), _color(cls.get("color", cls.get("colorRGB")))
    if isinstance(cls, str) and cls:
        return cls, None
    if props.get("class") not in (None, ""):  # our earlier files
        return str(props["class"]), None
    return None, None


def _outer_rings(geom: Mapping[str, Any]) -> list[np.ndarray]:
    kind = geom.get("type")
    coords = geom.get("coordinates") or []
    polys = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
    out = []
    for poly in polys:
        if not poly:
            continue
        ring = np.asarray(poly[0], dtype=np.float64).reshape(-1, 2)
        if len(ring) >= 2 and np.allclose(ring[0], ring[-1]):
            ring = ring[:-1]
        if len(ring) >= 3:
            out.append(ring)
    return out


def parse_geojson(
    data: Any, *, object_types: Sequence[str] | None = ("annotation",), source: str = "GeoJSON"
) -> list[Annotation]:
    """Objects of a QuPath (or our) GeoJSON document; MultiPolygons give one :class:`Annotation` per part.

    Args:
        data: a FeatureCollection, a Feature, or a list of Features (parsed JSON).
        object_types: keep these ``objectType`` s (a missing one counts as ``annotation``); ``None``: all.

    Raises:
        PathM3Error: not GeoJSON features, or a non-polygon-only file.
    """
    if isinstance(data, list):
        feats = data
    elif isinstance(data, Mapping) and data.get("type") == "FeatureCollection":
        feats = data.get("features") or []
    elif isinstance(data, Mapping) and data.get("type") == "Feature":
        feats = [data]
    else:
        raise PathM3Error(f"{source}: not GeoJSON (expected a FeatureCollection or a list of Features)")
    out: list[Annotation] = []
    skipped_geometry = 0
    for f in feats:
        if not isinstance(f, Mapping) or f.get("type") != "Feature":
            raise PathM3Error(f"{source}: an entry is not a GeoJSON Feature ({str(f)[:60]})")
        props = f.get("properties") or {}
        kind = str(props.get("objectType", "annotation"))
        if object_types is not None and kind not in object_types:
            continue
        rings = _outer_rings(f.get("geometry") or {})
        if not rings:
            skipped_geometry += 1
            continue
        label, color = _label(props)
        meas = props.get("measurements") or {}
        if isinstance(meas, list):  # QuPath < 0.3: [{"name", "value"}]
            meas = {m.get("name"): m.get("value") for m in meas if isinstance(m, Mapping)}
        for ring in rings:
            out.append(
                Annotation(
                    polygon=ring,
                    label=label,
                    color=color,
                    object_type=kind,
                    name=str(props.get("name", "")),
                    id=str(f.get("id", props.get("id", ""))),
                    measurements={str(k): float(v) for k, v in meas.items() if isinstance(v, (int, float))},
                )
            )
    if not out and skipped_geometry:
        raise PathM3Error(f"{source}: no polygon objects ({skipped_geometry} points/lines are not regions)")
    return out


def read_geojson(path: PathLike, *, object_types: Sequence[str] | None = ("annotation",)) -> list[Annotation]:
    """Read a ``.geojson`` / ``.json`` file written by QuPath or by this plugin (see :func:`parse_geojson`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise PathM3Error(f"{path}: not a readable GeoJSON file ({err})") from err
    return parse_geojson(data, object_types=object_types, source=str(path))


__all__ = [
    "Annotation",
    "classification",
    "feature",
    "feature_collection",
    "object_id",
    "parse_geojson",
    "read_geojson",
    "tile_feature_lines",
    "tile_features",
    "write_feature_collection",
    "write_geojson",
]
