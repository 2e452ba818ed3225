"""A :class:`SlideResult` in the ecosystem's formats: SpatialData (wsidata/LazySlide layout), QuPath GeoJSON
with measurement-map tiles, OME-Zarr maps. The writers live in :mod:`napari_pathm3.io`; this module turns a
result into their inputs (per-tile columns, tile spec, slide properties, rasters aligned with the slide).

Per-tile values (``obs`` columns / QuPath measurements / OME-Zarr channels):

* ``attention``: the slide attention (mean over queries; sums to 1 over the tiles);
* ``attention_rel``: the same relative to uniform ``1/n`` (1 = uniform; what the heatmap shows, in log2);
* ``query_<k>``: query ``k``'s attention relative to uniform;
* ``prob_<class>``: the **slide-level** class probabilities, repeated on every tile (PathM3 classifies the
  slide from its queries; it has no per-tile class output), so a QuPath project colours slides by them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._types import PathLike
from .heatmaps import attention_raster, relative_attention
from .io import qupath
from .io.feature_store import GridMeta
from .result import SlideResult

TOP_COLOR = (255, 200, 0)
REGION_COLOR = (0, 160, 255)


def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", str(name)).strip("_") or "class"


def tile_columns(result: SlideResult) -> dict[str, np.ndarray]:
    """Per-tile result columns (see the module docstring), each ``(n,)`` float."""
    n = result.num_patches
    cols: dict[str, np.ndarray] = {
        "attention": np.asarray(result.attention, np.float64),
        "attention_rel": relative_attention(result.attention),
    }
    qa = np.asarray(result.query_attention, np.float64)
    if qa.size:
        width = len(str(len(qa) - 1))
        for k, row in enumerate(relative_attention(qa)):
            cols[f"query_{k:0{width}d}"] = row
    for c, p in result.probabilities.items():
        cols[f"prob_{_safe(c)}"] = np.full(n, float(p))
    return cols


def tile_spec(grid: GridMeta) -> dict[str, Any]:
    """wsidata ``TileSpec`` fields of a grid (``base_*``: level 0, ``ops_*``: the read level)."""
    if grid.patch_size is None or grid.size_level0 is None or grid.step_level0 is None:
        raise ValueError(
            "the patch grid records no patch size, level-0 size or step; re-extract the features"
        )
    size = grid.patch_size
    down0 = grid.size_level0 / size  # level-0 px per delivered patch px
    stride = round(grid.step_level0 / down0)
    return {
        "height": size,
        "width": size,
        "stride_height": stride,
        "stride_width": stride,
        "mpp": grid.mpp,
        "ops_level": grid.read_level or 0,
        "ops_downsample": float(grid.read_size or size) / size,
        "base_level": 0,
        "base_downsample": down0,
        "tissue_name": "tissues",
    }


def slide_properties(
    dimensions: tuple[int, int], mpp_xy: tuple[float, float] | None, slide: Any = None
) -> dict[str, Any]:
    """wsidata ``SlideProperties`` fields of a slide of level-0 ``(width, height)``; pyramid levels come from
    ``slide`` when given."""
    w, h = (int(v) for v in dimensions)
    if slide is not None:
        shapes = [[int(lh), int(lw)] for lw, lh in slide.level_dimensions]
        downs = [float(d) for d in slide.level_downsamples]
    else:
        shapes, downs = [[h, w]], [1.0]
    mpp = None if mpp_xy is None else float(np.mean(mpp_xy))
    return {
        "shape": [h, w],
        "n_level": len(shapes),
        "level_shape": shapes,
        "level_downsample": downs,
        "mpp": mpp,
        "magnification": None,
        "bounds": None,
        "scene": 0,
        "n_scenes": 1,
        "scene_names": ["Image 0"],
        "raw": None,
    }


def slide_uns(result: SlideResult) -> dict[str, Any]:
    """Slide-level results for the table's ``uns`` (JSON-like)."""
    s = result.summary()
    keep = ("slide", "label", "caption", "text", "classified_from", "model", "encoder", "warnings")
    out = {k: s[k] for k in keep if s.get(k) is not None}
    out["probabilities"] = {str(k): float(v) for k, v in result.probabilities.items()}
    out["top_tiles"] = [int(i) for i in result.top_indices]
    return {"pathm3": out}


def _slide_image(slide_path: str) -> Any:
    """The slide's level 0 as a lazy spatialdata image with a 2× pyramid (copied into the store when written)."""
    from spatialdata.models import Image2DModel

    from .io.pyramid import level_array
    from .io.slide import open_slide

    slide = open_slide(slide_path)
    level0 = level_array(slide, 0).transpose(2, 0, 1)  # (y, x, c) -> (c, y, x)
    steps = []
    side = max(level0.shape[1:])
    while side > 2048:
        steps.append(2)
        side //= 2
    return Image2DModel.parse(level0, dims=("c", "y", "x"), scale_factors=steps or None)


def export_spatialdata(
    result: SlideResult,
    path: PathLike,
    *,
    features: Any = None,
    slide: Any = None,
    include_image: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write ``result`` (tiles, features, per-tile and slide-level results) as a LazySlide-readable
    SpatialData zarr; see :mod:`napari_pathm3.io.spatialdata`.

    Args:
        features: the tiles' ``(n, d)`` features (e.g. from the feature cache); ``None`` writes ``d = 0``.
        slide: the open slide, for its pyramid levels in ``attrs["slide_properties"]``.
        include_image: copy the slide's pixels into ``images["wsi"]`` (default: referenced by path only).
    """
    from .io.spatialdata import TileTable, write_spatialdata

    tiles = TileTable(
        coords=result.coords,
        size_level0=float(result.grid.size_level0),
        features=features,
        encoder_name=result.encoder_name,
        tile_spec=tile_spec(GridMeta.from_json(result.grid.params())),
        obs=tile_columns(result),
        uns=slide_uns(result),
    )
    return write_spatialdata(
        path,
        tiles,
        slide_properties=slide_properties(result.slide_dimensions, result.mpp_xy, slide),
        slide_path=result.slide_path,
        image=_slide_image(result.slide_path) if include_image else None,
        overwrite=overwrite,
    )


def cached_result_features(
    result: SlideResult, cache_dir: PathLike, *, mpp: float | None = None
) -> np.ndarray:
    """The ``(n, d)`` features a slide result was computed from, read back from the feature cache (no
    re-extraction): what :func:`export_spatialdata` puts in the table. A bag result reads its bag.

    Raises:
        FeatureStoreError: the features are not (or no longer) in ``cache_dir``.
    """
    from .errors import FeatureStoreError
    from .features.cache import cached_store
    from .io.feature_store import read_bag
    from .io.interop import read_feature_file
    from .io.slide import open_slide

    path = Path(result.slide_path)
    if path.suffix.lower() in (".h5", ".hdf5", ".npy", ".pt", ".pth", ".safetensors", ".zarr") or (
        path.parent.name == "tables"
    ):
        return read_feature_file(path).features
    with open_slide(path, mpp=mpp) as slide:
        store = cached_store(cache_dir, slide, result.encoder_name, result.grid)
    if not store.exists():
        raise FeatureStoreError(
            f"{path.name}: its features are not in the cache {cache_dir}; caption it again with the cache on"
        )
    return read_bag(store).features


def export_bag_spatialdata(bag: Any, path: PathLike, *, slide: Any = None, overwrite: bool = False) -> Path:
    """A feature-store bag (tiles and features, no results) as a LazySlide-readable SpatialData zarr."""
    from .io.spatialdata import TileTable, write_spatialdata

    grid = bag.meta.grid
    if grid is None or bag.coords is None:
        raise ValueError(f"bag {bag.slide_id!r}: no patch grid recorded; only feature-store bags export here")
    dims = tuple(grid.slide_dimensions or ())
    if slide is not None:
        dims = tuple(slide.dimensions)
    mpp_xy = None if slide is None else slide.mpp_xy
    spec = tile_spec(grid)  # raises when the grid records no sizes
    tiles = TileTable(
        coords=bag.coords,
        size_level0=float(grid.size_level0 or 0),
        features=bag.features,
        encoder_name=bag.encoder_name,
        tile_spec=spec,
    )
    return write_spatialdata(
        path,
        tiles,
        slide_properties=slide_properties(dims, mpp_xy, slide),  # type: ignore[arg-type]
        slide_path=None if slide is None else str(slide.path),
        overwrite=overwrite,
    )


def qupath_geojson(result: SlideResult, *, tiles: bool = True) -> dict[str, Any]:
    """QuPath GeoJSON: every tile (``objectType: "tile"``, measurements ``PathM3 <column>``), the top patches
    and the region as classified annotations; level-0 pixels, UUID ids, no CRS."""
    feats: list[dict[str, Any]] = []
    if tiles:
        cols = {f"PathM3 {k}": v for k, v in tile_columns(result).items()}
        feats += qupath.tile_features(
            result.coords, result.grid.size_level0, cols, id_prefix=result.slide_path
        )
    return qupath.feature_collection(feats + _annotations(result))


def _annotations(result: SlideResult) -> list[dict[str, Any]]:
    """The top patches and the region as classified QuPath annotations."""
    ident = result.slide_path
    feats: list[dict[str, Any]] = []
    size = float(result.grid.size_level0)
    for p in result.top_patches():
        x, y = p["x"], p["y"]
        box = np.array([[x, y], [x + size, y], [x + size, y + size], [x, y + size]], float)
        feats.append(
            qupath.feature(
                box,
                object_type="annotation",
                id=qupath.object_id(ident, "top", p["rank"]),
                name=f"top {p['rank']}",
                label="PathM3 top patch",
                color=TOP_COLOR,
                measurements={
                    "PathM3 rank": p["rank"],
                    "PathM3 attention": p["attention"],
                    "PathM3 attention_rel": p["attention"] * result.num_patches,
                },
            )
        )
    for i, poly in enumerate(result.region or []):
        feats.append(
            qupath.feature(
                np.asarray(poly, float),
                object_type="annotation",
                id=qupath.object_id(ident, "region", i),
                name=f"PathM3 region: {result.label}",
                label=result.label,
                color=REGION_COLOR,
                measurements={f"PathM3 prob_{_safe(c)}": p for c, p in result.probabilities.items()},
            )
        )
    return feats


def save_qupath_geojson(result: SlideResult, path: PathLike, *, tiles: bool = True) -> Path:
    """Write :func:`qupath_geojson` streamed tile by tile (no document of every tile held in memory)."""
    lines = None
    if tiles:
        cols = {f"PathM3 {k}": v for k, v in tile_columns(result).items()}
        size = result.grid.size_level0
        lines = qupath.tile_feature_lines(result.coords, size, cols, id_prefix=result.slide_path)
    return qupath.write_feature_collection(path, _annotations(result), tiles=lines)


def export_ome_zarr(
    result: SlideResult,
    path: PathLike,
    *,
    maps: Mapping[str, np.ndarray] | None = None,
    overwrite: bool = False,
) -> Path:
    """Attention, per-query attention (relative to uniform) and any extra per-patch ``maps`` (name -> ``(n,)``,
    e.g. per-word maps) as one OME-NGFF multiscale image aligned with the slide (µm when it has an mpp)."""
    from .io.ome_zarr import MapPlacement, write_maps_ome_zarr

    cols = {k: v for k, v in tile_columns(result).items() if not k.startswith("prob_")}
    cols.pop("attention")  # sums to 1 over the tiles: the relative map is the readable one
    n = result.num_patches
    for name, values in (maps or {}).items():
        v = np.asarray(values, np.float64)
        if v.shape != (n,):
            raise ValueError(f"map {name!r}: expected one value per patch ({n},), got {v.shape}")
        cols[str(name)] = v
    names = list(cols)
    raster = attention_raster(np.stack([cols[k] for k in names]), result.grid)
    scale, translate = raster.transform(result.slide_scale)
    return write_maps_ome_zarr(
        path,
        dict(zip(names, raster.data, strict=True)),
        placement=MapPlacement(
            scale_yx=(scale[-2], scale[-1]),
            translate_yx=(translate[-2], translate[-1]),
            unit=None if result.mpp_xy is None else "micrometer",
        ),
        name=f"PathM3 maps of {result.slide_name}",
        metadata={
            "slide": result.slide_path,
            "label": result.label,
            "values": "attention relative to uniform",
        },
        overwrite=overwrite,
    )


__all__ = [
    "cached_result_features",
    "export_bag_spatialdata",
    "export_ome_zarr",
    "export_spatialdata",
    "qupath_geojson",
    "save_qupath_geojson",
    "slide_properties",
    "tile_columns",
    "tile_spec",
]
