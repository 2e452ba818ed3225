"""Typed progress events (`_types.Progress`): what the widgets and the CLI read instead of parsing text."""

from __future__ import annotations

import pytest

from napari_pathm3._types import Progress, Stage, as_demo, report, within


def test_report_builds_typed_events_and_accepts_stage_values() -> None:
    seen: list[Progress] = []
    report(seen.append, 3, 10, Stage.TRAIN, epoch=2, epochs=5)
    report(seen.append, 1, 4, "extract")  # a stage's value is accepted (callers outside this package)
    report(None, 1, 1, Stage.DONE)  # no callback: nothing happens
    assert seen == [Progress(Stage.TRAIN, 3, 10, epoch=2, epochs=5), Progress(Stage.EXTRACT, 1, 4)]
    assert seen[0].fraction == pytest.approx(0.3) and Progress(Stage.MODEL, 0, 0).fraction is None
    with pytest.raises(ValueError):
        report(seen.append, 0, 1, "epoch 1/3")  # free text is not a stage


def test_within_and_demo_mark_events_without_text() -> None:
    seen: list[Progress] = []
    inner = within(as_demo(seen.append), Stage.FEATURES)
    assert inner is not None
    report(inner, 5, 20, Stage.EXTRACT, detail="slide.svs")
    (event,) = seen
    assert event.stage is Stage.EXTRACT and event.within is Stage.FEATURES and event.demo
    assert event.label() == "demo model: features (extract, slide.svs)"
    assert Progress(Stage.TRAIN, 1, 2, epoch=1, epochs=3).label() == "train (epoch 1/3)"
    assert within(None, Stage.FEATURES) is None and as_demo(None) is None


def test_size_presets_are_config_classmethods() -> None:
    from napari_pathm3.config import DEFAULT_SIZE, MODEL_SIZES, PathM3Config, TrainConfig

    small = PathM3Config.preset(DEFAULT_SIZE, feature_dim=8, encoder_name="x", class_names=("a", "b"))
    assert small.language.tokenizer == "words" and small.feature_dim == 8 and small.tiling is None
    assert PathM3Config.preset("paper", feature_dim=8, encoder_name="", class_names=("a", "b")).language.name
    with pytest.raises(ValueError, match="model size"):
        PathM3Config.preset("huge", feature_dim=8, encoder_name="", class_names=("a", "b"))
    assert set(MODEL_SIZES) == {"tiny", "small", "paper"}
    assert (TrainConfig.preset("small").epochs, TrainConfig.preset("small").batch_size) == (30, 16)
    assert TrainConfig.preset("paper", epochs=None).epochs == 50  # None keeps the preset's value
    assert TrainConfig.preset("tiny", epochs=3, patience=None).patience is None
