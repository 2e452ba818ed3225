"""Shared fixtures: the real slides in ``../shared/data`` (``NAPARI_PATHM3_DATA`` overrides) and small
synthetic pyramidal TIFFs with known mpp and tissue blobs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("NAPARI_PATHM3_DATA", REPO.parent / "shared" / "data")).resolve()
# the sample-data contribution resolves the CMU slide from here instead of downloading it
os.environ.setdefault("NAPARI_PATHM3_DATA", str(DATA_DIR))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared test data not found at {DATA_DIR} (set NAPARI_PATHM3_DATA)")
    return DATA_DIR


@pytest.fixture(scope="session")
def slides_dir(shared_data: Path) -> Path:
    return shared_data / "slides"


@pytest.fixture(scope="session")
def cmu_slide_path(slides_dir: Path) -> Path:
    return slides_dir / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def dicom_dir(slides_dir: Path) -> Path:
    return slides_dir / "CMU-1-Small-Region-dicom"


@pytest.fixture(scope="session")
def captions_csv(shared_data: Path) -> Path:
    return shared_data / "patchgastric" / "captions.csv"


def write_pyramid_tiff(
    path: Path,
    image: np.ndarray,
    *,
    mpp: float | None = 0.5,
    levels: int = 3,
    tile: int = 128,
    compression: str = "jpeg",
) -> Path:
    """Write ``image`` as a tiled pyramidal TIFF (SubIFDs, like OME/TRIDENT test slides) that OpenSlide's
    generic-tiff driver and tiffslide both read. Resolution tags carry ``mpp``."""
    import tifffile
    from PIL import Image

    opts: dict = {"tile": (tile, tile), "photometric": "rgb", "compression": compression}
    if compression == "jpeg":
        opts["compressionargs"] = {"level": 95}
    res = {}
    if mpp is not None:
        res = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        h, w = image.shape[:2]
        tif.write(image, **opts, **res, description="napari-pathm3 synthetic slide", metadata=None)
        for lv in range(1, levels):
            f = 2**lv
            if min(h, w) // f < tile:
                break
            small = np.asarray(Image.fromarray(image).resize((w // f, h // f), Image.Resampling.BOX))
            r = (
                {"resolution": (1e4 / (mpp * f), 1e4 / (mpp * f)), "resolutionunit": "CENTIMETER"}
                if mpp
                else {}
            )
            tif.write(small, **opts, **r, subfiletype=1, metadata=None)
    return path


def blob_image(
    h: int = 2048, w: int = 3072, *, blobs: list[tuple[int, int, int, int]] | None = None
) -> np.ndarray:
    """White image with pink 'tissue' rectangles ``(x, y, w, h)`` (H&E-like colour, mild texture)."""
    rng = np.random.default_rng(0)
    img = np.full((h, w, 3), 245, np.uint8)
    for x, y, bw, bh in blobs or []:
        patch = np.empty((bh, bw, 3), np.uint8)
        patch[..., 0] = 200 + rng.integers(-20, 20, (bh, bw))
        patch[..., 1] = 110 + rng.integers(-20, 20, (bh, bw))
        patch[..., 2] = 170 + rng.integers(-20, 20, (bh, bw))
        img[y : y + bh, x : x + bw] = patch
    return img


#: two tissue blobs at known places (level-0 px, x y w h) on a 3072×2048 slide at 0.5 µm/px
BLOBS = [(448, 448, 896, 672), (2016, 1120, 448, 672)]  # aligned to the 224-px grid: 12 + 6 patches


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slides") / "blobs.tif"
    return write_pyramid_tiff(path, blob_image(blobs=BLOBS), mpp=0.5, levels=3)


@pytest.fixture(scope="session")
def blank_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slides") / "blank.tif"
    return write_pyramid_tiff(path, blob_image(1024, 1024), mpp=0.5, levels=2)
