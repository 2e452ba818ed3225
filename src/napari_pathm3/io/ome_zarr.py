"""A named stack of maps (attention, per query, per word, ...) as an OME-NGFF multiscale image.

Axes ``c, y, x``; ``y``/``x`` in micrometres when the slide has an mpp (else in level-0 pixels), with a
``scale`` and ``translation`` per level that put every map pixel over the level-0 pixels it covers (so the maps
overlay the slide in napari's NGFF readers and any other OME-Zarr viewer). Channel names go to ``omero``
``channels[].label`` and to ``attrs["napari_pathm3"]["maps"]``; missing values (no patch) stay NaN. Written
chunk by chunk (``(1, 512, 512)`` chunks), coarser levels by 2×2 NaN-aware means until the long side is ≤ 256.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._types import PathLike
from ..errors import PathM3Error
from ._atomic import replace_dir, temp_sibling
from .extras import require

CHUNK = 512
MIN_SIDE = 256


def _halve(a: np.ndarray) -> np.ndarray:
    """2×2 NaN-aware mean of ``(c, h, w)`` (odd edges padded with NaN)."""
    c, h, w = a.shape
    p = np.full((c, h + h % 2, w + w % 2), np.nan, np.float32)
    p[:, :h, :w] = a
    blocks = p.reshape(c, p.shape[1] // 2, 2, p.shape[2] // 2, 2)
    ok = np.isfinite(blocks)
    n = ok.sum(axis=(2, 4))
    total = np.where(ok, blocks, 0.0).sum(axis=(2, 4))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan).astype(np.float32)


@dataclass(frozen=True, kw_only=True)
class MapPlacement:
    """Where a map's pixels sit on the slide: ``scale_yx`` (level-0 map pixel size) and ``translate_yx``
    (the centre of map pixel ``(0, 0)``) in ``unit`` (e.g. :meth:`napari_pathm3.heatmaps.Raster.transform`
    with the slide's µm/px); ``unit`` ``"micrometer"``, or ``None`` for unit-less level-0 pixels."""

    scale_yx: tuple[float, float]
    translate_yx: tuple[float, float]
    unit: str | None = "micrometer"


def write_maps_ome_zarr(
    path: PathLike,
    maps: Mapping[str, np.ndarray],
    *,
    placement: MapPlacement,
    name: str = "PathM3 maps",
    metadata: Mapping[str, object] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``maps`` (name -> ``(H, W)``, all the same shape) as one OME-NGFF multiscale image.

    Args:
        placement: where the maps' pixels sit on the slide (:class:`MapPlacement`).
        metadata: extra JSON kept under ``attrs["napari_pathm3"]``.
    """
    zarr = require("zarr", purpose="OME-Zarr heatmaps")
    writer = require("ome_zarr.writer", purpose="OME-Zarr heatmaps")
    path = Path(path)
    if not maps:
        raise PathM3Error(f"{path}: no maps to write")
    names = list(maps)
    stack = np.stack([np.asarray(maps[k], dtype=np.float32) for k in names])
    if stack.ndim != 3:
        raise PathM3Error(f"{path}: maps must be 2-D (H, W), got {stack.shape[1:]}")
    if path.exists() and not overwrite:
        raise PathM3Error(f"{path}: already exists; choose another path or pass overwrite=True")
    levels = [stack]
    while max(levels[-1].shape[1:]) > MIN_SIDE:
        levels.append(_halve(levels[-1]))
    sy, sx = (float(v) for v in placement.scale_yx)
    ty, tx = (float(v) for v in placement.translate_yx)
    unit = placement.unit
    transforms = []
    for lvl in range(len(levels)):
        f = (
            2.0**lvl
        )  # a level-l pixel merges f x f level-0 map pixels: its centre moves by (f - 1) / 2 of them
        transforms.append(
            [
                {"type": "scale", "scale": [1.0, sy * f, sx * f]},
                {"type": "translation", "translation": [0.0, ty + (f - 1) / 2 * sy, tx + (f - 1) / 2 * sx]},
            ]
        )
    space = {"type": "space", **({"unit": unit} if unit else {})}
    axes = [{"name": "c", "type": "channel"}, {"name": "y", **space}, {"name": "x", **space}]
    finite = stack[np.isfinite(stack)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    omero = {
        "name": name,
        "channels": [
            {
                "label": k,
                "active": i == 0,
                "color": "FFFFFF",
                "window": {"start": lo, "end": hi, "min": lo, "max": hi},
            }
            for i, k in enumerate(names)
        ],
    }
    tmp = temp_sibling(path, "tmp")
    try:
        group = zarr.open_group(str(tmp), mode="w")
        writer.write_multiscale(
            levels,
            group,
            axes=axes,
            coordinate_transformations=transforms,
            storage_options={"chunks": (1, CHUNK, CHUNK)},
            name=name,
        )
        attrs = dict(group.attrs)
        attrs.setdefault("ome", {})["omero"] = omero
        attrs["napari_pathm3"] = {"maps": names, **dict(metadata or {})}
        group.attrs.update(attrs)
        if path.exists():
            shutil.rmtree(path)
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


__all__ = ["MapPlacement", "write_maps_ome_zarr"]
