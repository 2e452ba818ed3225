"""Captioning precomputed patch features (a TRIDENT/CLAM ``.h5``, a ``.zarr`` feature store bag, ``.npy`` /
``.pt`` / ``.safetensors``): no slide is opened; the bag's coordinates (or a row) stand in for the grid."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._types import PathLike, Stage
from ..errors import CheckpointError
from ..jobs import CaptionRequest, RunContext
from ..result import SlideResult
from ..tiling import PatchGrid, TissueMask
from .models import honesty, load_model, model_name, provenance_of
from .stages import STAGES, model_stages

if TYPE_CHECKING:
    from ..io.feature_store import FeatureBag

FEATURE_SUFFIXES = (".h5", ".hdf5", ".npy", ".pt", ".pth", ".safetensors", ".zarr")


def is_feature_bag(target: object) -> bool:
    """True for a path to a feature bag (``.h5``/``.zarr``/... as written by interop or the feature store)."""
    if not isinstance(target, (str, Path)):
        return False
    from ..io.spatialdata import split_table_path

    # a SpatialData table path (store.zarr/tables/<key>) names one of a store's feature tables
    return Path(target).suffix.lower() in FEATURE_SUFFIXES or split_table_path(target)[1] is not None


def caption_feature_bag(
    path: PathLike, request: CaptionRequest, context: RunContext | None = None
) -> SlideResult:
    """Classify and caption a bag of precomputed features. ``slide_path`` is the bag's path; without
    coordinates the patches are laid out in a row."""
    from ..io.interop import read_feature_file

    ctx = context or RunContext()
    pm = load_model(
        request.model, device=request.device, text_side=request.needs_text_side, progress=ctx.progress
    )
    ctx.report(2, len(STAGES), Stage.FEATURES)
    with ctx.timed(Stage.FEATURES):
        bag = read_feature_file(path)
    dim = int(pm.config.feature_dim)
    if bag.features.shape[1] != dim:
        raise CheckpointError(
            f"{path}: features of width {bag.features.shape[1]}, the model expects {dim}; caption bags made "
            f"with the model's encoder ({pm.config.encoder_name or 'unrecorded'})"
        )
    grid = bag_grid(bag)
    out = model_stages(pm, bag.features, request, ctx)
    tissue = TissueMask(np.ones((1, 1), bool), float(max(grid.slide_dimensions)), 0.0)
    return out.result(
        slide_path=str(path),
        slide_dimensions=grid.slide_dimensions,
        mpp_xy=None,
        grid=grid,
        tissue=tissue,
        model_name=model_name(pm),
        demo=pm.config.demo,
        provenance=provenance_of(pm),
        encoder_name=bag.encoder_name,
        device=str(pm.device),
        text=request.text,
        timings=dict(ctx.timings),
        **honesty(pm, bag.features),
    )


def _bag_step(bag: FeatureBag, size0: float) -> float:
    """Level-0 stride of a bag's tiles: a SpatialData tile spec's ``stride_width * base_downsample``."""
    spec = bag.meta.tile_spec or {}
    stride, down = spec.get("stride_width"), spec.get("base_downsample", 1.0)
    if isinstance(stride, (int, float)) and stride > 0 and isinstance(down, (int, float)) and down > 0:
        return float(stride) * float(down)
    return size0


def bag_grid(bag: FeatureBag) -> PatchGrid:
    """The patch grid of a feature bag: its coordinates and patch size (a row of patches without coords)."""
    n = len(bag.features)
    size = int(bag.patch_size or 1)
    # TRIDENT's patch_size_level0 / a SpatialData tile spec: patches read at another magnification
    size0 = float(bag.meta.patch_size_level0 or size)
    coords = bag.coords if bag.coords is not None else np.stack([np.arange(n) * size0, np.zeros(n)], 1)
    coords = np.asarray(coords, dtype=np.int64)
    dims = (int(coords[:, 0].max() + size0), int(coords[:, 1].max() + size0))
    known = bag.meta.slide_dimensions
    if known is not None and all(v > 0 for v in known):
        dims = (max(dims[0], int(known[0])), max(dims[1], int(known[1])))
    return PatchGrid(
        coords=coords,
        patch_size=size,
        mpp=bag.mpp,
        size_level0=size0,
        read_level=0,
        read_size=size,
        step_level0=_bag_step(bag, size0),
        slide_dimensions=dims,
        tissue_fraction=np.ones(n, np.float32),
    )
