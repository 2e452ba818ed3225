"""Shared fixtures: the real slides in ``../shared/data`` (``NAPARI_PATHM3_DATA`` overrides) and small
synthetic pyramidal TIFFs with known mpp and tissue blobs.

Missing test data skips the tests that need it on a developer's machine (with the reason), but FAILS them in
continuous integration (``CI`` set to ``true``/``1``, as GitHub Actions does): a CI run must not pass by
silently skipping. Tests that need a display (``make_napari_viewer``, ``qtbot``) get the ``gui`` marker and
are skipped with a clear reason when there is none, instead of letting Qt abort the interpreter.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("NAPARI_PATHM3_DATA", REPO.parent / "shared" / "data")).resolve()
# the sample-data contribution resolves the CMU slide from here instead of downloading it
os.environ.setdefault("NAPARI_PATHM3_DATA", str(DATA_DIR))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one of several pytest-xdist workers (the README's ``-n``): each keeps to one compute thread, set before
    # torch / OpenMP load, so two workers on two cores do not oversubscribe them (a test that sets its own
    # thread budget still wins: these are defaults)
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NAPARI_PATHM3_THREADS"):
        os.environ.setdefault(_var, "1")


GUI_FIXTURES = {"make_napari_viewer", "make_napari_viewer_proxy", "qtbot", "qapp", "napari_plugin_manager"}


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_module(name: str):
    """``benchmarks/<name>.py`` imported as a module (benchmarks/ is not a package; its scripts import their
    ``_*`` helpers by plain name, so the folder is on sys.path while it loads)."""
    import importlib

    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def in_ci() -> bool:
    """``CI=true`` (GitHub Actions, GitLab, most CI services) or ``CI=1``."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing_data(what: Path) -> None:
    """Skip locally (with the reason and the fix), fail in CI: data that is missing there is a broken setup."""
    msg = f"test data not found: {what} (put the shared data at ../shared/data or set NAPARI_PATHM3_DATA)"
    if in_ci():
        pytest.fail(f"{msg}; CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(f"{msg}; skipped outside CI")


def _need(path: Path) -> Path:
    if not path.exists():
        missing_data(path)
    return path


def has_display() -> bool:
    """Whether Qt can open windows: always on macOS and Windows; on Linux an X11/Wayland display, or a Qt
    platform chosen explicitly (``QT_QPA_PLATFORM``)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return any(os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    display = has_display()
    skip = pytest.mark.skip(reason="needs a display (GUI test): run under `xvfb-run -a python -m pytest`")
    for item in items:
        if GUI_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gui)
        if not display and item.get_closest_marker("gui") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(DATA_DIR)


@pytest.fixture(scope="session")
def slides_dir(shared_data: Path) -> Path:
    return _need(shared_data / "slides")


@pytest.fixture(scope="session")
def cmu_slide_path(slides_dir: Path) -> Path:
    return _need(slides_dir / "CMU-1-Small-Region.svs")


@pytest.fixture(scope="session")
def dicom_dir(slides_dir: Path) -> Path:
    return _need(slides_dir / "CMU-1-Small-Region-dicom")


@pytest.fixture(scope="session")
def captions_csv(shared_data: Path) -> Path:
    return _need(shared_data / "patchgastric" / "captions.csv")


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


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny encoder built offline (tests/features and the encoder flow): a 2-layer, 32-wide ViT saved with ``save_pretrained`` plus its image processor (32 px input)."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_vit")
    cfg = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path
