"""µm/px in the widgets (issue 27 item 1): a slide without µm/px gets a notification at open, its µm/px can be
entered in the widget, the run then tiles at the model's physical patch size, about as fast as the CLI with
``--mpp``; and the widget, the CLI and ``api`` lay the same grid for the same model and slide."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import blob_image, write_pyramid_tiff

from napari_pathm3.config import TilingConfig
from napari_pathm3.jobs import CaptionRequest
from napari_pathm3.widgets._mpp import expectation, model_tiling
from napari_pathm3.widgets._registry import registry
from napari_pathm3.widgets.caption import CaptionWidget
from napari_pathm3.widgets.train import TrainWidget

TIMEOUT = 180_000
DOC_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
#: tissue blobs (x, y, w, h) of a 4096 x 3072 slide: at 0.25 µm/px a 224-px patch at 0.5 µm/px is 448 px
BLOBS = [(448, 448, 1792, 1344), (2688, 1344, 896, 1344)]


@pytest.fixture(scope="module")
def no_mpp_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pyramidal TIFF without resolution tags (as a TCGA slide without µm/px)."""
    path = tmp_path_factory.mktemp("nompp") / "no-mpp.tif"
    return write_pyramid_tiff(path, blob_image(3072, 4096, blobs=BLOBS), mpp=None, levels=3)


@pytest.fixture
def half_tissue_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint trained with min_tissue_fraction=0.5 (not the widget's old fixed 0.25)."""
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    cfg = PathM3Config.tiny(feature_dim=94, encoder_name="builtin:colorstats", class_names=("a", "b"))
    cfg = dataclasses.replace(
        cfg, tiling=TilingConfig(patch_size=224, target_mpp=0.5, min_tissue_fraction=0.5)
    )
    return build_model(cfg).eval().save_pretrained(tmp_path_factory.mktemp("ckpt") / "half")


def _open_like_napari(path: Path, seen: list[str], monkeypatch: pytest.MonkeyPatch):
    import napari.utils.notifications as notifications

    from napari_pathm3._napari.reader import napari_get_reader

    monkeypatch.setattr(notifications, "show_warning", lambda msg, *a, **k: seen.append(str(msg)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = napari_get_reader(str(path))
        assert reader is not None
        layer = reader(str(path))[0]
    # one notification with the fix, not a second terse warning toast beside it
    assert not [w for w in caught if "microns-per-pixel" in str(w.message)]
    return layer


def test_no_mpp_slide_notified_entered_and_tiled_at_the_models_size(
    make_napari_viewer, qtbot, no_mpp_slide, tiny_ckpt, tmp_path, monkeypatch
) -> None:
    seen: list[str] = []
    data, kwargs, kind = _open_like_napari(no_mpp_slide, seen, monkeypatch)
    # the notification names the slide and both fixes
    assert len(seen) == 1 and "no-mpp.tif" in seen[0] and "slide µm/px" in seen[0] and "--mpp" in seen[0]
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    layer = viewer.add_image(data, **kwargs)
    widget = CaptionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Caption slide")
    widget.cache_dir = tmp_path / "features"
    widget._slide.value = layer
    widget._model_dir.value = tiny_ckpt
    widget._device.value = "cpu"
    assert widget._slide_mpp.value == 0.0  # unknown, from the file
    assert "unknown" in widget._mpp_note.value and "0.5 µm/px" in widget._mpp_note.value
    widget._slide_mpp.value = 0.25
    assert "448 px of this slide at 0.25 µm/px" in widget._mpp_note.value
    t0 = time.perf_counter()
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    widget_s = time.perf_counter() - t0
    res = widget.result
    assert res is not None, widget._stage.value
    assert res.grid.mpp == pytest.approx(0.5) and res.grid.size_level0 == pytest.approx(448)
    assert "Patches: 224 px at 0.5 µm/px (112 µm)" in widget._output.value
    # the layers stay in the slide layer's pixel units: the heatmap covers the slide's 4096 px
    heat = next(lay for lay in viewer.layers if lay.metadata.get("kind") == "attention")
    assert heat.extent.world[1][1] == pytest.approx(4096, abs=448)
    # the same slide through the CLI with --mpp: the widget's run takes at most twice as long
    out = tmp_path / "cli.json"
    env = {**os.environ, "NAPARI_PATHM3_CACHE": str(tmp_path / "cli-cache")}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "napari_pathm3.cli", "caption", str(no_mpp_slide), "--model", str(tiny_ckpt)]
        + ["--mpp", "0.25", "--device", "cpu", "--no-cache", "--quiet", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    cli_s = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    cli = json.loads(out.read_text())
    assert cli["num_patches"] == res.num_patches
    print(
        f"no-mpp slide: widget {widget_s:.1f} s {res.timings}, CLI --mpp {cli_s:.1f} s (process incl. "
        f"imports) {cli['timings_s']}"
    )
    assert widget_s <= 2 * cli_s
    for _ in range(20):
        qtbot.wait(20)
    shot = tmp_path / "no-mpp-caption.png"
    viewer.screenshot(str(shot), canvas_only=False, flash=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("NAPARI_PATHM3_DOC_IMAGES"):  # docs/images/ is refreshed on request only
        shutil.copy(shot, DOC_IMAGES / shot.name)


def test_widget_cli_and_api_lay_the_same_grid(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, half_tissue_ckpt, tmp_path
) -> None:
    from napari_pathm3 import api

    viewer = make_napari_viewer()
    layer = add_slide(viewer, synthetic_slide)
    widget = CaptionWidget(viewer)
    widget.cache_dir = tmp_path / "features"
    widget._slide.value = layer
    widget._min_tissue.value = 0.05  # a different model's value first: choosing the model resets it
    widget._model_dir.value = half_tissue_ckpt
    widget._device.value = "cpu"
    assert widget._min_tissue.value == pytest.approx(0.5)  # the checkpoint's tiling, not a fixed 0.25
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert widget.result is not None, widget._stage.value
    ours = widget.result.grid
    assert ours.config.min_tissue_fraction == 0.5
    via_api = api.caption_slide(synthetic_slide, model=half_tissue_ckpt, device="cpu").grid
    out = tmp_path / "cli.json"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_pathm3.cli", "caption", str(synthetic_slide), "--model"]
        + [
            str(half_tissue_ckpt),
            "--device",
            "cpu",
            "--no-cache",
            "--quiet",
            "--per-patch",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cli = json.loads(out.read_text())
    np.testing.assert_array_equal(ours.coords, via_api.coords)
    assert ours.params() == via_api.params()
    cli_xy = np.stack([cli["patches"]["x"], cli["patches"]["y"]], axis=1)
    np.testing.assert_array_equal(cli_xy, ours.coords)
    assert cli["patch_size_level0"] == ours.size_level0 and cli["patch_mpp"] == ours.mpp


def test_expectation_and_run_tiling() -> None:
    tiling = TilingConfig(patch_size=224, target_mpp=0.5, min_tissue_fraction=0.5)
    assert expectation(tiling, None).endswith("patches are cut in pixels at level 0")
    assert "= 224 px of this slide at 0.5 µm/px" in expectation(tiling, 0.5)
    # the widget's request: its minimum tissue fraction, level 0 for a slide whose µm/px is unknown
    widget = CaptionRequest(min_tissue_fraction=0.3, missing_mpp="level0")
    assert widget.tiling_for(tiling, None) == TilingConfig(
        patch_size=224, target_mpp=None, level=0, min_tissue_fraction=0.3
    )
    assert widget.replace(min_tissue_fraction=0.5).tiling_for(tiling, 0.25) == tiling
    assert model_tiling(str(Path("/nonexistent"))) == TilingConfig()


def test_train_widget_asks_for_the_mpp_of_a_slide_without_one(
    make_napari_viewer, add_slide, no_mpp_slide, errors
) -> None:
    viewer = make_napari_viewer()
    layer = add_slide(viewer, no_mpp_slide)
    shapes = viewer.add_shapes(
        [np.array([[500, 500], [500, 1500], [1500, 1500], [1500, 500]])] * 2,
        features={"class": ["a", "b"]},
        name="regions",
    )
    widget = TrainWidget(viewer)
    widget._slides.value = [layer]
    widget._annotations.value = [shapes]
    assert widget._slide_mpp.value == 0.0 and "unknown" in widget._mpp_note.value
    assert widget._on_train() is None
    assert errors and "no-mpp.tif has no µm/px" in errors[-1] and "slide µm/px" in errors[-1]
    widget._slide_mpp.value = 0.25
    assert "448 px of this slide" in widget._mpp_note.value
    regions = widget.slides_with_mpp(widget.collect_regions())
    try:
        assert regions[0][0].mpp == pytest.approx(0.25)
    finally:
        regions[0][0].close()
    assert registry.names()  # registry untouched by the refusal


def test_entered_mpp_overrides_the_files_and_layers_stay_aligned(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tiny_ckpt, tmp_path
) -> None:
    viewer = make_napari_viewer()
    layer = add_slide(viewer, synthetic_slide)
    widget = CaptionWidget(viewer)
    widget.cache_dir = tmp_path / "features"
    widget._slide.value = layer
    widget._model_dir.value = tiny_ckpt
    widget._device.value = "cpu"
    widget._min_tissue.value = 0.05
    assert widget._slide_mpp.value == pytest.approx(0.5)  # prefilled from the file
    widget._slide_mpp.value = 0.25  # the file is wrong, says the user
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    res = widget.result
    assert res is not None and res.mpp_xy == (0.25, 0.25) and res.grid.size_level0 == pytest.approx(448)
    assert layer.metadata["pathm3_slide"].mpp == pytest.approx(0.5)  # the layer's own slide is untouched
    heat = next(lay for lay in viewer.layers if lay.metadata.get("kind") == "attention")
    np.testing.assert_allclose(heat.scale, np.asarray(layer.scale) * 448)  # one heatmap pixel per patch
