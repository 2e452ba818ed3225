"""``napari-pathm3 demo [--headless --out DIR]``: the offline demo (sample slide + a tiny model trained on the
spot; not diagnostic). With a display it opens napari; ``--headless`` writes JSON and a heatmap PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._checks import EPOCHS, add_device

EXAMPLES = """examples:
  napari-pathm3 demo                                  # opens napari with the sample slide
  napari-pathm3 demo --headless --out pathm3-demo     # result.json and heatmap.png, no window
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="offline demo on the sample slide with a tiny model trained on the spot (NOT diagnostic)",
    )
    p.add_argument(
        "--headless", action="store_true", help="no window: write result.json and heatmap.png to --out"
    )
    p.add_argument("--out", type=Path, default=Path("pathm3-demo"), help="output folder for --headless")
    add_device(p)
    p.add_argument("--retrain", action="store_true", help="train the demo model again even when it is cached")
    p.add_argument(
        "--epochs",
        type=EPOCHS,
        default=None,
        help="training epochs of the demo model (default 20; fewer is faster and worse: for smoke tests)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import api
    from ..result import DISCLAIMER
    from .caption import _Bar

    print(DISCLAIMER, file=sys.stderr)
    force = args.retrain or args.epochs is not None  # another epoch count: do not reuse the cached model
    if not args.headless:
        if force:
            api.train_demo(device=args.device, force=True, epochs=args.epochs)
        from ..widgets.launcher import launch_viewer

        launch_viewer()
        return 0
    bar = _Bar(disable=False)
    try:
        if force:
            api.train_demo(device=args.device, force=True, progress=bar, epochs=args.epochs)
        paths = api.run_demo(args.out, device=args.device, progress=bar)
    finally:
        bar.close()
    for kind, path in paths.items():
        print(f"{kind}: {path}", file=sys.stderr)
    return 0
