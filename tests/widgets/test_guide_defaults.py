"""The user guide's Train widget defaults are the widget's (issue 27, item 8: they had drifted apart)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"


def guide_defaults() -> dict[str, str]:
    text = " ".join(GUIDE.read_text(encoding="utf-8").split())
    m = re.search(
        r"The widget starts at these values[^:]*: model size (\w+), (\d+) epochs, learning rate ([\d.e-]+), "
        r"(\d+) bags per step, α = ([\d.]+) in eq\. \(4\), (\d+) sub-bags per region, (\w+) mode",
        text,
    )
    assert m, "the guide's sentence with the Train widget defaults is gone or reworded"
    keys = ("size", "epochs", "lr", "batch", "alpha", "sub_bags", "mode")
    return dict(zip(keys, m.groups(), strict=True))


def test_train_widget_defaults_are_the_guides(make_napari_viewer) -> None:
    from napari_pathm3.widgets.train import TrainWidget

    w = TrainWidget(make_napari_viewer())
    doc = guide_defaults()
    assert w._size.value == doc["size"] and w._mode.value == doc["mode"]
    assert w._epochs.value == int(doc["epochs"]) and w._batch.value == int(doc["batch"])
    assert w._sub_bags.value == int(doc["sub_bags"])
    assert w._lr.value == pytest.approx(float(doc["lr"])) and w._alpha.value == pytest.approx(
        float(doc["alpha"])
    )
