"""QuPath GeoJSON in (annotations with classification objects -> labelled shapes -> training bags), TRIDENT/CLAM
``.h5`` attributes honoured, and the one-line error when the [spatialdata] extra is missing."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.errors import PathM3Error

geojson = pytest.importorskip("geojson", reason="the [spatialdata] extra is in [testing]")
shapely_geometry = pytest.importorskip("shapely.geometry")


def _square(x: float, y: float, s: float) -> list[list[float]]:
    return [[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]


def qupath_export() -> list[dict]:
    """What QuPath 0.5's *Export objects as GeoJSON* writes (a bare list of Features, no FeatureCollection)."""
    tumour = {"name": "Tumor", "color": [200, 0, 0]}
    return [
        {
            "type": "Feature",
            "id": str(uuid.uuid4()),
            "geometry": {"type": "Polygon", "coordinates": [_square(0, 0, 1000)]},
            "properties": {"objectType": "annotation", "classification": tumour, "isLocked": False},
        },
        {
            "type": "Feature",
            "id": str(uuid.uuid4()),
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [[_square(2000, 0, 500)], [_square(3000, 0, 500)]],
            },
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Stroma", "color": [0, 150, 0]},
            },
        },
        {  # unclassified: no label, not a training region
            "type": "Feature",
            "id": str(uuid.uuid4()),
            "geometry": {"type": "Polygon", "coordinates": [_square(5000, 0, 200)]},
            "properties": {"objectType": "annotation"},
        },
        {  # a detection, not an annotation
            "type": "Feature",
            "id": str(uuid.uuid4()),
            "geometry": {"type": "Polygon", "coordinates": [_square(10, 10, 5)]},
            "properties": {"objectType": "detection", "classification": tumour},
        },
    ]


def test_qupath_shaped_geojson_is_valid_and_imports_as_labelled_shapes(tmp_path: Path) -> None:
    from napari_pathm3._napari.geojson_reader import napari_get_geojson_reader

    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(qupath_export()))
    assert geojson.FeatureCollection(
        json.loads(path.read_text())
    ).is_valid  # the real client agrees it is valid
    reader = napari_get_geojson_reader(str(path))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(path))
    assert kind == "shapes" and len(data) == 5  # 2 parts of the MultiPolygon; the detection included here
    assert kwargs["features"]["class"] == ["Tumor", "Stroma", "Stroma", "", "Tumor"]
    assert kwargs["features"]["object_type"][-1] == "detection"
    np.testing.assert_allclose(data[0][1], [0, 1000])  # (y, x) of the second corner: napari order
    assert kwargs["edge_color"][0][:3] == pytest.approx([200 / 255, 0, 0])
    assert napari_get_geojson_reader(str(tmp_path / "a.png")) is None


@pytest.mark.slow  # trains a tiny model on the slide's patches: ~10 s
def test_qupath_labels_train_here(synthetic_slide: Path, tmp_path: Path) -> None:
    """Annotations as QuPath writes them, over the two tissue blobs of the test slide, train a model."""
    from napari_pathm3 import api

    doc = qupath_export()
    doc[0]["geometry"]["coordinates"] = [_square(448, 448, 672)]  # blob 1 (x 448-1344, y 448-1120)
    doc[1]["geometry"] = {"type": "Polygon", "coordinates": [_square(2016, 1120, 448)]}  # blob 2
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(doc))
    regions = api.read_regions(path)
    assert [r.label for r in regions] == ["Tumor", "Stroma"]  # unclassified and detections left out
    result = api.train(
        [(synthetic_slide, regions)],
        output_dir=tmp_path / "run",
        encoder="builtin:colorstats",
        device="cpu",
        model_size="tiny",
        epochs=1,
    )
    config = json.loads((result.best_dir / "config.json").read_text())
    assert config["class_names"] == ["Stroma", "Tumor"]


def test_our_geojson_reads_back_with_classes(tmp_path: Path) -> None:
    from napari_pathm3.io import qupath

    feats = qupath.tile_features(np.array([[0, 0], [224, 0]]), 224, {"m": np.array([1.0, np.nan])})
    note = qupath.feature(
        np.array([[0, 0], [10, 0], [10, 10]]),
        object_type="annotation",
        id=qupath.object_id("a"),
        label="Tumor",
        color=(1, 2, 3),
    )
    doc = qupath.feature_collection([*feats, note])
    assert geojson.loads(json.dumps(doc)).is_valid
    assert "m" not in feats[1]["properties"]["measurements"]  # NaN is left out, never written
    back = qupath.parse_geojson(doc, object_types=None)
    assert [a.object_type for a in back] == ["tile", "tile", "annotation"]
    assert back[2].label == "Tumor" and back[2].color == (1, 2, 3) and back[0].measurements == {"m": 1.0}
    assert shapely_geometry.shape(feats[0]["geometry"]).area == 224 * 224
    with pytest.raises(PathM3Error, match="not GeoJSON"):
        qupath.parse_geojson({"type": "Point", "coordinates": [0, 0]})
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(PathM3Error, match="not a readable GeoJSON"):
        qupath.read_geojson(bad)


def test_trident_attributes_set_the_level0_patch_size(tmp_path: Path) -> None:
    import h5py

    from napari_pathm3.inference import bag_grid
    from napari_pathm3.io.interop import read_feature_file

    path = tmp_path / "slide.h5"
    with h5py.File(path, "w") as fh:
        fh["features"] = np.ones((3, 4), np.float32)
        c = fh.create_dataset("coords", data=np.array([[0, 0], [512, 0], [0, 512]]))
        c.attrs.update(
            patch_size=256, patch_size_level0=512, target_magnification=20, level0_magnification=40
        )
    bag = read_feature_file(path)
    assert bag.meta.patch_size_level0 == 512.0 and bag.mpp == pytest.approx(0.5)
    grid = bag_grid(bag)
    assert grid.size_level0 == 512.0 and grid.slide_dimensions == (1024, 1024)
    from napari_pathm3.training.regions import Region, bags_from_regions

    # a region over the first patch's centre (256, 256) only: the level-0 size places the centres
    (one,) = bags_from_regions(
        bag, [Region(label=0, polygon=np.array([[200, 200], [300, 200], [300, 300], [200, 300]]))]
    )
    assert len(one) == 1
    clam = tmp_path / "clam.h5"
    with h5py.File(clam, "w") as fh:
        fh["features"] = np.ones((2, 4), np.float32)
        c = fh.create_dataset("coords", data=np.array([[0, 0], [1024, 0]]))
        c.attrs.update(patch_size=256, patch_level=1, downsample=[4.0, 4.0])
    assert read_feature_file(clam).meta.patch_size_level0 == 1024.0


def test_missing_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['spatialdata'] = None\n"
        "from napari_pathm3.io.spatialdata import read_spatialdata_bag\n"
        "try:\n    read_spatialdata_bag('x.zarr')\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().count("\n") == 0
    assert out.startswith("MissingExtraError") and "pip install 'napari-pathm3[spatialdata]'" in out
