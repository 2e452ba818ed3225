"""Fast tissue detection (issue 27 item 2) without losing the mask: disk morphology through the distance
transform equals the structuring-element version, numpy Otsu equals scikit-image's, and a slide without µm/px
is detected on a low-resolution pyramid level with the same mask as with its µm/px."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_pathm3.config import TissueConfig
from napari_pathm3.io.slide import open_slide
from napari_pathm3.tiling.tissue import (
    MIN_SIDE_NO_MPP,
    _dilate,
    _erode,
    detect_tissue,
    detection_downsample,
    threshold_otsu,
)

from ..conftest import blob_image, write_pyramid_tiff


@pytest.mark.parametrize("radius", [1, 3, 4, 5, 12])
def test_disk_morphology_matches_structuring_elements(radius: int) -> None:
    from skimage.morphology import disk

    rng = np.random.default_rng(radius)
    mask = ndimage.gaussian_filter(rng.random((120, 170)), 3) > 0.5
    se = disk(radius).astype(bool)
    r = radius
    closed = ndimage.binary_closing(np.pad(mask, r), se)[r:-r, r:-r]
    np.testing.assert_array_equal(_erode(_dilate(np.pad(mask, r), r), r)[r:-r, r:-r], closed)
    np.testing.assert_array_equal(_dilate(_erode(mask, r), r), ndimage.binary_opening(mask, se))
    assert not _dilate(np.zeros((5, 5), bool), r).any()


def test_numpy_otsu_matches_scikit_image() -> None:
    from skimage.filters import threshold_otsu as reference

    rng = np.random.default_rng(0)
    for _ in range(10):
        values = np.concatenate([rng.normal(0.03, 0.01, 4000), rng.normal(rng.uniform(0.2, 0.6), 0.1, 900)])
        assert threshold_otsu(values.astype(np.float32)) == pytest.approx(
            reference(values.astype(np.float32))
        )


def test_detection_level_does_not_depend_on_knowing_the_mpp() -> None:
    config = TissueConfig()
    assert detection_downsample((40_000, 30_000), 0.5, config) == 16.0
    assert detection_downsample((40_000, 30_000), None, config) == 16.0  # 0.5 µm/px assumed, not level 0
    assert detection_downsample((40_000, 30_000), 0.25, config) == 32.0
    # a small image without µm/px keeps at least MIN_SIDE_NO_MPP pixels (it may be a low-power image)
    assert detection_downsample((1500, 900), None, config) == pytest.approx(1500 / MIN_SIDE_NO_MPP)
    assert detection_downsample((300, 200), None, config) == 1.0


def test_no_mpp_slide_is_detected_on_a_low_level_like_with_mpp(tmp_path: Path) -> None:
    img = blob_image(2048, 4096, blobs=[(400, 300, 1500, 900), (2600, 1000, 700, 800)])
    with_mpp = write_pyramid_tiff(tmp_path / "with.tif", img, mpp=0.5, levels=4)
    without = write_pyramid_tiff(tmp_path / "without.tif", img, mpp=None, levels=4)
    with pytest.warns(UserWarning, match="no microns-per-pixel"):
        b = open_slide(without)
    with open_slide(with_mpp) as a, b:
        ma, mb = detect_tissue(a, use_cache=False), detect_tissue(b, use_cache=False)
    assert mb.downsample >= 8  # a pyramid level, not level 0 (the old rule read 4096 px of level 0 here)
    # the small image keeps 512 px on its long side without µm/px (8x), 16x with: compare at 16x
    assert ma.downsample == 16 and mb.downsample == 8
    coarse = mb.mask.reshape(ma.mask.shape[0], 2, ma.mask.shape[1], 2).mean(axis=(1, 3)) >= 0.5
    dice = 2 * (coarse & ma.mask).sum() / (coarse.sum() + ma.mask.sum())
    assert dice > 0.97
    assert 0.1 < mb.tissue_fraction < 0.5
