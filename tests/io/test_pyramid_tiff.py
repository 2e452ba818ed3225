"""Plain tiled RGB TIFF/SVS pyramids are shown from directly decoded tiles: same pixels as OpenSlide,
tile-aligned chunks, nothing read until a chunk is computed; other files keep the OpenSlide path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from napari_pathm3.io.pyramid import multiscale
from napari_pathm3.io.slide import open_slide


def test_tiff_levels_equal_openslide_levels(synthetic_slide: Path, cmu_slide_path: Path) -> None:
    for path in (synthetic_slide, cmu_slide_path):
        with open_slide(path) as slide:
            direct, plain = multiscale(slide), multiscale(slide, direct_tiff=False)
            assert [a.name.startswith("pathm3-tiff-") for a in direct] == [True] * slide.level_count
            for d, p in zip(direct, plain, strict=True):
                assert d.shape == p.shape and d.dtype == p.dtype and d.chunksize == p.chunksize
            lv = len(direct) - 1
            np.testing.assert_array_equal(direct[lv][:300, :300].compute(), plain[lv][:300, :300].compute())
            np.testing.assert_array_equal(
                direct[0][200:456, 300:700].compute(), plain[0][200:456, 300:700].compute()
            )


def test_other_files_keep_the_openslide_path(slides_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slide = open_slide(slides_dir / "kidney-48-5.tif")  # stripped TIFF: tiffslide backend
    with slide:
        assert not multiscale(slide)[0].name.startswith("pathm3-tiff-")
