"""Ecosystem formats, checked with the real clients (not our readers): ``spatialdata.read_zarr`` and ``wsidata``
open our SpatialData export, ``ome_zarr`` reads the maps, ``geojson`` + ``shapely`` validate the QuPath GeoJSON,
and our caption/train/evaluate run on a store that wsidata itself wrote."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.cli import main

sd = pytest.importorskip("spatialdata", reason="the [spatialdata] extra is in [testing]")
wsidata = pytest.importorskip("wsidata", reason="wsidata is in [testing]")
geojson = pytest.importorskip("geojson")
shapely_geometry = pytest.importorskip("shapely.geometry")
pytest.importorskip("ome_zarr")
anndata = pytest.importorskip("anndata")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

DIM = 94  # builtin:colorstats


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    cfg = PathM3Config.tiny(
        feature_dim=DIM, encoder_name="builtin:colorstats", class_names=("tumour", "normal")
    )
    return build_model(cfg).eval().save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def exported(synthetic_slide: Path, tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The acceptance command: one caption run writes SpatialData, QuPath GeoJSON and OME-Zarr maps."""
    out = tmp_path_factory.mktemp("export")
    paths = {
        k: out / n
        for k, n in [
            ("json", "r.json"),
            ("sd", "slide.zarr"),
            ("geo", "slide.geojson"),
            ("ome", "maps.ome.zarr"),
        ]
    }
    args = ["caption", str(synthetic_slide), "--model", str(tiny_ckpt), "--out", str(paths["json"])]
    args += [
        "--spatialdata",
        str(paths["sd"]),
        "--geojson",
        str(paths["geo"]),
        "--ome-zarr",
        str(paths["ome"]),
    ]
    assert main([*args, "--device", "cpu", "--no-cache", "--quiet", "--per-patch"]) == 0
    return {**paths, "result": json.loads(paths["json"].read_text())}


def test_spatialdata_read_zarr_sees_tiles_and_features(exported: dict) -> None:
    from spatialdata.transformations import Identity, get_transformation

    res = exported["result"]
    n, size = res["num_patches"], res["patch_size_level0"]
    sdata = sd.read_zarr(exported["sd"])
    tiles = sdata.shapes["tiles"]
    assert len(tiles) == n and list(tiles["tile_id"]) == list(range(n))
    assert isinstance(get_transformation(tiles, to_coordinate_system="global"), Identity)
    bounds = np.asarray(tiles.geometry.bounds)  # level-0 boxes at the result's patch corners
    np.testing.assert_array_equal(bounds[:, 0], res["patches"]["x"])
    np.testing.assert_array_equal(bounds[:, 1], res["patches"]["y"])
    np.testing.assert_allclose(bounds[:, 2] - bounds[:, 0], size)
    table = sdata.tables["colorstats_tiles"]
    assert table.shape == (n, DIM)
    attrs = table.uns["spatialdata_attrs"]
    assert (attrs["region"], attrs["region_key"], attrs["instance_key"]) == ("tiles", "library_id", "tile_id")
    np.testing.assert_allclose(table.obs["attention"], res["patches"]["attention"], atol=1e-7)
    assert {"attention_rel", "query_0", "prob_tumour", "prob_normal"} <= set(table.obs.columns)
    assert table.uns["pathm3"]["label"] == res["label"] and table.uns["pathm3"]["caption"] == res["caption"]
    assert sdata.attrs["tile_spec"]["tiles"]["mpp"] == pytest.approx(0.5)
    assert sdata.attrs["napari_pathm3"]["pixels"] == "referenced" and not sdata.images


def test_wsidata_opens_the_export_with_its_slide(exported: dict, synthetic_slide: Path) -> None:
    wsi = wsidata.open_wsi(synthetic_slide, store=str(exported["sd"]))
    spec = wsi.tile_spec("tiles")
    assert spec.base_width == exported["result"]["patch_size_level0"] and spec.width == 224
    adata = wsi.fetch.features_anndata("colorstats", tile_key="tiles")  # wsidata's own feature accessor
    assert adata.shape == (exported["result"]["num_patches"], DIM)
    assert wsi.fetch.n_tiles("tiles") == exported["result"]["num_patches"]


def test_qupath_geojson_is_valid_with_measurement_tiles(exported: dict) -> None:
    text = exported["geo"].read_text()
    doc = geojson.loads(text)
    assert doc.is_valid and "crs" not in doc
    res = exported["result"]
    tiles = [f for f in doc["features"] if f["properties"]["objectType"] == "tile"]
    notes = [f for f in doc["features"] if f["properties"]["objectType"] == "annotation"]
    assert len(tiles) == res["num_patches"] and len(notes) == len(res["top_patches"])
    for f in tiles + notes:
        uuid.UUID(f["id"])
        poly = shapely_geometry.shape(f["geometry"])
        assert poly.is_valid and poly.area == pytest.approx(res["patch_size_level0"] ** 2)
    m = tiles[0]["properties"]["measurements"]
    assert {"PathM3 attention", "PathM3 attention_rel", "PathM3 query_0", "PathM3 prob_tumour"} <= set(m)
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in m.values())  # flat numbers
    cls = notes[0]["properties"]["classification"]
    assert cls["name"] == "PathM3 top patch" and len(cls["color"]) == 3
    assert len({f["id"] for f in doc["features"]}) == len(doc["features"])


def test_ome_zarr_reads_the_maps_in_micrometres(exported: dict) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = next(iter(Reader(parse_url(str(exported["ome"])))()))
    tf = node.metadata["coordinateTransformations"][0]
    scale = next(t["scale"] for t in tf if t["type"] == "scale")
    shift = next(t["translation"] for t in tf if t["type"] == "translation")
    step_um = 224 * 0.5  # one map pixel per grid step (224 level-0 px) at 0.5 µm/px
    assert scale == pytest.approx([1.0, step_um, step_um])
    assert shift[1:] == pytest.approx([(224 - 1) / 2 * 0.5] * 2)  # centre of map pixel (0, 0)
    assert node.metadata["axes"][1]["unit"] == "micrometer"
    names = node.metadata["channel_names"]
    assert names[0] == "attention_rel" and "query_0" in names
    data = np.asarray(node.data[0])
    assert data.shape == (len(names), 10, 14)  # ceil(2048 / 224), ceil(3072 / 224)
    res = exported["result"]
    x, y = res["top_patches"][0]["x"], res["top_patches"][0]["y"]
    rel = res["top_patches"][0]["attention"] * res["num_patches"]
    assert data[0, y // 224, x // 224] == pytest.approx(rel, rel=1e-4)
    assert np.isnan(data[0, 0, 0])  # background: no patch


def _wsidata_store(slide: Path, store: Path, features: np.ndarray, xys: np.ndarray) -> Path:
    """A store written by wsidata itself (what LazySlide's tile_tissues + feature_extraction leave)."""
    from wsidata import TileSpec
    from wsidata.io import add_features, add_tiles

    wsi = wsidata.open_wsi(slide, store=str(store))
    spec = TileSpec(
        height=224, width=224, stride_height=224, stride_width=224, mpp=0.5, tissue_name="tissues"
    )
    add_tiles(wsi, "tiles", xys, spec, np.zeros(len(xys), int))
    add_features(wsi, "resnet_tiles", "tiles", features)
    wsi.write()
    return store


@pytest.mark.slow  # trains two epochs, then captions and evaluates: ~15 s
def test_train_caption_evaluate_on_wsidata_stores(synthetic_slide: Path, tmp_path: Path) -> None:
    feats_dir = tmp_path / "lazyslide"
    feats_dir.mkdir()
    rng = np.random.default_rng(0)
    xys = np.array([[448 + 224 * i, 448 + 224 * j] for i in range(4) for j in range(3)])
    rows = ["slide,label,caption,split"]
    for k in range(6):
        label = "ab"[k % 2]
        feats = rng.normal(size=(len(xys), 16)).astype(np.float32) + (2.0 if label == "b" else 0.0)
        _wsidata_store(synthetic_slide, feats_dir / f"s{k}.zarr", feats, xys)
        rows.append(f"s{k},{label},class {label} tissue.,{'train' if k < 4 else 'test'}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    common = ["--manifest", str(tmp_path / "m.csv"), "--features", str(feats_dir), "--device", "cpu"]
    train = ["train", *common, "--out", str(run), "--tiny", "--epochs", "2", "--batch-size", "2"]
    assert main([*train, "--mode", "image", "--alpha", "1"]) == 0
    out = tmp_path / "res.json"
    rc = main(
        ["caption", str(feats_dir / "s1.zarr"), "--model", str(run / "best"), "--out", str(out), "--quiet"]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["num_patches"] == len(xys) and res["patch_size_level0"] == 224.0
    assert {(p["x"], p["y"]) for p in res["top_patches"]} <= {tuple(v) for v in xys.tolist()}
    cohort = tmp_path / "cohort.h5ad"
    rc = main(
        ["evaluate", str(run / "best"), *common, "--split", "test", "--no-generate", "--cohort", str(cohort)]
    )
    assert rc == 0
    table = anndata.read_h5ad(cohort)
    assert list(table.obs_names) == ["s4", "s5"] and table.n_vars > 0  # slide embeddings
    assert list(table.obs["label"]) == ["a", "b"] and set(table.obs["prediction"]) <= {"a", "b"}
    np.testing.assert_allclose(table.obs["prob_a"] + table.obs["prob_b"], 1.0, atol=1e-5)
    assert table.obs["features_path"].str.endswith(".zarr").all()
    assert cohort.with_suffix(".csv").read_text().count("\n") == 3


def test_wsidata_store_with_two_feature_tables_needs_a_table_path(
    synthetic_slide: Path, tmp_path: Path
) -> None:
    from wsidata.io import add_features

    from napari_pathm3.errors import FeatureStoreError
    from napari_pathm3.io.interop import read_feature_file

    xys = np.array([[448, 448], [672, 448]])
    store = _wsidata_store(synthetic_slide, tmp_path / "s.zarr", np.ones((2, 4), np.float32), xys)
    wsi = wsidata.open_wsi(synthetic_slide, store=str(store))
    add_features(wsi, "uni_tiles", "tiles", np.zeros((2, 8), np.float32))
    wsi.write_element("uni_tiles")
    with pytest.raises(FeatureStoreError, match="2 feature tables"):
        read_feature_file(store)
    bag = read_feature_file(store / "tables" / "uni_tiles")
    assert bag.features.shape == (2, 8) and bag.coords.tolist() == xys.tolist() and bag.mpp == 0.5


def test_batch_captioning_writes_one_cohort_table(
    exported: dict, synthetic_slide: Path, tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A slide and a SpatialData feature bag captioned in one run: one .h5ad row each, embeddings as X."""
    bag = tmp_path / "bag.zarr"
    import shutil

    shutil.copytree(exported["sd"], bag)
    cohort = tmp_path / "cohort.h5ad"
    args = ["caption", str(synthetic_slide), str(bag), "--model", str(tiny_ckpt), "--cohort", str(cohort)]
    assert main([*args, "--device", "cpu", "--no-cache", "--quiet"]) == 0
    table = anndata.read_h5ad(cohort)
    assert list(table.obs_names) == ["blobs", "bag"] and table.n_vars == 32  # tiny Q-Former width
    assert np.isfinite(table.X).all()
    np.testing.assert_allclose(table.X[0], table.X[1], atol=1e-4)  # the same features, the same embedding
    assert set(table.obs["prediction"]) <= {"tumour", "normal"}
    np.testing.assert_allclose(table.obs["prob_tumour"] + table.obs["prob_normal"], 1.0, atol=1e-5)
    assert list(table.obs["slide_path"]) == [str(synthetic_slide), str(bag)]
    assert cohort.with_suffix(".csv").read_text().count("\n") == 3
    bad = ["caption", str(synthetic_slide), str(bag), "--model", str(tiny_ckpt), "--out", "x.json"]
    assert main([*bad, "--cohort", str(cohort)]) != 0
    assert "with several slides use --cohort only" in capsys.readouterr().err
    assert main(bad) != 0 and "pass --cohort OUT.h5ad" in capsys.readouterr().err


def test_extract_format_spatialdata_is_found_by_slide_id(synthetic_slide: Path, tmp_path: Path) -> None:
    from napari_pathm3.training.data import load_features, resolve_features

    out = tmp_path / "sd"
    args = ["extract", str(synthetic_slide), "--out", str(out), "--format", "spatialdata"]
    assert main([*args, "--encoder", "builtin:colorstats", "--device", "cpu", "--no-progress"]) == 0
    store = out / "blobs.zarr"
    sdata = sd.read_zarr(store)
    assert sdata.tables["colorstats_tiles"].shape == (18, DIM) and len(sdata.shapes["tiles"]) == 18
    wsi = wsidata.open_wsi(synthetic_slide, store=str(store))
    assert wsi.tile_spec("tiles").base_width == 224 and wsi.properties.mpp == pytest.approx(0.5)
    feats, coords = load_features(resolve_features("blobs", out))  # what train/evaluate do with a key
    assert feats.shape == (18, DIM) and coords.shape == (18, 2)
    # a folder that is not a SpatialData store is never replaced
    (out / "other.zarr").mkdir()
    from napari_pathm3.errors import FeatureStoreError
    from napari_pathm3.io.spatialdata import TileTable, write_spatialdata

    with pytest.raises(FeatureStoreError, match="not ours"):
        write_spatialdata(
            out / "other.zarr",
            TileTable(coords=coords, size_level0=224, features=feats, encoder_name="x", tile_spec={}),
            slide_properties={},
            overwrite=True,
        )


def test_with_pixels_copies_the_slide_image(synthetic_slide: Path, tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "px.zarr"
    args = [
        "caption",
        str(synthetic_slide),
        "--model",
        str(tiny_ckpt),
        "--spatialdata",
        str(out),
        "--with-pixels",
    ]
    assert main([*args, "--out", str(tmp_path / "r.json"), "--device", "cpu", "--no-cache", "--quiet"]) == 0
    sdata = sd.read_zarr(out)
    assert sdata.attrs["napari_pathm3"]["pixels"] == "copied"
    level0 = sdata.images["wsi"]["scale0"]["image"]  # a multiscale image: level 0 first
    assert tuple(level0.shape) == (3, 2048, 3072)
    from napari_pathm3.io.slide import open_slide

    with open_slide(synthetic_slide) as slide:
        want = np.asarray(slide.read_region((448, 448), 0, (64, 64)))[..., :3]
    got = np.asarray(level0[:, 448:512, 448:512]).transpose(1, 2, 0)
    np.testing.assert_array_equal(got, want)
