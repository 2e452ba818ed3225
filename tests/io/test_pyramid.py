"""Lazy multiscale pyramid: chunks = native tiles, reads only what is looked at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.io.pyramid import multiscale, read_downsampled
from napari_pathm3.io.slide import open_slide


def test_levels_match_direct_reads(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        levels = multiscale(slide)
        assert len(levels) == 3
        for i, arr in enumerate(levels):
            w, h = slide.level_dimensions[i]
            assert arr.shape == (h, w, 3) and arr.dtype == np.uint8
            # native tiles are 128 px; chunks group them to >= 256 px, still tile-aligned
            assert arr.chunksize[0] % 128 == 0 and arr.chunksize[1] % 128 == 0
        block = levels[1][100:228, 300:500].compute()
        np.testing.assert_array_equal(block, slide.read_region((600, 200), 1, (200, 128)))


def test_laziness_counts_reads(synthetic_slide: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating the pyramid reads nothing beyond the validation tile; viewing a corner reads one chunk."""
    from napari_pathm3.io import slide as slide_mod

    calls: list[tuple] = []
    with open_slide(synthetic_slide) as slide:
        original = slide_mod.Slide.read_region

        def counting(self, location, level, size):  # type: ignore[no-untyped-def]
            calls.append((location, level, size))
            return original(self, location, level, size)

        monkeypatch.setattr(slide_mod.Slide, "read_region", counting)
        levels = multiscale(slide, direct_tiff=False)  # the OpenSlide path (TIFFs: see test_pyramid_tiff.py)
        assert calls == []
        corner = levels[0][:100, :100].compute()
        assert corner.shape == (100, 100, 3)
        assert len(calls) == 1  # one chunk, not the level
        levels[2][:10, :10].compute()
        assert len(calls) == 2


def test_untiled_tiff_is_chunked(slides_dir: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slide = open_slide(slides_dir / "kidney-48-5.tif")
    with slide:
        (arr,) = multiscale(slide)
        assert arr.shape == (901, 1493, 3)
        assert max(arr.chunksize[:2]) <= 1024  # never one whole-image chunk


def test_read_downsampled_bounded_blocks(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        thumb = read_downsampled(slide, 8.0, block=256)
        assert thumb.shape == (256, 384, 3)
        ref = read_downsampled(slide, 8.0, block=4096)
        assert np.abs(thumb.astype(int) - ref.astype(int)).mean() < 2
        assert slide.thumbnail(512).shape == (341, 512, 3) or slide.thumbnail(512).shape[1] == 512
