"""Sample data: OpenSlide's CC0 "CMU-1 small region" slide, fetched once with a pinned hash (pooch).

Tests and offline machines point ``NAPARI_PATHM3_DATA`` at a folder that already holds the file (directly or
under ``slides/``); nothing is downloaded then.
"""

from __future__ import annotations

import os
from pathlib import Path

CMU1_NAME = "CMU-1-Small-Region.svs"
CMU1_URL = "https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/CMU-1-Small-Region.svs"
CMU1_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
DATA_ENV = "NAPARI_PATHM3_DATA"


def local_data_dirs() -> list[Path]:
    env = os.environ.get(DATA_ENV)
    if not env:
        return []
    root = Path(env).expanduser()
    return [root, root / "slides"]


def sample_slide_path(*, download: bool = True) -> Path:
    """Path of the CMU-1 small region slide: the local copy when ``NAPARI_PATHM3_DATA`` has it, else the
    pooch cache (downloading and checking the sha256 on first use)."""
    for folder in local_data_dirs():
        candidate = folder / CMU1_NAME
        if candidate.is_file():
            return candidate
    if not download:
        raise FileNotFoundError(f"{CMU1_NAME} not found under ${DATA_ENV} and download=False")
    import pooch

    path = pooch.retrieve(
        url=CMU1_URL,
        known_hash=f"sha256:{CMU1_SHA256}",
        fname=CMU1_NAME,
        path=pooch.os_cache("napari-pathm3"),
        progressbar=False,
    )
    return Path(path)
