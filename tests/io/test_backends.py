"""Slide backends behind one protocol: the enum-driven registry, metadata answered by each backend, fast
paths found by capability, and a new backend that is one module plus one enum member."""

from __future__ import annotations

import importlib
import sys
from enum import Enum
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.config import TilingConfig
from napari_pathm3.errors import NotBrightfieldError
from napari_pathm3.io import backends
from napari_pathm3.io.backends import BackendKind, Fit, backend_class
from napari_pathm3.io.backends.base import RGB8
from napari_pathm3.io.patch_reader import PatchReader
from napari_pathm3.io.pyramid import multiscale
from napari_pathm3.io.slide import open_slide
from napari_pathm3.tiling import make_grid

from ..conftest import blob_image

BACKENDS_DIR = Path(backends.__file__).parent


@pytest.mark.parametrize("kind", list(BackendKind))
def test_every_kind_is_the_module_of_its_name(kind: BackendKind) -> None:
    cls = backend_class(kind)
    assert cls.kind is kind
    assert (BACKENDS_DIR / f"{kind.value}.py").is_file()
    assert cls.__module__ == f"{backends.__name__}.{kind.value}"


def test_an_unknown_backend_is_named_with_the_choices(cmu_slide_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown slide backend 'openslid'.*'auto'.*'tiffslide'"):
        open_slide(cmu_slide_path, backend="openslid")


@pytest.mark.parametrize("kind", [BackendKind.OPENSLIDE, BackendKind.TIFFSLIDE])
def test_backends_parse_their_own_vendor_metadata(cmu_slide_path: Path, kind: BackendKind) -> None:
    with open_slide(cmu_slide_path, backend=kind) as slide:
        assert slide.backend is kind and slide.backend == kind.value  # a str enum: equal to its name
        assert slide.mpp_xy == pytest.approx((0.499, 0.499))
        assert slide.objective_power == 20.0
        assert slide.is_rgb and (slide.dtype, slide.channels) == (RGB8.dtype, RGB8.channels)
        assert slide.tile_size(0) == (240, 240)
        assert slide.vendor == "aperio"


def test_fast_paths_come_from_capabilities(cmu_slide_path: Path, tmp_path: Path) -> None:
    with open_slide(cmu_slide_path, backend=BackendKind.OPENSLIDE) as slide:
        reader, tiles = slide.pixel_reader(), slide.tile_decoder()
        assert reader is not None and tiles is not None  # OpenSlide offers both on an Aperio SVS
        reader.close()
        tiles.close()
    with open_slide(cmu_slide_path, backend=BackendKind.TIFFSLIDE) as slide:
        assert slide.pixel_reader() is None  # tiffslide: no thread-local reader
        tiles = slide.tile_decoder()
        assert tiles is not None and tiles.supports(0)
        tiles.close()
    grey = tmp_path / "grey16.tif"
    import tifffile

    tifffile.imwrite(
        grey, (np.arange(64 * 96, dtype=np.uint16).reshape(64, 96) * 7), photometric="minisblack"
    )
    assert backend_class(BackendKind.TIFFFILE).fit(grey) is Fit.ONLY
    with pytest.warns(UserWarning, match="microns-per-pixel"), open_slide(grey) as slide:
        assert slide.backend is BackendKind.TIFFFILE and slide.pixel_kind() == "16-bit greyscale"
        assert slide.tile_decoder() is None and slide.pixel_reader() is None
        assert slide.read_level_native(0, 0, 0, 4, 1)[0, :, 0].tolist() == [0, 7, 14, 21]
        with pytest.raises(NotBrightfieldError):
            slide.read_region((0, 0), 0, (4, 4))


@pytest.fixture
def npy_kind(monkeypatch: pytest.MonkeyPatch) -> BackendKind:
    """``BackendKind`` with one member more, ``NPY``, whose module is ``tests/io/npy_backend.py``: what adding
    ``NPY = auto()`` to the enum and ``io/backends/npy.py`` to the package does."""
    extended = Enum("BackendKind", [*((k.name, k.value) for k in BackendKind), ("NPY", "npy")], type=str)
    monkeypatch.setattr(backends, "BackendKind", extended)
    monkeypatch.delitem(sys.modules, "tests.io.npy_backend", raising=False)
    module = importlib.import_module("tests.io.npy_backend")  # reads the extended enum at import
    monkeypatch.setitem(sys.modules, f"{backends.__name__}.npy", module)
    return extended("npy")


def test_a_new_backend_is_one_module_and_one_enum_member(npy_kind: BackendKind, tmp_path: Path) -> None:
    image = blob_image(300, 420, blobs=[(40, 60, 250, 200)])
    path = tmp_path / "slide.npy"
    np.save(path, image)
    with open_slide(path, mpp=0.5) as slide:  # "auto" asks every member's fit(): the array is the new one's
        assert slide.backend == npy_kind and slide.vendor == "numpy"
        assert slide.dimensions == (420, 300)
        np.testing.assert_array_equal(slide.read_region((10, 20), 0, (50, 40)), image[20:60, 10:60])
        past = slide.read_region((400, 290), 0, (40, 20))  # outside the array: white, as for every slide
        assert (past[10:, :] == 255).all() and (past[:, 20:] == 255).all()

        grid = make_grid(slide, TilingConfig(patch_size=64, target_mpp=0.5, min_tissue_fraction=0.0))
        want = PatchReader(slide, grid, fast=False).read_batch(np.arange(len(grid)))
        reader = PatchReader(slide, grid, num_workers=2)
        tiles = reader._tiles
        assert tiles is not None and type(tiles).__name__ == "NpyTiles"  # the capability's fast path
        got = np.concatenate([b for _, b in reader.iter_batches(batch_size=8)])
        np.testing.assert_array_equal(got, want)
        assert tiles.reads >= len(grid) // 2  # most patches came through it

        (level,) = multiscale(slide)  # the napari pyramid uses the same decoder
        assert level.name.startswith("pathm3-tiff-")
        np.testing.assert_array_equal(level[:130, :200].compute(), image[:130, :200])


def test_without_the_new_member_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "slide.npy"
    np.save(path, blob_image(64, 64))
    from napari_pathm3.errors import SlideReadError

    with pytest.raises(SlideReadError, match="cannot open as a whole-slide image"):
        open_slide(path)


def test_tiffslide_pyramid_from_direct_tiles_equals_its_own_reads(cmu_slide_path: Path) -> None:
    with open_slide(cmu_slide_path, backend=BackendKind.TIFFSLIDE) as slide:
        (direct,), (plain,) = multiscale(slide), multiscale(slide, direct_tiff=False)
        assert direct.name.startswith("pathm3-tiff-") and not plain.name.startswith("pathm3-tiff-")
        np.testing.assert_array_equal(direct[200:456, 300:700].compute(), plain[200:456, 300:700].compute())


@pytest.mark.parametrize("kind", list(BackendKind))
def test_a_backends_name_appears_only_in_its_module(kind: BackendKind) -> None:
    """No code outside the backend's module switches on its name (the readers ask for capabilities)."""
    src = BACKENDS_DIR.parents[1]
    own = BACKENDS_DIR / f"{kind.value}.py"
    hits = [
        f"{p.relative_to(src)}:{i}"
        for p in sorted(src.rglob("*.py"))
        if p != own
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if f'"{kind.value}"' in line or f"'{kind.value}'" in line
    ]
    assert hits == []
