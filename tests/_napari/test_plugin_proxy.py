"""Core code reads a slide only through its public surface, so the slide napari hands plugin widgets (behind
``PublicOnlyProxy``, which warns on every private attribute read) goes to the core unwrapped."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from napari_pathm3.config import TilingConfig
from napari_pathm3.io.patch_reader import PatchReader
from napari_pathm3.io.pyramid import multiscale
from napari_pathm3.io.slide import open_slide
from napari_pathm3.tiling import detect_tissue, make_grid


def test_core_reads_a_slide_behind_naparis_plugin_proxy(cmu_slide_path: Path) -> None:
    from napari.utils._proxies import PublicOnlyProxy

    with open_slide(cmu_slide_path) as real:
        grid = make_grid(real, TilingConfig(min_tissue_fraction=0.0))
        want = PatchReader(real, grid, fast=False).read_batch(np.arange(len(grid)))
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # napari's "Private attribute access" warning
            slide = PublicOnlyProxy(real)
            assert (
                make_grid(slide, TilingConfig(min_tissue_fraction=0.0)).coords.tolist()
                == grid.coords.tolist()
            )
            detect_tissue(slide, use_cache=False)
            for direct in (True, False):  # the direct tile decoder, then OpenSlide's thread-local reader
                reader = PatchReader(slide, grid, num_workers=2, direct_tiles=direct)
                got = np.concatenate([b for _, b in reader.iter_batches(batch_size=16)])
                np.testing.assert_array_equal(got, want)
            top = multiscale(slide)[0]
            np.testing.assert_array_equal(top[:64, :96].compute(), real.read_region((0, 0), 0, (96, 64)))
