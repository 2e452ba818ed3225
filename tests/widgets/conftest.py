"""Fixtures of the widget tests: a tiny untrained checkpoint, slide layers and an isolated cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CLASSES = ("tumour", "normal")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    cfg = PathM3Config.tiny(feature_dim=94, encoder_name="builtin:colorstats", class_names=CLASSES)
    return build_model(cfg).eval().save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAPARI_PATHM3_CACHE", str(tmp_path / "user-cache"))


def _add_slide(viewer: Any, path: Path, name: str | None = None) -> Any:
    from napari_pathm3._napari.reader import slide_layer_data
    from napari_pathm3.io.slide import open_slide

    data, kwargs, _ = slide_layer_data(open_slide(path), name=name)
    return viewer.add_image(data, **kwargs)


@pytest.fixture
def add_slide() -> Any:
    """``add_slide(viewer, path)``: open a slide the way the napari-pathm3 reader does and add it."""
    return _add_slide


@pytest.fixture
def errors(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Messages passed to napari's show_error (our widgets import it at call time)."""
    import napari.utils.notifications as notifications

    seen: list[str] = []
    monkeypatch.setattr(notifications, "show_error", lambda msg, *a, **k: seen.append(str(msg)))
    return seen
