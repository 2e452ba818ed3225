"""Core modules import without Qt or napari (the style guide's import direction)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = [
    "napari_pathm3",
    "napari_pathm3.config",
    "napari_pathm3.io.slide",
    "napari_pathm3.io.pyramid",
    "napari_pathm3.tiling",
    "napari_pathm3.cli",
    "napari_pathm3.api",
    "napari_pathm3.demo",
]


@pytest.mark.parametrize("module", CORE)
def test_core_imports_no_qt(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'qtpy','PyQt5','PyQt6','PySide2','PySide6','napari','magicgui'}]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_package_import_is_light() -> None:
    code = "import sys, napari_pathm3\nassert 'torch' not in sys.modules and 'dask' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True)
