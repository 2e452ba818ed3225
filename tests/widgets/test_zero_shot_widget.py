"""Zero-shot classification as a model of the Caption widget: the PLIP entry and a picked CLIP folder
(``clip:<folder>``) in the model list, the class/prompt fields shown only for them, Run -> a result with
its class maps as image layers, and one clear line offline (tiny random CLIPModel saved in the test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_pathm3.widgets._registry import DEMO_NAME, registry
from napari_pathm3.widgets._zero_shot import PLIP_NAME, PLIP_SOURCE
from napari_pathm3.widgets.caption import CaptionWidget

TIMEOUT = 120_000


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests._clip import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def _widget(make_napari_viewer, add_slide, slide: Path, tmp_path: Path) -> tuple:
    viewer = make_napari_viewer()
    layer = add_slide(viewer, slide)
    widget = CaptionWidget(viewer)
    widget.cache_dir = tmp_path / "features"
    widget._slide.value = layer
    widget._device.value = "cpu"
    return viewer, widget


def _visible(w) -> bool:
    return not w.native.isHidden()


def test_plip_entry_shows_the_zero_shot_fields(
    make_napari_viewer, add_slide, synthetic_slide, tmp_path
) -> None:
    _, widget = _widget(make_napari_viewer, add_slide, synthetic_slide, tmp_path)
    assert PLIP_NAME in widget._model.choices and registry.get(PLIP_NAME).source == PLIP_SOURCE
    assert widget._model.value == DEMO_NAME and not widget.zero_shot
    assert not _visible(widget._zero_shot) and _visible(widget._encoder) and _visible(widget._text)
    widget._model.value = PLIP_NAME
    assert widget.zero_shot and "Zero-shot" in widget._note.value
    assert _visible(widget._zero_shot) and not _visible(widget._encoder) and not _visible(widget._text)
    assert "224-px patches" in widget._mpp_note.value  # PLIP's grid, without loading its weights
    widget._model.value = DEMO_NAME
    assert not _visible(widget._zero_shot)
    with pytest.raises(ValueError, match="zero-shot"):
        registry.load(PLIP_NAME)  # never loaded as a PathM3 model


def test_zero_shot_run_from_a_picked_clip_folder(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tiny_clip, tmp_path
) -> None:
    viewer, widget = _widget(make_napari_viewer, add_slide, synthetic_slide, tmp_path)
    widget._model_dir.value = tiny_clip  # a saved CLIPModel folder -> clip:<folder>, selected
    name = widget._model.value
    assert registry.get(name).source == f"clip:{tiny_clip.resolve()}" and name.startswith(
        "zero-shot: tiny-clip"
    )
    assert widget.zero_shot and "32-px patches" in widget._mpp_note.value  # its preprocessor's crop
    # too few classes: one clear line, no run
    widget._zero_shot.classes.value = "only one"
    assert widget._on_run() is None and "at least two class names" in widget._output.value
    widget._zero_shot.classes.value = "tumour, normal tissue"
    widget._zero_shot.prompts.value = "an H&E image of {}.; {}."
    assert widget._zero_shot.settings() == (["tumour", "normal tissue"], ["an H&E image of {}.", "{}."])
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    res = widget.result
    assert res is not None, widget._output.value
    assert set(res.probabilities) == {"tumour", "normal tissue"} and res.model_name == name
    assert [p.phrase for p in res.phrase_maps] == ["tumour", "normal tissue"]
    assert res.phrase_maps[0].info["prompts"] == ["an H&E image of {}.", "{}."]
    assert res.grid.patch_size == 32  # the encoder's own input size
    out = widget._output.value
    assert "ZERO-SHOT" in out and "Class:" in out and "Caption:" not in out
    assert any(lay.metadata.get("kind") == "attention" for lay in viewer.layers)
    maps = [lay for lay in viewer.layers if lay.metadata.get("kind") == "phrase_map"]
    assert sorted(lay.name for lay in maps) == sorted(
        f"{res.slide_name} phrase: {c}" for c in ("tumour", "normal tissue")
    )
    # a typed phrase is mapped with the same CLIP encoder on the same patches
    widget.words._phrase.value = "solid nests"
    job = widget.words._on_map_phrase()
    qtbot.waitUntil(lambda: job.done, timeout=TIMEOUT)
    qr = widget.words.last_phrase
    assert (
        qr is not None and qr.model_name == f"clip:{tiny_clip.resolve()}" and len(qr.grid) == res.num_patches
    )
    # a second run replaces the class layers, no duplicates
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert len([lay for lay in viewer.layers if lay.metadata.get("kind") == "phrase_map"]) == 2
    # the same folder picked again keeps its entry
    assert registry.register_clip(tiny_clip) == name


def test_zero_shot_offline_is_one_line_naming_the_download(
    make_napari_viewer, add_slide, qtbot, synthetic_slide, tmp_path, monkeypatch
) -> None:
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))  # PLIP surely absent
    _, widget = _widget(make_napari_viewer, add_slide, synthetic_slide, tmp_path)
    widget._model.value = PLIP_NAME
    widget._zero_shot.classes.value = "tumour, normal tissue"
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    out = widget._output.value
    assert out.startswith("ERROR:") and "\n" not in out, out
    assert "huggingface-cli download vinid/plip" in out and "clip:" in out
    assert widget._stage.value == "failed" and widget.result is None
