"""napari-pathm3: PathM3 whole-slide classification and captioning in napari.

Importing the package is cheap (no torch, no Qt): the scripting API lives in :mod:`napari_pathm3.api`
and its names are re-exported lazily here.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API_NAMES = {
    "open_slide",
    "extract_features",
    "load_model",
    "caption_slide",
    "query_heatmap",
    "train",
    "show",
}


def __getattr__(name: str) -> Any:
    if name in _API_NAMES:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'napari_pathm3' has no attribute {name!r}")


__all__ = ["__version__", *sorted(_API_NAMES)]
