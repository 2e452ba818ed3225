"""SpatialData zarr stores in wsidata's (LazySlide's) conventions, both ways.

On disk (what ``wsidata.open_wsi(slide, store=...)`` and ``spatialdata.read_zarr`` expect):

* coordinate system ``"global"`` = level-0 pixels (every element gets the identity transform);
* ``shapes[<tile_key>]``: one level-0 box per tile, columns ``tile_id, x, y, tissue_id`` and the per-tile
  results (where LazySlide's own tile predictions go, so ``zs.pl.tiles(wsi, color="attention_rel")`` works);
* ``tables["<encoder>_<tile_key>"]``: AnnData, ``X`` = features ``(n, d)``, ``obs`` = ``tile_id``,
  ``library_id`` (the region key) and any per-tile results, parsed with
  ``TableModel.parse(region=tile_key, region_key="library_id", instance_key="tile_id")``; slide-level
  results go to the table's ``uns``;
* ``attrs["tile_spec"][tile_key]`` = wsidata ``TileSpec`` fields, ``attrs["slide_properties"]`` = wsidata
  ``SlideProperties`` fields; ``attrs["napari_pathm3"]`` records the slide path (pixels are referenced, not
  copied, unless an image is passed).

Reading accepts any store laid out like this (ours, LazySlide's ``wsi.write()``, wsidata's ``add_features``)
and returns a :class:`FeatureBag` in level-0 coordinates, so training, captioning and evaluation use it like a
TRIDENT/CLAM ``.h5`` without re-extraction.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._types import PathLike
from ..errors import FeatureStoreError
from ._atomic import replace_dir, temp_sibling
from .extras import require
from .feature_store import BagMeta, FeatureBag, require_finite

TILE_KEY = "tiles"
REGION_KEY, INSTANCE_KEY = "library_id", "tile_id"  # wsidata's names
TILE_SPEC_KEY, SLIDE_PROPERTIES_KEY, OWN_KEY = "tile_spec", "slide_properties", "napari_pathm3"
_PURPOSE = "SpatialData import/export"


def table_key_for(encoder_name: str, tile_key: str = TILE_KEY) -> str:
    """wsidata's feature-table key ``<model>_<tile_key>``: ``timm:resnet18`` -> ``resnet18_tiles``."""
    model = re.split(r"[:/]", encoder_name or "features")[-1]
    model = re.sub(r"[^0-9A-Za-z_.-]+", "_", model).strip("_") or "features"
    return f"{model}_{tile_key}"


def is_spatialdata_store(path: PathLike) -> bool:
    """True for a zarr folder that SpatialData wrote (``tables``/``shapes`` groups, spatialdata attrs)."""
    p = Path(path)
    meta = p / "zarr.json"
    if not (p.is_dir() and meta.is_file()):
        return False
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return "spatialdata_attrs" in attrs or (p / "tables").is_dir() or (p / "shapes").is_dir()


def split_table_path(path: PathLike) -> tuple[Path, str | None]:
    """``store.zarr/tables/<key>`` -> ``(store.zarr, key)``; a store path -> ``(store, None)``."""
    p = Path(path)
    if p.parent.name == "tables" and is_spatialdata_store(p.parent.parent):
        return p.parent.parent, p.name
    return p, None


def _tile_boxes(x: np.ndarray, y: np.ndarray, w: float, h: float) -> Any:
    shapely = require("shapely", purpose=_PURPOSE)
    return shapely.box(x, y, x + w, y + h)  # vectorised: 100k boxes in milliseconds


@dataclass(frozen=True, kw_only=True)
class TileTable:
    """The tiles of one slide and what is known per tile.

    Attributes:
        coords: ``(n, 2)`` level-0 ``(x, y)`` top-left corners.
        size_level0: tile side in level-0 pixels.
        features: ``(n, d)`` array (numpy or dask: dask is written chunk by chunk), or ``None`` for ``d = 0``.
        encoder_name: names the table ``<model>_<tile_key>``.
        tile_spec: wsidata ``TileSpec`` fields.
        obs: extra per-tile columns ``(n,)`` (attention, per-query weights, ...).
        uns: slide-level results kept in the table's ``uns`` (JSON-like values).
        tissue_ids: the tissue piece of each tile (``None``: all 0).
    """

    coords: np.ndarray
    size_level0: float
    features: Any
    encoder_name: str
    tile_spec: Mapping[str, Any]
    obs: Mapping[str, np.ndarray] | None = None
    uns: Mapping[str, Any] | None = None
    tile_key: str = TILE_KEY
    tissue_ids: np.ndarray | None = None


def write_spatialdata(
    path: PathLike,
    tiles: TileTable,
    *,
    slide_properties: Mapping[str, Any],
    slide_path: str | None = None,
    image: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write tiles, features and per-tile results as a SpatialData zarr (wsidata layout, see module doc).

    Args:
        tiles: the tiles, their features and per-tile results (:class:`TileTable`).
        slide_properties: wsidata ``SlideProperties`` fields.
        image: optional ``(c, y, x)`` slide image (a spatialdata Image2DModel element): copied into the store.
        overwrite: replace an existing SpatialData store at ``path`` (anything else there is an error).

    Returns:
        ``path``. The store is built beside it and renamed into place.
    """
    coords, size_level0, features = tiles.coords, tiles.size_level0, tiles.features
    encoder_name, tile_spec, obs, uns = tiles.encoder_name, tiles.tile_spec, tiles.obs, tiles.uns
    tile_key, tissue_ids = tiles.tile_key, tiles.tissue_ids
    sd = require("spatialdata", purpose=_PURPOSE)
    ad = require("anndata", purpose=_PURPOSE)
    gpd = require("geopandas", purpose=_PURPOSE)
    import pandas as pd
    from spatialdata.models import ShapesModel, TableModel

    path = Path(path)
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    n = len(coords)
    if n == 0:
        raise FeatureStoreError(f"{path}: nothing to export (no tiles)")
    if features is None:
        features = np.zeros((n, 0), np.float32)
    if tuple(features.shape[:1]) != (n,) or len(features.shape) != 2:
        raise FeatureStoreError(f"{path}: features must be ({n}, d), got {tuple(features.shape)}")
    if path.exists() and not (overwrite and is_spatialdata_store(path)):
        what = "a SpatialData store (pass overwrite=True)" if is_spatialdata_store(path) else "not ours"
        raise FeatureStoreError(f"{path}: already exists and is {what}; choose another path")
    tile_id = np.arange(n, dtype=np.int64)
    x, y = coords[:, 0], coords[:, 1]
    s = float(size_level0)
    boxes = gpd.GeoDataFrame(
        {
            "tile_id": tile_id,
            "x": x,
            "y": y,
            "tissue_id": np.zeros(n, np.int64) if tissue_ids is None else np.asarray(tissue_ids),
        },
        geometry=_tile_boxes(x, y, s, s),
    )
    columns: dict[str, Any] = {INSTANCE_KEY: tile_id}
    for name, values in (obs or {}).items():
        v = np.asarray(values)
        if v.shape != (n,):
            raise FeatureStoreError(f"{path}: obs column {name!r} must be ({n},), got {v.shape}")
        columns[name] = v
        if name not in boxes.columns:  # also on the tiles: where LazySlide keeps tile-level results
            boxes[name] = v
    frame = pd.DataFrame(columns, index=tile_id.astype(str))
    frame[REGION_KEY] = pd.Categorical([tile_key] * n)
    table = ad.AnnData(X=features, obs=frame, uns=dict(uns or {}))
    table = TableModel.parse(table, region=tile_key, region_key=REGION_KEY, instance_key=INSTANCE_KEY)
    attrs = {
        TILE_SPEC_KEY: {tile_key: dict(tile_spec)},
        SLIDE_PROPERTIES_KEY: dict(slide_properties),
        OWN_KEY: {
            "slide_path": slide_path,
            "encoder": encoder_name,
            "pixels": "copied" if image else "referenced",
        },
    }
    sdata = sd.SpatialData(
        shapes={tile_key: ShapesModel.parse(boxes)},
        tables={table_key_for(encoder_name, tile_key): table},
        images={} if image is None else {"wsi": image},
        attrs=json.loads(json.dumps(attrs, default=_jsonable)),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path, "tmp")  # a half-written export never sits at `path`
    try:
        sdata.write(tmp)
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# ------------------------------------------------------------------------------------------------ reading


def _pick_table(tables: Mapping[str, Any], key: str | None, path: Path) -> tuple[str, Any]:
    if key is not None:
        if key not in tables:
            raise FeatureStoreError(f"{path}: no table {key!r} (tables: {sorted(tables)})")
        return key, tables[key]
    feats = {k: t for k, t in tables.items() if t.n_vars > 0 and "spatialdata_attrs" in t.uns}
    if not feats:
        raise FeatureStoreError(
            f"{path}: no feature table (tables: {sorted(tables) or 'none'}); run LazySlide's "
            "feature_extraction or `napari-pathm3 extract --format spatialdata` first"
        )
    if len(feats) > 1:
        raise FeatureStoreError(
            f"{path}: {len(feats)} feature tables ({', '.join(sorted(feats))}); name one as "
            f"{path}/tables/<key>"
        )
    return next(iter(feats.items()))


def _tile_xy(shapes: Any, ids: np.ndarray, spec: Mapping[str, Any], path: Path) -> tuple[np.ndarray, float]:
    """Level-0 top-left corners of the tiles ``ids`` and their level-0 side."""
    index = shapes["tile_id"].to_numpy() if "tile_id" in shapes.columns else np.arange(len(shapes))
    pos = {int(t): i for i, t in enumerate(index)}
    missing = [int(t) for t in ids if int(t) not in pos]
    if missing:
        raise FeatureStoreError(f"{path}: feature rows for tiles without a box (tile_id {missing[:5]})")
    rows = np.fromiter((pos[int(t)] for t in ids), np.int64, len(ids))
    bounds = np.asarray(shapes.geometry.bounds)[rows]  # minx, miny, maxx, maxy in "global" = level 0
    if {"x", "y"} <= set(shapes.columns):
        xy = shapes[["x", "y"]].to_numpy()[rows]
    else:
        xy = bounds[:, :2]
    side = spec.get("base_width") or spec.get("width", 0) * spec.get("base_downsample", 1.0)
    if not side:
        side = float(np.median(bounds[:, 2] - bounds[:, 0]))
    return np.rint(np.asarray(xy, np.float64)).astype(np.int64), float(side)


def _check_global_identity(shapes: Any, tile_key: str, path: Path) -> None:
    """Tiles must be in level-0 pixels: the identity to ``"global"`` (any other transform is refused)."""
    from spatialdata.transformations import Identity, get_transformation

    tf = get_transformation(shapes, to_coordinate_system="global")
    if not isinstance(tf, Identity):
        raise FeatureStoreError(
            f"{path}: shapes[{tile_key!r}] map to 'global' by {tf}, not the identity; only level-0 tiles "
            "(wsidata's layout) are read"
        )


def read_spatialdata_bag(
    path: PathLike, *, table_key: str | None = None, slide_id: str | None = None
) -> FeatureBag:
    """Features and tile boxes of a SpatialData store (ours or LazySlide's) as a :class:`FeatureBag`.

    ``path`` may name the table: ``store.zarr/tables/<key>``. ``bag.meta`` keeps ``patch_size_level0``,
    the tile spec, slide properties and the table key.

    Raises:
        FeatureStoreError: no (or several) feature tables, tiles missing, or not level-0 tiles.
        MissingExtraError: spatialdata is not installed.
    """
    sd = require("spatialdata", purpose=_PURPOSE)
    store, key_in_path = split_table_path(path)
    table_key = table_key or key_in_path
    try:
        sdata = sd.read_zarr(store, selection=("shapes", "tables"))
    except Exception as err:  # zarr / anndata / geopandas each raise their own errors
        raise FeatureStoreError(
            f"{store}: not a readable SpatialData store ({type(err).__name__}: {err})"
        ) from err
    key, table = _pick_table(sdata.tables, table_key, store)
    sd_attrs = table.uns.get("spatialdata_attrs", {})
    regions = sd_attrs.get("region")
    tile_key = regions if isinstance(regions, str) else (list(regions or [None]) or [None])[0]
    if tile_key not in sdata.shapes:
        raise FeatureStoreError(
            f"{store}: table {key!r} annotates {regions!r}, which is not among its shapes ({sorted(sdata.shapes)})"
        )
    shapes = sdata.shapes[tile_key]
    _check_global_identity(shapes, tile_key, store)
    spec = dict((sdata.attrs.get(TILE_SPEC_KEY) or {}).get(tile_key) or {})
    inst = sd_attrs.get("instance_key", INSTANCE_KEY)
    ids = table.obs[inst].to_numpy() if inst in table.obs else np.arange(table.n_obs)
    coords, side = _tile_xy(shapes, ids, spec, store)
    x = table.X
    feats = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)
    require_finite(feats, source=f"feature table {store}/tables/{key}")
    props = dict(sdata.attrs.get(SLIDE_PROPERTIES_KEY) or {})
    mpp = spec.get("mpp") or None
    own = dict(sdata.attrs.get(OWN_KEY) or {})
    attrs = {
        "source": str(store),
        "table_key": key,
        "tile_key": tile_key,
        "tile_spec": spec,
        "slide_properties": props,
        "patch_size_level0": side,
        "slide_dimensions": list(props.get("shape", ()))[::-1] or None,  # (h, w) -> (w, h)
        **({"slide_path": own["slide_path"]} if own.get("slide_path") else {}),
    }
    return FeatureBag(
        features=feats,
        coords=coords,
        patch_size=int(spec["width"]) if spec.get("width") else None,
        mpp=float(mpp) if mpp else None,
        encoder_name=str(own.get("encoder") or key.removesuffix(f"_{tile_key}")),
        slide_id=slide_id or store.stem,
        meta=BagMeta.from_attrs(attrs),
    )


__all__ = [
    "TILE_KEY",
    "is_spatialdata_store",
    "read_spatialdata_bag",
    "split_table_path",
    "table_key_for",
    "write_spatialdata",
]
