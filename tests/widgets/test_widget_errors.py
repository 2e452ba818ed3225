"""Issue 27, item 7: errors in the widget's result box in full (a toast truncates them), and layers that cannot
be captioned (fluorescence channels, greyscale images, labels) not offered as the slide, with Run disabled
and the reason stated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.widgets._worker import error_text
from napari_pathm3.widgets.caption import CaptionWidget
from napari_pathm3.widgets.train import TrainWidget

TIMEOUT = 120_000  # ms


def _tiff(path: Path, img: np.ndarray, **kw) -> Path:
    import tifffile

    opts = dict(tile=(16, 16), photometric="minisblack", metadata=None, resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(path) as tif:
        tif.write(img, resolution=(2e4, 2e4), **opts, **kw)
    return path


@pytest.fixture(scope="module")
def fluorescence_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    img = np.random.default_rng(0).integers(0, 3000, (3, 96, 128), dtype=np.uint16)
    return _tiff(tmp_path_factory.mktemp("fl") / "fluo.tif", img, planarconfig="separate")


def _open_as_napari_does(viewer, path: Path) -> list:
    from npe2 import PluginManager

    PluginManager.instance().discover()
    return viewer.open(str(path), plugin="napari-pathm3")


def test_error_text_keeps_the_whole_message() -> None:
    from napari_pathm3.errors import Cancelled, PathM3Error

    long = "x" * 400 + " the fix is at the end"
    assert error_text(PathM3Error(long)) == f"ERROR: {long}"
    assert error_text(Cancelled("stopped")).startswith("Cancelled")
    other = error_text(ValueError("boom"))
    assert other.startswith("ERROR (ValueError): boom") and "traceback" in other


def test_failed_run_shows_the_full_error_in_the_result_box(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tmp_path, errors
) -> None:
    bad = tmp_path / ("a-model-folder-with-a-long-name-" * 4)
    bad.mkdir()
    (bad / "config.json").write_text('{"pathm3_format": 1, "feature_dim": "x"}')
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    viewer = make_napari_viewer()
    layer = add_slide(viewer, synthetic_slide)
    widget = CaptionWidget(viewer)
    widget.cache_dir = tmp_path / "features"
    widget._slide.value = layer
    widget._model_dir.value = bad
    widget._device.value = "cpu"
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    box = widget._output.value
    assert box.startswith("ERROR: ") and bad.name in box  # the whole path, not a truncated toast
    assert errors  # the toast is still there
    assert widget._stage.value == "failed" and widget._run.enabled


def test_empty_region_error_goes_to_the_result_box(
    make_napari_viewer, add_slide, synthetic_slide, errors
) -> None:
    viewer = make_napari_viewer()
    add_slide(viewer, synthetic_slide)
    shapes = viewer.add_shapes(name="my regions")
    widget = CaptionWidget(viewer)
    widget._region.value = shapes
    assert widget._on_run() is None
    assert "has no shapes; draw a region first" in widget._output.value


def test_fluorescence_channels_labels_and_greyscale_are_not_offered(
    make_napari_viewer, add_slide, synthetic_slide, fluorescence_tiff, errors
) -> None:
    viewer = make_napari_viewer()
    channels = _open_as_napari_does(viewer, fluorescence_tiff)
    assert len(channels) == 3 and all("pathm3_slide" in lay.metadata for lay in channels)
    viewer.add_labels(np.zeros((96, 128), dtype=np.uint8), name="labels")
    viewer.add_image(np.zeros((96, 128), dtype=np.float32), name="greyscale")
    widget, train = CaptionWidget(viewer), TrainWidget(viewer)
    assert widget._slide.choices == () and train._slides.choices == ()
    assert not widget._run.enabled
    box = widget._output.value
    assert "Only brightfield (RGB) slides" in box and channels[0].name in box
    assert widget._on_run() is None and "Only brightfield" in errors[-1]
    rgb = add_slide(viewer, synthetic_slide)  # a brightfield slide arrives: offered, Run enabled
    assert widget._slide.choices == (rgb,) and widget._slide.value is rgb and widget._run.enabled
    assert [c for c in train._slides.choices] == [rgb]
