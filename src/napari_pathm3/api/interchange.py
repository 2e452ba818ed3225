"""Interchange verbs: QuPath regions in, results out as SpatialData, QuPath GeoJSON, OME-Zarr and maps."""

from __future__ import annotations

from collections.abc import Sequence
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
    result: SlideResult, path: PathLike, *, features: Any = None, include_image: bool = False
) -> Any:
    """Write a result as a SpatialData zarr in wsidata/LazySlide layout (see :mod:`napari_pathm3.exports`)."""
    from ..exports import export_spatialdata as write

    return write(result, path, features=features, include_image=include_image)


def export_qupath(result: SlideResult, path: PathLike) -> Any:
    """Write a result as QuPath GeoJSON: measurement-map tiles and classified annotations."""
    from ..exports import save_qupath_geojson

    return save_qupath_geojson(result, path)


def export_ome_zarr(result: SlideResult, path: PathLike, *, maps: dict[str, np.ndarray] | None = None) -> Any:
    """Write attention, per-query and any extra per-patch ``maps`` as an OME-Zarr image aligned with the slide."""
    from ..exports import export_ome_zarr as write

    return write(result, path, maps=maps)


def save_maps(result: SlideResult, path: PathLike) -> SlideResult:
    """Write a result's word and phrase maps (``.npz``) and return the result that names that file."""
    result.save_maps(path)
    return result.with_maps_file(path)
