"""Caption words selectable in the Caption widget, each word's map shown aligned with the slide, typed phrase
maps; the slow test makes docs/images/word-map.png and phrase-map.png with the demo model when
PATHM3_DOCS_SCREENSHOTS=1 (``xvfb-run -a python -m pytest tests/widgets/test_words_panel.py -m slow``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.widgets._words import NO_WORD
from napari_pathm3.widgets.caption import CaptionWidget

TIMEOUT = 120_000
DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"


def test_word_selection_and_phrase_map(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tiny_ckpt, tmp_path
) -> None:
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    layer = add_slide(viewer, synthetic_slide)
    widget = CaptionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.cache_dir = tmp_path / "features"
    widget._slide.value = layer
    widget._model_dir.value = tiny_ckpt
    widget._device.value = "cpu"
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    res = widget.result
    assert res is not None and res.word_maps is not None and res.caption
    labels = widget.words.word_labels()
    assert labels == res.word_maps.labels() and len(labels) == len(res.caption.split())
    # no map until a word is picked; switching words changes the data of the same layer
    assert not [lay for lay in viewer.layers if lay.metadata.get("kind") == "word_map"]
    widget.words.select_word(labels[0])
    maps = [lay for lay in viewer.layers if lay.metadata.get("kind") == "word_map"]
    assert len(maps) == 1
    word_layer = maps[0]
    widget.words.select_word(labels[-1])
    assert [lay for lay in viewer.layers if lay.metadata.get("kind") == "word_map"] == [word_layer]
    assert res.word_maps.words[-1] in word_layer.name and "log2" in word_layer.name
    assert word_layer.colorbar.visible
    # aligned: the top patch of the selected word lands on its own raster cell
    i = int(np.argmax(res.word_maps.maps[-1]))
    x, y = res.coords[i]
    centre = (np.array([y, x]) + (res.grid.size_level0 - 1) / 2) * np.asarray(layer.scale)
    pix = np.round(word_layer.world_to_data(centre)).astype(int)
    level0 = word_layer.data[0] if word_layer.multiscale else word_layer.data
    assert np.isfinite(level0[pix[0], pix[1]])
    # a typed phrase gives its map in the same layer
    widget.words._phrase.value = "solid nests"
    job = widget.words._on_map_phrase()
    qtbot.waitUntil(lambda: job.done, timeout=TIMEOUT)
    qr = widget.words.last_phrase
    assert qr is not None and qr.phrase_map.values.shape == (res.num_patches,)
    assert "solid nests" in word_layer.name
    widget.words.select_word(NO_WORD)  # (a one-word caption: labels[0] may be the current choice)
    widget.words.select_word(labels[0])
    assert res.word_maps.words[0] in word_layer.name


@pytest.mark.slow
def test_demo_word_and_phrase_screenshots(
    make_napari_viewer, add_slide, qtbot, cmu_slide_path, tmp_path
) -> None:
    """The user guide's pictures: the demo model's caption words and a typed phrase on the sample slide
    (trains the demo model on first use: slow)."""
    from napari_pathm3.widgets._registry import DEMO_NAME

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    layer = add_slide(viewer, cmu_slide_path)
    widget = CaptionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._slide.value = layer
    widget._model.value = DEMO_NAME
    widget._device.value = "cpu"
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=600_000)
    res = widget.result
    assert res is not None and res.word_maps is not None
    widget.words.select_word(widget.words.word_labels()[0])  # the word that tells the two captions apart
    shots = {"word-map.png": tmp_path / "word.png", "phrase-map.png": tmp_path / "phrase.png"}
    viewer.screenshot(str(shots["word-map.png"]), canvas_only=False, flash=False)
    widget.words._phrase.value = "pink collagen bundles"
    job = widget.words._on_map_phrase()
    qtbot.waitUntil(lambda: job.done, timeout=120_000)
    assert widget.words.last_phrase is not None
    viewer.screenshot(str(shots["phrase-map.png"]), canvas_only=False, flash=False)
    if os.environ.get("PATHM3_DOCS_SCREENSHOTS") == "1":
        for name, path in shots.items():
            shutil.copyfile(path, DOCS / name)
