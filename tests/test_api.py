"""The console API: no Qt or napari at import, paths in and typed results out without any Qt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from napari_pathm3 import api
from napari_pathm3.errors import CheckpointError, SlideReadError

QT_ROOTS = {"qtpy", "napari", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy"}


def _loaded_roots(code: str) -> dict:
    script = code + (
        "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_api_loads_no_qt_napari_or_torch() -> None:
    roots = _loaded_roots("import napari_pathm3.api")
    assert not roots & QT_ROOTS, roots & QT_ROOTS
    assert "torch" not in roots


def test_package_exports_api_lazily() -> None:
    import napari_pathm3

    assert napari_pathm3.caption_slide is api.caption_slide
    assert {"open_slide", "load_model", "caption_slide", "train", "show", "extract_features"} <= set(dir(api))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    cfg = PathM3Config.tiny(
        feature_dim=94, encoder_name="builtin:colorstats", class_names=("tumour", "normal")
    )
    return build_model(cfg).eval().save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


def test_console_session_without_qt(synthetic_slide: Path, tiny_ckpt: Path, tmp_path: Path) -> None:
    """The documented plain-script session runs in a fresh interpreter and never imports Qt or napari."""
    code = f"""
from napari_pathm3 import api
with api.open_slide({str(synthetic_slide)!r}) as slide:
    result = api.caption_slide(slide, model={str(tiny_ckpt)!r}, device="cpu", cache_dir={str(tmp_path)!r})
assert isinstance(result, api.SlideResult), type(result)
assert isinstance(result.label, str) and isinstance(result.caption, str)
assert result.attention.shape == (result.num_patches,)
result.save_json({str(tmp_path / "r.json")!r})
"""
    roots = _loaded_roots(code)
    assert not roots & QT_ROOTS, roots & QT_ROOTS
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data["probabilities"]) == {"tumour", "normal"}


def test_load_model_and_caption_in_process(synthetic_slide: Path, tiny_ckpt: Path) -> None:
    model = api.load_model(tiny_ckpt, device="cpu")
    assert model.config.class_names == ("tumour", "normal")
    result = api.caption_slide(str(synthetic_slide), model=model, device="cpu", top_k=3)
    assert len(result.top_patches()) == 3


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a folder"):
        api.load_model(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    (bad / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        api.load_model(bad)


def test_open_slide_error(tmp_path: Path) -> None:
    with pytest.raises(SlideReadError):
        api.open_slide(tmp_path / "nope.svs")


def test_caption_viewer_like_without_slide_layer() -> None:
    class FakeLayers(list):
        class selection:  # noqa: N801 - mimics napari's attribute
            active = None

    class FakeViewer:
        layers = FakeLayers()

        def add_image(self, *a: object, **k: object) -> None: ...

    with pytest.raises(SlideReadError, match="no slide layer"):
        api.caption_slide(FakeViewer(), model="demo")


def test_extract_features(synthetic_slide: Path, tmp_path: Path) -> None:
    bag = api.extract_features(synthetic_slide, store=tmp_path / "blobs.zarr", device="cpu")
    assert bag.features.shape == (18, 94) and bag.coords.shape == (18, 2)
    again = api.extract_features(str(synthetic_slide), store=tmp_path / "blobs.zarr", device="cpu")
    assert (again.features == bag.features).all()


def test_shapes_region_with_a_slide_path_uses_the_slide_mpp(cmu_slide_path: Path, monkeypatch) -> None:
    """A Shapes layer drawn in µm over the slide layer: a path target must convert with the slide's mpp."""
    from types import SimpleNamespace

    import numpy as np

    import napari_pathm3.inference as inference

    seen = {}
    monkeypatch.setattr(
        inference, "caption_slide", lambda slide, request, ctx: seen.update(region=request.region) or "ok"
    )
    mpp = 0.499
    # a square of level-0 pixels (x 400..800, y 600..1000) drawn in world µm (napari shapes are (y, x))
    square_um = np.array([[600, 400], [600, 800], [1000, 800], [1000, 400]], float) * mpp
    layer = SimpleNamespace(data=[square_um], selected_data=set(), scale=(1.0, 1.0), translate=(0.0, 0.0))
    assert api.caption_slide(cmu_slide_path, model=cmu_slide_path.parent, region=layer) == "ok"
    (poly,) = seen["region"]
    np.testing.assert_allclose(np.asarray(poly).min(0), [400, 600], atol=1e-6)
    np.testing.assert_allclose(np.asarray(poly).max(0), [800, 1000], atol=1e-6)
