"""Packaging: the wheel ships the napari manifest (npe2 finds the plugin through it) and the package data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:  # offline build: no isolation, so the installed one
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (pyproject's build requirement)")
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (whl,) = out.glob("napari_pathm3-*.whl")
    return whl


def test_wheel_ships_manifest_and_entry_point(wheel: Path) -> None:
    import yaml

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "napari_pathm3/napari.yaml" in names and "napari_pathm3/py.typed" in names
        manifest = yaml.safe_load(zf.read("napari_pathm3/napari.yaml"))
        (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = zf.read(entry).decode()
    assert manifest["name"] == "napari-pathm3"
    assert "[napari.manifest]" in entry_points and "napari_pathm3:napari.yaml" in entry_points
    assert "napari-pathm3 = napari_pathm3.cli:main" in entry_points
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/")) for n in names)
