"""Tissue detection and patch grids (pure geometry over a slide's metadata; reading patches is I/O:
:mod:`napari_pathm3.io.patch_reader`)."""

from .grid import PatchGrid, check_grid, make_grid
from .tissue import TissueMask, detect_tissue

__all__ = ["PatchGrid", "check_grid", "TissueMask", "detect_tissue", "make_grid"]
