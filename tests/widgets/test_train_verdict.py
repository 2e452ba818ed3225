"""The Train widget says what its model learned: cross-validated (or held-out) accuracy against the majority
class and the caption check, in the widget after training (issue 27 item 4)."""

from __future__ import annotations

import numpy as np

from napari_pathm3.widgets.train import TrainWidget

TIMEOUT = 240_000


def _rect(y: float, x: float, h: float, w: float) -> np.ndarray:
    return np.array([[y, x], [y, x + w], [y + h, x + w], [y + h, x]], float)


def test_verdict_shown_after_training(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tmp_path
) -> None:
    viewer = make_napari_viewer()
    slide = add_slide(viewer, synthetic_slide)
    mpp = float(slide.scale[0])
    # the synthetic slide's two blobs (tests/conftest.py BLOBS), each cut in two: two regions per class
    rects = [_rect(448, 448, 672, 448), _rect(448, 896, 672, 448), _rect(1120, 2016, 336, 448)]
    rects.append(_rect(1456, 2016, 336, 448))
    shapes = viewer.add_shapes(
        [r * mpp for r in rects],
        shape_type="polygon",
        name="annotations",
        features={"class": ["big", "big", "small", "small"]},
    )
    widget = TrainWidget(viewer)
    widget.cache_dir = tmp_path / "features"
    widget._slides.value = [slide]
    widget._annotations.value = [shapes]
    widget._out.value = tmp_path / "model"
    widget._device.value = "cpu"
    widget._epochs.value = 2
    widget._sub_bags.value = 1
    assert widget._slide_mpp.value == 0.5 and "224 px of this slide" in widget._mpp_note.value
    widget._on_train()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert widget._job.error is None, widget._job.error
    text = widget._verdict.value
    assert "2-fold cross-validation over 4 region(s)" in text and "most frequent class" in text
    assert "repeat a training caption word for word" in text
    assert widget.result.verdict["evaluated_on"] == "cross-validation"
