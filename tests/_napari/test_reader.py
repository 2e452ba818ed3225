"""The napari reader contribution, headless (run under xvfb-run)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3._napari.reader import napari_get_reader

READABLE = [
    ("CMU-1-Small-Region.svs", (2967, 2220), 0.499),
    ("CMU-1-Small-Region-dicom", (2967, 2220), 0.499),
    ("kidney-48-5.tif", (901, 1493), None),
]


def test_get_reader_declines_other_files(slides_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    assert napari_get_reader(str(tmp_path / "a.png")) is None
    with pytest.warns(
        UserWarning, match=r"napari-pathm3 cannot open broken\.svs: .*(unsupported|not a TIFF)"
    ):
        assert napari_get_reader(str(slides_dir / "broken.svs")) is None  # the reason reaches napari
    assert napari_get_reader(str(tmp_path / "missing.svs")) is None
    assert napari_get_reader(str(tmp_path)) is None  # a folder without .dcm files
    assert callable(napari_get_reader(str(slides_dir / "CMU-1-Small-Region.svs")))


@pytest.mark.parametrize(("rel", "shape", "mpp"), READABLE, ids=[r[0][:20] for r in READABLE])
def test_viewer_open_with_plugin(make_napari_viewer, slides_dir: Path, rel: str, shape, mpp) -> None:  # type: ignore[no-untyped-def]
    viewer = make_napari_viewer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layers = viewer.open(str(slides_dir / rel), plugin="napari-pathm3")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.rgb
    data = layer.data[0] if layer.multiscale else layer.data
    assert tuple(data.shape[:2]) == shape and data.dtype == np.uint8
    if mpp is None:
        assert tuple(layer.scale) == (1.0, 1.0)
    else:
        assert tuple(layer.scale) == pytest.approx((mpp, mpp), abs=1e-3)
        assert layer.metadata["mpp"] == pytest.approx(mpp, abs=1e-3)
    assert "level_downsamples" in layer.metadata and "vendor" in layer.metadata
    slide = layer.metadata["pathm3_slide"]
    np.testing.assert_array_equal(
        np.asarray(data[200:232, 100:140]), slide.read_region((100, 200), 0, (40, 32))
    )


def test_multiscale_layer_from_pyramid(make_napari_viewer, synthetic_slide: Path) -> None:  # type: ignore[no-untyped-def]
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(synthetic_slide), plugin="napari-pathm3")
    assert layer.multiscale and len(layer.data) == 3
    assert tuple(layer.scale) == pytest.approx((0.5, 0.5))


def test_sample_data_resolves_locally(make_napari_viewer) -> None:  # type: ignore[no-untyped-def]
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pathm3", "cmu1_small_region")
    assert viewer.layers[0].data.shape[:2] == (2967, 2220)


def test_manifest_validates() -> None:
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-pathm3")
    manifest.validate_imports()  # every python_name (reader, writer, sample, widgets) imports
    assert {c.command for c in manifest.contributions.readers} == {
        "napari-pathm3.get_reader",
        "napari-pathm3.get_geojson_reader",  # QuPath annotations -> labelled shapes
    }


def test_reader_patterns_are_slide_formats_and_folders_still_open(dicom_dir: Path, tmp_path: Path) -> None:
    """No catch-all ``*``: napari offers this reader only for slide formats, and for folders (DICOM WSI
    folders often hold extension-less files), which ``napari_get_reader`` then checks."""
    import yaml

    from napari_pathm3.io.slide import SLIDE_SUFFIXES

    manifest = Path(__file__).resolve().parents[2] / "src" / "napari_pathm3" / "napari.yaml"
    readers = yaml.safe_load(manifest.read_text())["contributions"]["readers"]
    (reader,) = [r for r in readers if r["command"] == "napari-pathm3.get_reader"]
    (geo,) = [r for r in readers if r["command"] == "napari-pathm3.get_geojson_reader"]
    assert geo["filename_patterns"] == ["*.geojson"] and not geo["accepts_directories"]
    patterns = reader["filename_patterns"]
    assert "*" not in patterns and reader["accepts_directories"] is True
    assert sorted(patterns) == sorted(f"*{s}" for s in SLIDE_SUFFIXES)
    plain = tmp_path / "dicom-no-suffix"
    plain.mkdir()
    for i, f in enumerate(sorted(dicom_dir.glob("*.dcm"))):
        (plain / f"{i:04d}.dcm").symlink_to(f)  # a folder named without any suffix
    assert callable(napari_get_reader(str(plain)))


def test_dicom_instances_named_by_uid_without_extension(dicom_dir: Path, tmp_path: Path) -> None:
    """PACS exports name instances by UID ("1.2.826….4670…", whose suffix is not .dcm): found by the DICOM
    preamble, opened, and the same slide as the .dcm folder."""
    from napari_pathm3.io.slide import dicom_files, open_slide

    uid = tmp_path / "uid-named"
    uid.mkdir()
    for f in sorted(dicom_dir.glob("*.dcm")):
        (uid / f.stem).write_bytes(f.read_bytes())
    (uid / "README.txt").write_text("not a DICOM file")
    assert len(dicom_files(uid)) == len(list(dicom_dir.glob("*.dcm")))
    assert callable(napari_get_reader(str(uid)))
    with open_slide(uid) as a, open_slide(dicom_dir) as b:
        assert a.dimensions == b.dimensions
        assert (a.read_region((0, 0), 0, (64, 64)) == b.read_region((0, 0), 0, (64, 64))).all()


def test_broken_slide_reason_in_viewer(make_napari_viewer, slides_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Opening broken.svs in napari: the warning (a notification in the GUI) names the file and the reason."""
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match="cannot open broken.svs"), pytest.raises(ValueError):
        viewer.open(str(slides_dir / "broken.svs"), plugin="napari-pathm3")
