"""``napari-pathm3 info SLIDE [--model DIR|demo]``: slide metadata, tissue and grid summary as JSON.

With ``--model`` the patch grid is the one that model captions with (the same count ``caption`` uses);
without it, the default grid (224 px at 0.5 µm/px), which the output says."""

from __future__ import annotations

import argparse
import json
import sys

from .. import api
from ..jobs import CaptionRequest
from ._checks import MPP, PATCH_SIZE
from ._options import add_tissue_options, grid_options, tissue_config

EXAMPLES = """examples:
  napari-pathm3 info slide.svs
  napari-pathm3 info slide.svs --model runs/gastric/best      # patches of that model's grid
  napari-pathm3 info slide.tif --mpp 0.25 --tissue-threshold 0.03
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a slide's metadata, tissue fraction and patch count as JSON")
    p.add_argument("slide", help="slide file or DICOM folder")
    p.add_argument("--mpp", type=MPP, default=None, help="µm/px at level 0 when the slide lacks it")
    p.add_argument(
        "--model", default=None, help="count the patches of this model's grid (checkpoint folder or 'demo')"
    )
    p.add_argument(
        "--patch-size", type=PATCH_SIZE, default=None, help="patch size in px (default: the model's / 224)"
    )
    p.add_argument("--target-mpp", type=MPP, default=None, help="patch µm/px (default: the model's / 0.5)")
    add_tissue_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    tiling, source = api.model_tiling(args.model)
    if args.patch_size is not None or args.target_mpp is not None:
        changes = {k: v for k, v in (("patch_size", args.patch_size), ("target_mpp", args.target_mpp)) if v}
        tiling, source = dataclasses.replace(tiling, **changes), f"{source}, changed by options"
    with api.open_slide(args.slide, mpp=args.mpp) as slide:
        tiling = CaptionRequest(**grid_options(args)).tiling_for(tiling, slide.mpp)  # the captioning rule
        meta = slide.metadata()
        meta.pop("properties")
        if not slide.is_rgb:  # fluorescence / greyscale: metadata only (tissue detection needs RGB)
            json.dump(meta, sys.stdout, indent=2)
            print()
            return 0
        tissue, grid = api.slide_grid(slide, tiling, tissue=tissue_config(args))
        meta["tissue_fraction"] = tissue.tissue_fraction
        meta["tissue_threshold"] = tissue.threshold
        grid_info: dict = {"source": source, **tiling.to_dict()}
        if grid is not None:
            meta["patches"] = len(grid)
            meta["patch_read_level"] = grid.read_level
        else:
            grid_info["note"] = "no patch count: the slide has no mpp; pass --mpp"
        meta["grid"] = grid_info
    json.dump(meta, sys.stdout, indent=2)
    print()
    return 0
