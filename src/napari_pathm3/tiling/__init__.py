"""Tissue detection and patch grids (pure geometry over a slide's metadata)."""

from .grid import PatchGrid, check_grid, make_grid
from .reader import PatchReader
from .tissue import TissueMask, detect_tissue

__all__ = ["PatchGrid", "PatchReader", "check_grid", "TissueMask", "detect_tissue", "make_grid"]
