"""The "Caption slide" widget driven headless under Xvfb: layers, alignment, cancel, errors, responsiveness."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3._types import Progress, Stage
from napari_pathm3.api import text_overlay
from napari_pathm3.errors import Cancelled
from napari_pathm3.widgets._registry import DEMO_NAME, registry
from napari_pathm3.widgets.caption import CaptionWidget

CLASSES = ("tumour", "normal")  # the tiny_ckpt fixture's classes
TIMEOUT = 120_000  # ms; the CI machines are shared


def _make(make_napari_viewer, add_slide, slide: Path, ckpt: Path, tmp_path: Path):
    viewer = make_napari_viewer()
    layer = add_slide(viewer, slide)
    widget = CaptionWidget(viewer)
    widget.cache_dir = tmp_path / "features"
    widget._slide.value = layer
    widget._model_dir.value = ckpt  # registers the folder and selects it
    widget._device.value = "cpu"
    return viewer, layer, widget


def _wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)


def test_run_adds_aligned_layers(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tiny_ckpt, tmp_path
) -> None:
    viewer, slide_layer, widget = _make(make_napari_viewer, add_slide, synthetic_slide, tiny_ckpt, tmp_path)
    assert widget._model.value == registry.register(tiny_ckpt)
    assert widget._note.value == ""
    widget._on_run()
    assert widget.running and not widget._run.enabled and widget._cancel.enabled
    _wait(qtbot, widget)
    res = widget.result
    assert res is not None and res.num_patches == 18
    kinds = {lay.metadata.get("kind"): lay for lay in viewer.layers if "kind" in lay.metadata}
    assert set(kinds) == {"tissue", "attention", "query_attention", "top_patches"}
    assert type(kinds["tissue"]).__name__ == "Labels"
    assert type(kinds["attention"]).__name__ == "Image" and kinds["attention"].data.shape == (10, 14)
    # hidden per-query stack: one query in the layer (no slider), all four in its metadata
    assert kinds["query_attention"].data.shape == (1, 10, 14)
    assert kinds["query_attention"].metadata["query_stack"].shape == (4, 10, 14)
    assert type(kinds["top_patches"]).__name__ == "Shapes" and len(kinds["top_patches"].data) == 8
    # every result layer shares the slide's world units: a patch centre lands on the same world point
    mpp = np.asarray(slide_layer.scale)
    i = int(res.top_indices[0])
    x, y = res.coords[i]
    centre_world = (np.array([y, x]) + (res.grid.size_level0 - 1) / 2) * mpp
    heat = kinds["attention"]
    pix = np.round(heat.world_to_data(centre_world)).astype(int)
    # fixed scale: log2 of attention relative to uniform 1/N, contrast limits -3..3 whatever the spread
    want = np.log2(res.attention[i] / res.attention.sum() * res.num_patches)
    assert heat.data[tuple(pix)] == pytest.approx(want, abs=1e-5)
    assert tuple(heat.contrast_limits) == (-3.0, 3.0) and heat.colorbar.visible
    assert "log2" in widget._output.value and "uniform" in widget._output.value
    np.testing.assert_allclose(kinds["top_patches"].scale, slide_layer.scale)
    np.testing.assert_allclose(kinds["query_attention"].scale[1:], heat.scale)
    for lay in kinds.values():
        meta = lay.metadata["pathm3"]
        assert meta["label"] in CLASSES and set(meta["probabilities"]) == set(CLASSES)
        assert meta["caption"] == res.caption
    assert f"Class: {res.label}" in widget._output.value
    overlay = text_overlay(viewer)
    assert res.label in overlay.text and overlay.visible
    assert widget._output.native.isReadOnly()
    # exports
    assert json.loads(widget.export(tmp_path / "r.json").read_text())["label"] == res.label
    assert widget.export(tmp_path / "r.csv").read_text().startswith("index,")
    assert json.loads(widget.export(tmp_path / "top.geojson").read_text())["features"]
    if importlib.util.find_spec("spatialdata") is not None:  # the [spatialdata] extra (in [testing])
        import spatialdata

        sdata = spatialdata.read_zarr(widget.export(tmp_path / "s.zarr", "spatialdata"))
        assert sdata.tables[next(iter(sdata.tables))].n_obs == res.num_patches
        assert (widget.export(tmp_path / "m.ome.zarr", "ome-zarr") / "zarr.json").is_file()
    assert widget.export(tmp_path / "shot.png").stat().st_size > 0
    # a second run replaces the layers instead of piling them up
    widget._on_run()
    _wait(qtbot, widget)
    assert sum(1 for lay in viewer.layers if lay.metadata.get("kind") == "attention") == 1


def test_region_from_selected_shapes(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tiny_ckpt, tmp_path
) -> None:
    viewer, slide_layer, widget = _make(make_napari_viewer, add_slide, synthetic_slide, tiny_ckpt, tmp_path)
    mpp = slide_layer.scale[0]
    # drawn in world units (µm), as a user draws on a fresh shapes layer: blob 1, and a decoy on blob 2
    blob1 = np.array([[400, 400], [400, 1400], [1150, 1400], [1150, 400]], float) * mpp
    blob2 = np.array([[1100, 2000], [1100, 2500], [1800, 2500], [1800, 2000]], float) * mpp
    shapes = viewer.add_shapes([blob1, blob2], shape_type="polygon", name="my region")
    shapes.selected_data = {0}
    widget._region.reset_choices()
    widget._region.value = shapes
    widget._on_run()
    _wait(qtbot, widget)
    assert widget.result is not None and widget.result.num_patches == 12
    assert "selected region" in widget._output.value


def test_cancel_mid_run_then_rerun(make_napari_viewer, add_slide, qtbot, cmu_slide_path, tmp_path) -> None:
    """Cancel during feature extraction: the cache is left usable and the next run completes."""
    from napari_pathm3.config import PathM3Config, TilingConfig
    from napari_pathm3.model import build_model

    # small patches on the real slide: ~200 of them (4 batches of 64), so extraction lasts long enough to be
    # cancelled after its first batch; not more: every run's word maps cost one decoder pass per patch
    cfg = PathM3Config.tiny(
        feature_dim=94,
        encoder_name="builtin:colorstats",
        class_names=CLASSES,
        tiling=TilingConfig(patch_size=112, target_mpp=0.5),
    )
    ckpt = build_model(cfg).eval().save_pretrained(tmp_path / "small-patches")
    viewer, _, widget = _make(make_napari_viewer, add_slide, cmu_slide_path, ckpt, tmp_path)
    stages: list[Stage] = []

    def on_progress(event: Progress) -> None:
        stages.append(event.within or event.stage)
        if event.within is Stage.FEATURES and 0 < event.done < event.total:
            widget._on_cancel()

    job = widget._on_run()
    job._relay.progressed.connect(on_progress)
    _wait(qtbot, widget)
    assert isinstance(job.error, Cancelled), job.error
    assert widget.result is None and widget._stage.value == "cancelled"
    assert not any(lay.metadata.get("kind") for lay in viewer.layers)
    widget._on_run()
    _wait(qtbot, widget)
    assert widget._job.error is None
    first = widget.result
    assert first is not None and first.num_patches > 150
    # a third run reads the now complete cache and gives the same answer
    widget._on_run()
    _wait(qtbot, widget)
    np.testing.assert_allclose(widget.result.attention, first.attention, rtol=1e-5)
    assert widget.result.timings["features"] < first.timings["features"]


def test_unreadable_model_folder_notifies(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tmp_path, errors
) -> None:
    bad = tmp_path / "broken-model"
    bad.mkdir()
    (bad / "config.json").write_text('{"pathm3_format": 1, "feature_dim": "x"}')
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    viewer, _, widget = _make(make_napari_viewer, add_slide, synthetic_slide, bad, tmp_path)
    job = widget._on_run()
    _wait(qtbot, widget)
    assert job.error is not None
    assert errors and "broken-model" in errors[-1] and errors[-1].startswith("PathM3:")
    assert widget._stage.value == "failed" and widget._run.enabled
    assert not any(lay.metadata.get("kind") for lay in viewer.layers)


def test_no_slide_layer_notifies(make_napari_viewer, errors) -> None:
    widget = CaptionWidget(make_napari_viewer())
    assert widget._on_run() is None
    assert errors and "no slide layer" in errors[-1]


def test_event_loop_keeps_running(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tiny_ckpt, tmp_path
) -> None:
    from qtpy.QtCore import QTimer

    _, _, widget = _make(make_napari_viewer, add_slide, synthetic_slide, tiny_ckpt, tmp_path)
    ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(widget.running))
    timer.start()
    widget._on_run()
    _wait(qtbot, widget)
    timer.stop()
    assert sum(ticks) >= 5  # the timer fired many times while the worker ran


def test_demo_model_is_listed_with_disclaimer(make_napari_viewer) -> None:
    widget = CaptionWidget(make_napari_viewer())
    assert DEMO_NAME in widget._model.choices
    widget._model.value = DEMO_NAME
    assert "NOT diagnostic" in widget._note.value


def test_opens_from_the_plugin_menu(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tiny_ckpt, tmp_path
) -> None:
    """Through npe2 and napari's plugin proxy (private attributes refused), as users open it."""
    viewer = make_napari_viewer()
    layer = add_slide(viewer, synthetic_slide)
    _, widget = viewer.window.add_plugin_dock_widget("napari-pathm3", "Caption slide")
    assert isinstance(widget, CaptionWidget)
    widget.cache_dir = tmp_path / "features"
    assert [name for name, _ in widget._slide_choices()] == [layer.name]
    widget._model_dir.value = tiny_ckpt
    widget._device.value = "cpu"
    widget._on_run()
    _wait(qtbot, widget)
    assert widget._job.error is None and widget.result is not None
    _, train = viewer.window.add_plugin_dock_widget("napari-pathm3", "Train model")
    assert layer.name in [name for name, _ in train._slide_choices()]


def test_overlay_belongs_to_its_slide(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, blank_slide, tiny_ckpt, tmp_path
) -> None:
    viewer, slide_a, widget = _make(make_napari_viewer, add_slide, synthetic_slide, tiny_ckpt, tmp_path)
    slide_b = add_slide(viewer, blank_slide)
    widget._slide.value = slide_a
    widget._on_run()
    _wait(qtbot, widget)
    overlay = text_overlay(viewer)
    text_a = overlay.text
    assert overlay.visible and "blobs" in text_a
    viewer.layers.selection.active = slide_b  # another slide without a result: no caption over it
    assert not overlay.visible
    viewer.layers.selection.active = slide_a
    assert overlay.visible and overlay.text == text_a
    heat = next(lay for lay in viewer.layers if lay.metadata.get("kind") == "attention")
    viewer.layers.selection.active = slide_b
    viewer.layers.selection.active = heat  # a result layer brings its own slide's text back
    assert overlay.visible and overlay.text == text_a


def test_long_caption_wraps_and_warnings_replace_it(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tiny_ckpt, tmp_path
) -> None:
    from napari_pathm3.layers import OVERLAY_WIDTH, overlay_text

    viewer, _, widget = _make(make_napari_viewer, add_slide, synthetic_slide, tiny_ckpt, tmp_path)
    widget._on_run()
    _wait(qtbot, widget)
    res = dataclasses.replace(widget.result, caption="word " * 60)  # results are immutable
    assert max(len(line) for line in overlay_text(res).splitlines()) <= OVERLAY_WIDTH + 20
    res = dataclasses.replace(res, warnings=("this model has not learned to caption",), caption_withheld=True)
    widget._on_result(res)
    assert not widget._warning.native.isHidden() and "not learned to caption" in widget._warning.value
    assert "withheld" in widget._output.value and "word word" not in widget._output.value
    shown = " ".join(text_overlay(viewer).text.split())  # the overlay wraps its lines
    assert "not learned to caption" in shown and "word word" not in shown


def test_user_region_layer_gets_slide_units_no_unit_toasts(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tiny_ckpt, tmp_path, monkeypatch
) -> None:
    import napari._vispy.canvas as canvas

    toasts: list[str] = []
    monkeypatch.setattr(canvas, "show_warning", lambda msg, *a, **k: toasts.append(str(msg)))
    viewer, slide_layer, widget = _make(make_napari_viewer, add_slide, synthetic_slide, tiny_ckpt, tmp_path)
    mpp = slide_layer.scale[0]
    box = np.array([[400, 400], [400, 1400], [1150, 1400], [1150, 400]], float) * mpp
    shapes = viewer.add_shapes([box], shape_type="polygon", name="my region")
    assert [str(u) for u in shapes.units] == [str(u) for u in slide_layer.units]
    widget._region.reset_choices()
    widget._region.value = shapes
    widget._on_run()
    _wait(qtbot, widget)
    qtbot.wait(50)  # let the canvas draw the new layers
    assert widget.result is not None
    assert sum("Inconsistent units" in t for t in toasts) <= 1  # was once per added layer


def test_thread_and_tissue_settings_reach_the_job(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tiny_ckpt, tmp_path, monkeypatch
) -> None:
    import napari_pathm3.threads as threads

    seen: list = []
    real = threads.apply_thread_policy
    monkeypatch.setattr(threads, "apply_thread_policy", lambda n=None: seen.append(n) or real(1))
    _, _, widget = _make(make_napari_viewer, add_slide, synthetic_slide, tiny_ckpt, tmp_path)
    assert widget._threads.value == "auto" and "1" in widget._threads.choices
    widget._threads.value = "1"
    widget._tissue_threshold.value = 0.9  # nothing on the synthetic slide is that saturated
    job = widget._on_run()
    _wait(qtbot, widget)
    assert seen and seen[0] == "1"
    assert type(job.error).__name__ == "NoTissueError" and "threshold" in str(job.error)
    widget._tissue_threshold.value = 0.0  # automatic again
    assert widget.tissue_config().threshold is None


def test_kidney_tiff_without_mpp_gets_a_result(
    make_napari_viewer, add_slide, qtbot, slides_dir, tiny_ckpt, tmp_path
) -> None:
    """kidney-48-5.tif (plain TIFF, no µm/px, one small faint piece of tissue) said "no tissue detected":
    tissue is now found, the widget tiles it at level 0 in pixels, and the min-tissue setting gets a result."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no microns-per-pixel" is expected here
        viewer, _, widget = _make(
            make_napari_viewer, add_slide, slides_dir / "kidney-48-5.tif", tiny_ckpt, tmp_path
        )
    job = widget._on_run()
    _wait(qtbot, widget)
    assert type(job.error).__name__ == "NoTissueError" and "minimum tissue fraction" in str(job.error)
    widget._min_tissue.value = 0.05
    job = widget._on_run()
    _wait(qtbot, widget)
    assert job.error is None and widget.result.num_patches >= 1
    assert "no µm/px" in widget._output.value
