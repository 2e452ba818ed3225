"""Slide API on every real file in ../shared/data/slides, checked against direct OpenSlide/tiffslide reads."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.errors import MissingMppError, SlideReadError
from napari_pathm3.io.slide import open_slide


@dataclass(frozen=True)
class Case:
    rel: str
    backend: str
    levels: int
    shape: tuple[int, int]  # (height, width) of level 0
    mpp: float | None


CASES = [
    Case("CMU-1-Small-Region.svs", "openslide", 1, (2967, 2220), 0.499),
    Case("CMU-1-Small-Region-dicom", "openslide", 1, (2967, 2220), 0.499),
    Case(
        "CMU-1-Small-Region-dicom/1.2.826.0.1.3680043.8.498.46702941076792458794464453066648511350.dcm",
        "openslide",
        1,
        (2967, 2220),
        0.499,
    ),
    Case("kidney-48-5.tif", "tiffslide", 1, (901, 1493), None),
]


def _reference(path: Path, backend: str, x: int, y: int, w: int, h: int) -> np.ndarray:
    if backend == "openslide":
        import openslide

        p = path if path.is_file() else sorted(path.glob("*.dcm"))[0]
        with openslide.OpenSlide(str(p)) as s:
            rgba = np.asarray(s.read_region((x, y), 0, (w, h)))
    else:
        import tiffslide

        with tiffslide.TiffSlide(str(path)) as s:
            rgba = np.asarray(s.read_region((x, y), 0, (w, h), as_array=True))
    return rgba[..., :3]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.rel.split("/")[-1][:24])
def test_open_every_slide(slides_dir: Path, case: Case) -> None:
    path = slides_dir / case.rel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slide = open_slide(path)
    with slide:
        assert slide.backend == case.backend
        assert slide.level_count == case.levels
        w, h = slide.dimensions
        assert (h, w) == case.shape
        if case.mpp is None:
            assert slide.mpp is None
        else:
            assert slide.mpp == pytest.approx(case.mpp, abs=1e-3)
        region = slide.read_region((100, 200), 0, (64, 48))
        assert region.shape == (48, 64, 3) and region.dtype == np.uint8
        np.testing.assert_array_equal(region, _reference(path, case.backend, 100, 200, 64, 48))
        meta = slide.metadata()
        assert meta["level_downsamples"] == [1.0] and "properties" in meta


def test_missing_mpp_warns_and_can_be_given(slides_dir: Path) -> None:
    path = slides_dir / "kidney-48-5.tif"
    with pytest.warns(UserWarning, match="no microns-per-pixel"):
        slide = open_slide(path)
    with pytest.raises(MissingMppError, match="--mpp on the command line"):
        slide.require_mpp()
    slide.close()
    with open_slide(path, mpp=0.25) as slide:
        assert slide.mpp == 0.25


def test_metadata_vendor_and_objective(cmu_slide_path: Path) -> None:
    with open_slide(cmu_slide_path) as slide:
        assert slide.vendor == "aperio"
        assert slide.objective_power == 20
        assert slide.tile_size(0) == (240, 240)
        assert len(slide.fingerprint) == 32


def test_outside_slide_is_white(cmu_slide_path: Path) -> None:
    with open_slide(cmu_slide_path) as slide:
        w, h = slide.dimensions
        px = slide.read_region((w - 10, h - 10), 0, (20, 20))
        assert (px[12:, 12:] == 255).all()


@pytest.mark.parametrize("kind", ["broken", "text", "missing", "empty_dir", "empty_file"])
def test_bad_input_gives_clear_error(slides_dir: Path, tmp_path: Path, kind: str) -> None:
    if kind == "broken":
        path = slides_dir / "broken.svs"
    elif kind == "text":
        path = tmp_path / "notes.svs"
        path.write_text("this is not a slide\n" * 20)
    elif kind == "missing":
        path = tmp_path / "nope.svs"
    elif kind == "empty_dir":
        path = tmp_path / "emptydir"
        path.mkdir()
    else:
        path = tmp_path / "zero.svs"
        path.write_bytes(b"")
    with pytest.raises(SlideReadError) as info:
        open_slide(path)
    assert str(path) in str(info.value) or path.name in str(info.value)


def test_reads_are_thread_safe(cmu_slide_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with open_slide(cmu_slide_path) as slide:
        coords = [(x, y) for x in range(0, 1800, 300) for y in range(0, 2600, 300)]
        serial = [slide.read_region(c, 0, (128, 128)) for c in coords]
        with ThreadPoolExecutor(4) as pool:
            parallel = list(pool.map(lambda c: slide.read_region(c, 0, (128, 128)), coords))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def test_tiffslide_thread_safe(slides_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slide = open_slide(slides_dir / "kidney-48-5.tif")
    with slide:
        coords = [(x, y) for x in range(0, 1400, 200) for y in range(0, 800, 200)]
        serial = [slide.read_region(c, 0, (96, 96)) for c in coords]
        with ThreadPoolExecutor(4) as pool:
            parallel = list(pool.map(lambda c: slide.read_region(c, 0, (96, 96)), coords))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)
