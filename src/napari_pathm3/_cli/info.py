"""``napari-pathm3 info SLIDE``: slide metadata, tissue and grid summary as JSON."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a slide's metadata, tissue fraction and patch count as JSON")
    p.add_argument("slide", help="slide file or DICOM folder")
    p.add_argument("--mpp", type=float, default=None, help="µm/px at level 0 when the slide lacks it")
    p.add_argument("--patch-size", type=int, default=224)
    p.add_argument("--target-mpp", type=float, default=0.5)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import TilingConfig
    from ..io.slide import open_slide
    from ..tiling import detect_tissue, make_grid

    with open_slide(args.slide, mpp=args.mpp) as slide:
        meta = slide.metadata()
        meta.pop("properties")
        if not slide.is_rgb:  # fluorescence / greyscale: metadata only (tissue detection needs RGB)
            json.dump(meta, sys.stdout, indent=2)
            print()
            return 0
        tissue = detect_tissue(slide)
        meta["tissue_fraction"] = tissue.tissue_fraction
        if slide.mpp is not None:
            grid = make_grid(
                slide, TilingConfig(patch_size=args.patch_size, target_mpp=args.target_mpp), tissue=tissue
            )
            meta["patches"] = len(grid)
            meta["patch_read_level"] = grid.read_level
    json.dump(meta, sys.stdout, indent=2)
    print()
    return 0
