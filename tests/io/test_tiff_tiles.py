"""Direct TIFF tile decoding (io/backends/tiff_tiles.py) gives exactly OpenSlide's pixels, and PatchReader uses it
only where it can: other patches (past the slide edge, other formats) still go through the slide."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.config import TilingConfig
from napari_pathm3.io.backends.tiff_tiles import TiffTiles
from napari_pathm3.io.patch_reader import PatchReader
from napari_pathm3.io.slide import open_slide
from napari_pathm3.tiling import make_grid

from ..conftest import blob_image, write_pyramid_tiff


def _slow(slide, grid) -> np.ndarray:  # noqa: ANN001
    return PatchReader(slide, grid, block_size=0, fast=False).read_batch(np.arange(len(grid)))


def _tiles_read(slide, grid, **kw) -> tuple[PatchReader, np.ndarray]:  # noqa: ANN001
    reader = PatchReader(slide, grid, num_workers=2, **kw)
    got = np.concatenate([b for _, b in reader.iter_batches(batch_size=16)])
    return reader, got


@pytest.mark.parametrize(
    "config",
    [
        TilingConfig(min_tissue_fraction=0.0),
        TilingConfig(min_tissue_fraction=0.0, stride=112),
        TilingConfig(min_tissue_fraction=0.0, target_mpp=0.75, patch_size=64),
    ],
)
def test_svs_tiles_equal_openslide(cmu_slide_path: Path, config: TilingConfig) -> None:
    with open_slide(cmu_slide_path) as slide:
        grid = make_grid(slide, config)
        reader, got = _tiles_read(slide, grid)
        assert reader._tiles is not None  # Aperio SVS, JPEG tiles: decoded directly
        np.testing.assert_array_equal(got, _slow(slide, grid))


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = blob_image(1024, 1536, blobs=[(100, 130, 900, 600)])
    return write_pyramid_tiff(tmp_path_factory.mktemp("tt") / "p.tif", image, mpp=0.5, levels=3, tile=128)


@pytest.mark.parametrize("target_mpp", [0.5, 1.0, 2.0])  # levels 0, 1, 2 (whole-pixel downsamples)
def test_generic_tiff_levels_equal_openslide(pyramid: Path, target_mpp: float) -> None:
    with open_slide(pyramid) as slide:
        assert slide.backend == "openslide"
        grid = make_grid(slide, TilingConfig(min_tissue_fraction=0.0, target_mpp=target_mpp, patch_size=96))
        reader, got = _tiles_read(slide, grid)
        assert reader._tiles is not None and reader._tiles.supports(grid.read_level)
        np.testing.assert_array_equal(got, _slow(slide, grid))


def test_patches_past_the_edge_fall_back_to_the_slide(pyramid: Path) -> None:
    with open_slide(pyramid) as slide:
        grid = make_grid(slide, TilingConfig(min_tissue_fraction=0.0, patch_size=96))
        w, h = slide.dimensions
        coords = np.array([[w - 40, 0], [0, h - 30], [w - 96, h - 96], [128, 128]], np.int64)
        edge = dataclasses.replace(grid.subset(np.arange(4)), coords=coords)
        got = PatchReader(slide, edge, block_size=0).read_batch(np.arange(4))
        np.testing.assert_array_equal(got, _slow(slide, edge))
        assert (got[0, :, 40:] == 255).all()  # outside the slide: white, as OpenSlide + compositing give


def test_cache_is_bounded_and_close_reopens(pyramid: Path) -> None:
    with open_slide(pyramid) as slide:
        tiles = slide.tile_decoder()
        assert isinstance(tiles, TiffTiles)
        tiles._cache_bytes = 3 * 128 * 128 * 3  # three tiles
        out = np.empty((300, 300, 3), np.uint8)
        assert tiles.read_into(0, 10, 10, out)  # 3 x 3 tiles
        assert len(tiles._cache) <= 3
        np.testing.assert_array_equal(out, slide.read_level_region(10, 10, 0, 300, 300))
        tiles.close()
        assert tiles.read_into(0, 0, 0, out[:50, :50]) and tiles._fd >= 0
        assert not tiles.read_into(0, 1500, 0, out)  # leaves the level: the caller reads it
        tiles.close()


def test_other_backends_and_formats_are_not_decoded_here(cmu_slide_path: Path, tmp_path: Path) -> None:
    stripped = tmp_path / "s.tif"
    import tifffile

    tifffile.imwrite(stripped, blob_image(256, 256), photometric="rgb")  # not tiled
    for path in (stripped,):
        with open_slide(path) as slide:
            assert slide.tile_decoder() is None
    with open_slide(cmu_slide_path) as slide:
        assert PatchReader(slide, make_grid(slide, TilingConfig()), fast=False)._tiles is None


def test_a_tile_the_decoder_rejects_is_read_through_the_slide(
    pyramid: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from napari_pathm3.io.pyramid import multiscale

    def broken(self, level, lv, index):  # noqa: ANN001
        raise ValueError("corrupt JPEG data")

    with open_slide(pyramid) as slide:
        grid = make_grid(slide, TilingConfig(min_tissue_fraction=0.0, patch_size=96))
        want = _slow(slide, grid)
        direct = multiscale(slide)[0]
        monkeypatch.setattr(TiffTiles, "_tile", broken)
        _, got = _tiles_read(slide, grid)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(
            direct[:200, :300].compute(), slide.read_level_region(0, 0, 0, 300, 200)
        )
