"""The OpenSlide fast path of PatchReader (per-thread handles, decode into reusable buffers) returns exactly the
pixels of ``Slide.read_region``, including transparent areas outside the slide, and uses the policy's threads."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.config import TilingConfig
from napari_pathm3.io import patch_reader as reader_mod
from napari_pathm3.io.backends import openslide as openslide_backend
from napari_pathm3.io.patch_reader import PatchReader
from napari_pathm3.io.slide import open_slide
from napari_pathm3.tiling import PatchGrid, make_grid


def _slow(slide, grid: PatchGrid) -> np.ndarray:  # noqa: ANN001
    return PatchReader(slide, grid, block_size=0, fast=False).read_batch(np.arange(len(grid)))


@pytest.mark.parametrize(
    "config",
    [
        TilingConfig(min_tissue_fraction=0.0),
        TilingConfig(min_tissue_fraction=0.0, stride=112),
        TilingConfig(min_tissue_fraction=0.0, target_mpp=0.75, patch_size=64),
    ],
)
def test_fast_path_equals_slide_read_region(cmu_slide_path: Path, config: TilingConfig) -> None:
    with open_slide(cmu_slide_path) as slide:
        grid = make_grid(slide, config)
        reader = PatchReader(slide, grid, num_workers=2, direct_tiles=False)
        assert reader._pixels is not None  # CMU opens with OpenSlide: the fast path is on
        got = np.concatenate([b for _, b in reader.iter_batches(batch_size=16)])
        np.testing.assert_array_equal(got, _slow(slide, grid))
        np.testing.assert_array_equal(
            PatchReader(slide, grid, block_size=0, direct_tiles=False).read_batch([3, 0]), got[[3, 0]]
        )


def test_transparent_blocks_are_composited_on_white(cmu_slide_path: Path) -> None:
    with open_slide(cmu_slide_path) as slide:
        grid = make_grid(slide, TilingConfig(min_tissue_fraction=0.0))
        w, h = slide.dimensions
        # patches hanging over the right and bottom edges: OpenSlide returns transparent pixels there
        coords = np.array([[w - 100, 0], [0, h - 50], [w - 10, h - 10]], np.int64)
        edge = dataclasses.replace(grid.subset(np.arange(3)), coords=coords)
        got = PatchReader(slide, edge, block_size=0, direct_tiles=False).read_batch([0, 1, 2])
        want = _slow(slide, edge)
        np.testing.assert_array_equal(got, want)
        assert (got[0, :, 150:] == 255).all()  # outside the slide: white


def test_reader_threads_have_their_own_handles(cmu_slide_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[int, set[int]] = {}
    original = openslide_backend._ThreadPixels.read

    def spy(self, location, level, size):  # noqa: ANN001
        out = original(self, location, level, size)
        seen.setdefault(threading.get_ident(), set()).add(id(self._local.handle))
        return out

    monkeypatch.setattr(openslide_backend._ThreadPixels, "read", spy)
    with open_slide(cmu_slide_path) as slide:
        grid = make_grid(slide, TilingConfig(min_tissue_fraction=0.0))
        reader = PatchReader(slide, grid, num_workers=2, block_size=0, direct_tiles=False)
        for _ in reader.iter_batches(batch_size=8):
            pass
    handles = [h for hs in seen.values() for h in hs]
    assert len(seen) >= 1 and len(handles) == len(set(handles))  # no handle shared between threads
    assert reader._pixels is not None and reader._pixels._handles == []  # closed after iterating


def test_default_workers_follow_the_thread_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAPARI_PATHM3_THREADS", "3")
    monkeypatch.setattr("napari_pathm3.threads._current", None)
    assert reader_mod.default_workers() == 3
