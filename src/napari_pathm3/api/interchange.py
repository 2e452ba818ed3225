"""Interchange verbs: QuPath regions in, results out as SpatialData, QuPath GeoJSON, OME-Zarr and maps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._types import PathLike
from ..result import SlideResult


def read_regions(path: PathLike, *, object_types: Sequence[str] = ("annotation",)) -> list[Any]:
    """Classified polygons of a QuPath (or our) GeoJSON file as training regions (level-0 pixels).

    Unclassified objects are left out; the result feeds :func:`napari_pathm3.training.regions.bags_from_regions`
    (labels drawn in QuPath train a model here).
    """
    from ..io.qupath import read_geojson
    from ..training.regions import Region

    return [
        Region(label=a.label, polygon=a.polygon, name=a.name or a.id, caption=None)
        for a in read_geojson(path, object_types=object_types)
        if a.label
    ]


def export_spatialdata(
    result: SlideResult,
    path: PathLike,
    *,
    features: Any = None,
    slide: Any = None,
    include_image: bool = False,
) -> Any:
    """Write a result as a SpatialData zarr in wsidata/LazySlide layout (see :mod:`napari_pathm3.exports`);
    ``slide``: the open slide, whose pixels ``include_image`` copies in."""
    from ..exports import export_spatialdata as write

    return write(result, path, features=features, slide=slide, include_image=include_image)


def result_features(result: SlideResult, cache_dir: PathLike, *, mpp: float | None = None) -> np.ndarray:
    """The ``(n, d)`` features a result was computed from: its bag, or read back from the feature cache."""
    from ..exports import cached_result_features

    return cached_result_features(result, cache_dir, mpp=mpp)


def save_heatmap(
    result: SlideResult, path: PathLike, *, max_size: int = 1024, note: str | None = None
) -> Path:
    """The heatmap figure: attention over a thumbnail, colour bar, class, probabilities, caption, ``note``."""
    from ..heatmap_png import save_heatmap_png

    return save_heatmap_png(result, path, max_size=max_size, note=note)


def export_qupath(result: SlideResult, path: PathLike) -> Any:
    """Write a result as QuPath GeoJSON: measurement-map tiles and classified annotations."""
    from ..exports import save_qupath_geojson

    return save_qupath_geojson(result, path)


def export_ome_zarr(result: SlideResult, path: PathLike, *, maps: dict[str, np.ndarray] | None = None) -> Any:
    """Write attention, per-query and any extra per-patch ``maps`` as an OME-Zarr image aligned with the slide."""
    from ..exports import export_ome_zarr as write

    return write(result, path, maps=maps)


#: what :func:`export_result` writes, by ``kind``
EXPORT_KINDS = ("json", "csv", "geojson", "spatialdata", "ome-zarr")


def export_result(
    result: SlideResult, path: PathLike, kind: str | None = None, *, cache_dir: PathLike | None = None
) -> Path:
    """Save a result as ``json`` / ``csv`` / ``geojson`` (QuPath: tiles with measurements, top patches),
    ``spatialdata`` (a LazySlide-readable zarr with the features read back from ``cache_dir``) or
    ``ome-zarr`` (maps); ``kind`` defaults to the path's suffix. Existing zarr outputs are replaced."""
    from .. import exports

    path = Path(path)
    kind = kind or path.suffix.lstrip(".").lower()
    if kind == "json":
        return result.save_json(path)
    if kind == "csv":
        return result.save_csv(path)
    if kind == "geojson":
        return exports.save_qupath_geojson(result, path)
    if kind == "spatialdata":
        feats = None if cache_dir is None else exports.cached_result_features(result, cache_dir)
        return exports.export_spatialdata(result, path, features=feats, overwrite=True)
    if kind == "ome-zarr":
        return exports.export_ome_zarr(result, path, overwrite=True)
    raise ValueError(f"unknown export kind {kind!r} (one of {EXPORT_KINDS})")


def save_maps(result: SlideResult, path: PathLike) -> SlideResult:
    """Write a result's word and phrase maps (``.npz``) and return the result that names that file."""
    result.save_maps(path)
    return result.with_maps_file(path)
