"""Where napari-pathm3 keeps its user files (stdlib; ``platformdirs`` imported on use)."""

from __future__ import annotations

import os
from pathlib import Path

#: environment variable that moves every cache of the package (features, demo model) to one folder
CACHE_ENV = "NAPARI_PATHM3_CACHE"


def user_cache_dir(*parts: str) -> Path:
    """``$NAPARI_PATHM3_CACHE`` or the platform's user cache folder for napari-pathm3, joined with ``parts``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        import platformdirs

        base = Path(platformdirs.user_cache_dir("napari-pathm3"))
    return base.joinpath(*parts)
