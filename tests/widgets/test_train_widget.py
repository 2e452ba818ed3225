"""The "Train model" widget: regions from layers -> checkpoint -> selectable in "Caption slide" at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.errors import PathM3Error
from napari_pathm3.widgets._registry import registry
from napari_pathm3.widgets.caption import CaptionWidget
from napari_pathm3.widgets.train import TrainWidget, regions_from_layer

TIMEOUT = 180_000

#: level-0 (y, x) rectangles around the synthetic slide's two blobs (see tests/conftest.py BLOBS)
BLOB1 = np.array([[440, 440], [440, 1350], [1130, 1350], [1130, 440]], float)
BLOB2 = np.array([[1110, 2000], [1110, 2480], [1800, 2480], [1800, 2000]], float)


def _annotations(viewer, mpp: float):
    return viewer.add_shapes(
        [BLOB1 * mpp, BLOB2 * mpp],
        shape_type="polygon",
        name="annotations",
        features={"class": ["tumour", "normal"], "caption": ["a tumour region.", ""]},
    )


def test_train_then_caption_with_new_model(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tmp_path
) -> None:
    viewer = make_napari_viewer()
    slide = add_slide(viewer, synthetic_slide)
    shapes = _annotations(viewer, float(slide.scale[0]))
    widget = TrainWidget(viewer)
    widget.cache_dir = tmp_path / "features"
    assert widget._epochs.value == 50 and widget._lr.value == pytest.approx(2e-3)  # the tiny preset's lr
    widget._slides.value = [slide]
    widget._annotations.value = [shapes]
    widget._out.value = tmp_path / "my-model"
    widget._device.value = "cpu"
    widget._mode.value = "image"
    widget._epochs.value = 2
    widget._batch.value = 2
    widget._sub_bags.value = 1
    widget._lr.value = 1e-3
    caption = CaptionWidget(viewer)  # opened before training: must see the new model without a restart
    widget._on_train()
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert widget._job.error is None, widget._job.error
    assert (tmp_path / "my-model" / "best" / "config.json").is_file()
    assert [r["epoch"] for r in widget.history] == [1, 2]
    assert widget._plot.uses_matplotlib and widget._plot._ax.lines
    assert widget.model_name in registry.names() and widget.model_name in caption._model.choices
    caption.cache_dir = tmp_path / "features"
    caption._slide.value = slide
    caption._model.value = widget.model_name
    caption._device.value = "cpu"
    caption._on_run()
    qtbot.waitUntil(lambda: not caption.running, timeout=TIMEOUT)
    assert caption.result is not None
    assert set(caption.result.probabilities) == {"normal", "tumour"}
    assert caption.result.grid.patch_size == 224


def test_regions_from_shapes_and_labels(make_napari_viewer, add_slide, synthetic_slide) -> None:
    viewer = make_napari_viewer()
    slide = add_slide(viewer, synthetic_slide)
    mpp = float(slide.scale[0])
    shapes = _annotations(viewer, mpp)
    regs = regions_from_layer(shapes, (mpp, mpp))
    assert [r.label for r in regs] == ["tumour", "normal"]
    assert regs[0].caption == "a tumour region." and regs[1].caption == "normal."  # empty -> templated
    np.testing.assert_allclose(regs[0].polygon, BLOB1[:, ::-1])
    # a labels layer drawn at 1/4 resolution with the slide's units: label 2 = "normal" over blob 2
    labels = np.zeros((512, 768), np.int32)
    labels[1120 // 4 : 1792 // 4, 2016 // 4 : 2464 // 4] = 2
    s = 4 * mpp
    lay = viewer.add_labels(
        labels,
        scale=(s, s),
        translate=(1.5 * mpp, 1.5 * mpp),
        features={"index": [0, 2], "class": ["", "normal"]},
    )
    (reg,) = regions_from_layer(lay, (mpp, mpp))
    assert reg.label == "normal"
    inside = reg.contains(np.array([[2017.0, 1121.0], [2462.0, 1790.0], [2015.0, 1121.0], [100.0, 100.0]]))
    assert inside.tolist() == [True, True, False, False]


def test_missing_class_column_notifies(make_napari_viewer, add_slide, synthetic_slide, errors) -> None:
    viewer = make_napari_viewer()
    slide = add_slide(viewer, synthetic_slide)
    shapes = viewer.add_shapes([BLOB1], shape_type="polygon", name="unlabelled")
    widget = TrainWidget(viewer)
    widget._slides.value = [slide]
    widget._annotations.value = [shapes]
    assert widget._on_train() is None
    assert errors and "'class' column" in errors[-1]
    with pytest.raises(PathM3Error):
        regions_from_layer(shapes, (0.5, 0.5))


def test_size_preset_sets_lr_and_alpha(make_napari_viewer) -> None:
    from napari_pathm3.config import PathM3Config

    widget = TrainWidget(make_napari_viewer())
    for size in ("small", "paper", "tiny"):
        widget._size.value = size
        cfg = PathM3Config.preset(size, feature_dim=8, encoder_name="", class_names=("a", "b"))
        assert widget._lr.value == pytest.approx(cfg.optim.lr) and widget._alpha.value == pytest.approx(
            cfg.alpha
        )
    assert widget._alpha.value == pytest.approx(0.1)  # scratch caption LMs: captions weighted 0.9 (measured)


def test_sparkline_fallback() -> None:
    from napari_pathm3.widgets._plot import sparkline

    assert sparkline([3.0, 2.0, 1.0]) == "█▄▁"
    assert sparkline([]) == ""


def test_manifest_widgets_resolve() -> None:
    import yaml

    manifest = yaml.safe_load(
        (Path(__file__).parents[2] / "src" / "napari_pathm3" / "napari.yaml").read_text()
    )
    names = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    import importlib

    for cid in ("napari-pathm3.caption_widget", "napari-pathm3.train_widget"):
        module, _, attr = names[cid].partition(":")
        assert callable(getattr(importlib.import_module(module), attr))


def test_thread_setting_reaches_training(
    make_napari_viewer, add_slide, synthetic_slide, monkeypatch, qtbot
) -> None:
    import napari_pathm3.threads as threads
    import napari_pathm3.training.region_trainer as region_trainer
    from napari_pathm3.widgets.train import TrainWidget

    seen: list = []
    monkeypatch.setattr(threads, "apply_thread_policy", lambda n=None: seen.append(n))
    monkeypatch.setattr(region_trainer, "train_on_regions", lambda regions, *a, **kw: "done")
    viewer = make_napari_viewer()
    layer = add_slide(viewer, synthetic_slide)
    box = np.array([[100, 100], [100, 300], [300, 300], [300, 100]], float) * layer.scale[0]
    viewer.add_shapes([box, box + 200], shape_type="polygon", name="ann", features={"class": ["a", "b"]})
    widget = TrainWidget(viewer)
    widget._on_result = lambda result: None
    widget._slides.value = [layer]
    widget._annotations.value = [viewer.layers["ann"]]
    assert widget._threads.value == "auto"
    widget._threads.value = "2" if "2" in widget._threads.choices else "1"
    job = widget._on_train()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert job.error is None and seen == [widget._threads.value]


def test_qupath_geojson_opens_over_the_slide_as_training_regions(
    make_napari_viewer, add_slide, synthetic_slide, tmp_path
) -> None:
    """A QuPath export dropped on the viewer: a shapes layer over the open slide whose regions are the
    GeoJSON's level-0 polygons with QuPath's classes (what the Train widget trains on)."""
    import json

    viewer = make_napari_viewer()
    slide_layer = add_slide(viewer, synthetic_slide)
    ring = [[448, 448], [1120, 448], [1120, 1120], [448, 1120], [448, 448]]
    doc = [
        {
            "type": "Feature",
            "id": "5b0a7c3e-0000-4000-8000-000000000001",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
            },
        }
    ]
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(doc))
    (layer,) = viewer.open(str(path), plugin="napari-pathm3")
    np.testing.assert_allclose(layer.scale, slide_layer.scale)  # placed over the slide (µm)
    (region,) = regions_from_layer(layer, tuple(slide_layer.scale))
    assert region.label == "Tumor"
    np.testing.assert_allclose(region.polygon, np.asarray(ring[:-1], float))
