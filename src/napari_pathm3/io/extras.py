"""Optional interchange dependencies (the ``[spatialdata]`` extra): one import helper, one error message."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import PathM3Error

SPATIALDATA_EXTRA = "pip install 'napari-pathm3[spatialdata]'"


class MissingExtraError(PathM3Error):
    """An optional dependency of an export/import format is not installed."""


def require(module: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise a one-line :class:`MissingExtraError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{purpose} needs the optional package {module.split('.')[0]!r}: {SPATIALDATA_EXTRA}"
        ) from err
