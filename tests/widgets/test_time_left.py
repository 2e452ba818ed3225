"""Time left in the widgets' stage line (issue 27, item 6)."""

from __future__ import annotations

from napari_pathm3._types import Progress, Stage
from napari_pathm3.widgets._eta import TimeLeft, format_left


def test_time_left_from_the_average_rate_after_a_few_seconds() -> None:
    now = [0.0]
    eta = TimeLeft(clock=lambda: now[0])
    assert eta.text("features", 0, 100) == ""  # the stage starts
    now[0] = 1.0
    assert eta.text("features", 10, 100) == ""  # too early to tell
    now[0] = 10.0
    assert eta.text("features", 50, 100) == ", 10 s left"  # 50 patches in 10 s: 50 more take 10 s
    assert eta.text("features", 100, 100) == ""  # done
    now[0] = 11.0
    assert eta.text("train", 1, 40) == ""  # a new stage restarts the clock
    assert (format_left(59.4), format_left(125), format_left(3780)) == ("59 s", "2 min 05 s", "1 h 03 min")


def test_caption_widget_shows_time_left_for_patches(make_napari_viewer, monkeypatch) -> None:
    from napari_pathm3.widgets import _eta
    from napari_pathm3.widgets.caption import CaptionWidget

    now = [0.0]
    monkeypatch.setattr(_eta.time, "monotonic", lambda: now[0])
    widget = CaptionWidget(make_napari_viewer())
    widget._time_left = TimeLeft()
    widget._on_progress(Progress(Stage.EXTRACT, 0, 200, within=Stage.FEATURES))
    now[0] = 20.0
    widget._on_progress(Progress(Stage.EXTRACT, 100, 200, within=Stage.FEATURES))
    assert widget._stage.value == "features (extract): 100/200 patches, 20 s left"


def test_train_widget_shows_time_left_for_steps(make_napari_viewer, monkeypatch) -> None:
    from napari_pathm3.widgets import _eta
    from napari_pathm3.widgets.train import TrainWidget

    now = [0.0]
    monkeypatch.setattr(_eta.time, "monotonic", lambda: now[0])
    widget = TrainWidget(make_napari_viewer())
    widget._time_left = TimeLeft()
    widget._on_progress(Progress(Stage.TRAIN, 0, 40, epoch=1, epochs=20))
    now[0] = 30.0
    widget._on_progress(Progress(Stage.TRAIN, 10, 40, epoch=5, epochs=20))
    assert widget._stage.value == "train (epoch 5/20), 1 min 30 s left"


def test_caption_widget_shows_time_left_for_model_load_tissue_and_caption(
    make_napari_viewer, monkeypatch
) -> None:
    """The stages that now count (weights' bytes, tissue read blocks, decoding steps) get the time left too,
    labelled with their own name only; tissue's counts move the bar inside its stage."""
    from napari_pathm3.widgets import _eta
    from napari_pathm3.widgets.caption import CaptionWidget

    now = [0.0]
    monkeypatch.setattr(_eta.time, "monotonic", lambda: now[0])
    widget = CaptionWidget(make_napari_viewer())
    widget._time_left = TimeLeft()
    for stage, within, total in (
        (Stage.LOAD_MODEL, None, 4000),
        (Stage.TISSUE, Stage.TISSUE, 40),
        (Stage.CAPTION, Stage.CAPTION, 24),
    ):
        widget._on_progress(Progress(stage, 0, total, within=within))
        now[0] += 10.0
        widget._on_progress(Progress(stage, total // 2, total, within=within))
        assert widget._stage.value == f"{stage}, 10 s left"
        if stage is Stage.TISSUE:
            assert 0 < widget._progress.value < 100 / 5  # inside the first of five stages
