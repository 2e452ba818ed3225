"""Options shared by ``info`` and ``caption``: tissue detection and the patch grid, so both report and use the
same grid for the same model (``info --model`` reads the grid a model was trained with, without loading it)."""

from __future__ import annotations

import argparse
from typing import Any

from ._checks import FRACTION, LEVEL, MPP


def add_tissue_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tissue detection")
    g.add_argument(
        "--tissue-threshold",
        type=FRACTION,
        default=None,
        metavar="T",
        help="saturation above which a pixel is tissue, 0-1 (default: automatic, Otsu's threshold but at "
        "least 0.05); lower it (e.g. 0.03) for faint stains when 'no tissue detected'",
    )
    g.add_argument(
        "--tissue-mpp",
        type=MPP,
        default=None,
        metavar="UM",
        help="resolution tissue is detected at, µm/px (default 8; the pyramid level read follows from it)",
    )
    g.add_argument(
        "--min-tissue",
        type=FRACTION,
        default=None,
        metavar="F",
        help="keep a patch when at least this fraction of it is tissue, 0-1 (default: the model's, 0.25)",
    )
    g.add_argument(
        "--level",
        type=LEVEL,
        default=None,
        metavar="N",
        help="tile pyramid level N in its own pixels (for slides without mpp, instead of --mpp; the "
        "model's patch size in px)",
    )


def tissue_config(args: argparse.Namespace) -> Any:
    """The :class:`~napari_pathm3.config.TissueConfig` of the options (``None`` = defaults)."""
    from ..config import TissueConfig

    kw: dict[str, Any] = {}
    if args.tissue_threshold is not None:
        kw["threshold"] = args.tissue_threshold
    if args.tissue_mpp is not None:
        kw["target_mpp"] = args.tissue_mpp
    return TissueConfig(**kw) if kw else None


def grid_options(args: argparse.Namespace) -> dict[str, Any]:
    """The grid overrides of ``--min-tissue``, ``--level`` and ``--mpp`` as :class:`CaptionRequest` fields
    (the request's grid rule applies them over the model's tiling)."""
    return {"min_tissue_fraction": args.min_tissue, "level": args.level, "mpp": args.mpp}
