"""Tissue detection and patch grid on synthetic slides with known tissue, and on the CMU slide."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.config import TilingConfig, TissueConfig
from napari_pathm3.errors import MissingMppError
from napari_pathm3.io.patch_reader import PatchReader
from napari_pathm3.io.slide import open_slide
from napari_pathm3.tiling import detect_tissue, make_grid
from napari_pathm3.tiling.tissue import detect_tissue_array

from ..conftest import BLOBS


def _expected_coords(step: int = 224) -> set[tuple[int, int]]:
    out = set()
    for x, y, w, h in BLOBS:
        for yy in range(y, y + h, step):
            for xx in range(x, x + w, step):
                out.add((xx, yy))
    return out


def test_tissue_mask_matches_blobs(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        tissue = detect_tissue(slide, TissueConfig(target_mpp=8.0))
    assert tissue.downsample == pytest.approx(16.0)
    truth = np.zeros_like(tissue.mask)
    for x, y, w, h in BLOBS:
        truth[y // 16 : (y + h) // 16, x // 16 : (x + w) // 16] = True
    iou = (tissue.mask & truth).sum() / (tissue.mask | truth).sum()
    assert iou > 0.95


def test_grid_exact_coordinates(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        grid = make_grid(slide, TilingConfig(patch_size=224, target_mpp=0.5, min_tissue_fraction=0.5))
    assert {tuple(c) for c in grid.coords.tolist()} == _expected_coords()
    assert len(grid) == 18 and grid.read_level == 0 and grid.read_size == 224 and grid.mpp == 0.5
    assert (grid.tissue_fraction > 0.9).all()


def test_grid_at_lower_resolution_reads_pyramid_level(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        grid = make_grid(slide, TilingConfig(patch_size=112, target_mpp=1.0, min_tissue_fraction=0.5))
        assert grid.read_level == 1 and grid.read_size == 112 and not grid.needs_resize
        assert grid.size_level0 == 224
        assert {tuple(c) for c in grid.coords.tolist()} == _expected_coords()
        # 0.75 µm/px is not stored: read level 0 (never upsample) and resize 168 -> 112
        grid = make_grid(slide, TilingConfig(patch_size=112, target_mpp=0.75, min_tissue_fraction=0.5))
        assert grid.read_level == 0 and grid.read_size == 168 and grid.needs_resize
        patches = PatchReader(slide, grid).read_batch([0, 1])
        assert patches.shape == (2, 112, 112, 3)


def test_grid_stride_and_overlap(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        tissue = detect_tissue(slide)
        half = make_grid(slide, TilingConfig.with_overlap(0.5, min_tissue_fraction=0.5), tissue=tissue)
        full = make_grid(slide, TilingConfig(min_tissue_fraction=0.5), tissue=tissue)
    assert half.step_level0 == 112
    assert len(half) > 3 * len(full)
    assert {tuple(c) for c in full.coords.tolist()} <= {tuple(c) for c in half.coords.tolist()}


def test_blank_slide_gives_zero_patches(blank_slide: Path, caplog: pytest.LogCaptureFixture) -> None:
    with open_slide(blank_slide) as slide:
        with caplog.at_level("INFO"):
            tissue = detect_tissue(slide)
        assert tissue.empty
        assert "no tissue" in caplog.text
        assert len(make_grid(slide, tissue=tissue)) == 0


def test_uniform_image_is_not_an_error() -> None:
    mask, thr = detect_tissue_array(np.full((64, 64, 3), 255, np.uint8), um_per_px=8, config=TissueConfig())
    assert not mask.any() and thr == float("inf")


def test_no_mpp_needs_level_and_pixels(slides_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slide = open_slide(slides_dir / "kidney-48-5.tif")
    with slide:
        with pytest.raises(MissingMppError):
            make_grid(slide, TilingConfig())
        grid = make_grid(slide, TilingConfig(target_mpp=None, level=0, patch_size=256, min_tissue_fraction=0))
        assert len(grid) == (901 // 256) * (1493 // 256) and grid.mpp is None


def test_cmu_grid_and_reader(cmu_slide_path: Path) -> None:
    with open_slide(cmu_slide_path) as slide:
        grid = make_grid(slide)
        assert 30 < len(grid) < 80
        assert grid.read_level == 0 and grid.read_size == 224  # 0.499 is within 5% of 0.5
        reader = PatchReader(slide, grid, num_workers=2)
        got = np.concatenate([b for _, b in reader.iter_batches(batch_size=16)])
        assert got.shape == (len(grid), 224, 224, 3)
        x, y = grid.coords[5]
        np.testing.assert_array_equal(got[5], slide.read_region((int(x), int(y)), 0, (224, 224)))


def test_reader_cancel(cmu_slide_path: Path) -> None:
    from napari_pathm3._types import CancelFlag
    from napari_pathm3.errors import Cancelled

    flag = CancelFlag()
    with open_slide(cmu_slide_path) as slide:
        grid = make_grid(slide)
        it = PatchReader(slide, grid).iter_batches(batch_size=8, cancel=flag)
        next(it)
        flag.set()
        with pytest.raises(Cancelled):
            next(it)


@pytest.mark.parametrize("target_mpp", [1e-55, 1e-9])
def test_an_absurd_target_mpp_is_refused_before_positions_are_allocated(
    synthetic_slide: Path, target_mpp: float
) -> None:
    # found by the slow CLI fuzz: numpy's "Maximum allowed size exceeded" instead of the grid's refusal
    from napari_pathm3.errors import GridError

    with open_slide(synthetic_slide) as slide, pytest.raises(GridError, match="the mpp is probably wrong"):
        make_grid(slide, TilingConfig(target_mpp=target_mpp))
