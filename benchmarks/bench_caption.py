"""End-to-end "Caption slide" on CPU with the offline demo model and the built-in encoder.

1. The CMU sample slide, whole: seconds per run (min/median of ``--repeat``), seconds per stage
   (tissue, patches, features, model, caption) and peak RSS growth.
2. Growing square regions of the large synthetic slide (``--sizes`` patches): seconds, patches/s and peak
   RSS growth against the number of patches (the docs plot). ``--whole-large`` adds the whole large slide.

The demo model is trained once and cached before any clock starts. No feature cache is used, so every run
reads and encodes its patches. Prints one JSON line; ``--profile`` prints a cProfile top list to stderr.

    python benchmarks/bench_caption.py [--repeat 2] [--sizes 256,1024,4096] [--whole-large] [--profile]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import CMU_SLIDE, emit, machine, rss_mb  # noqa: E402


class PeakRSS:
    """Samples RSS every 20 ms in a thread; ``growth`` is the peak above the RSS at start."""

    def __init__(self) -> None:
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def growth(self) -> float:
        return self.peak - self.start


def run_once(api: Any, slide: Any, model: Any, region: list[np.ndarray] | None = None) -> dict[str, Any]:
    with PeakRSS() as mem:
        t = time.perf_counter()
        result = api.caption_slide(slide, model=model, device="cpu", region=region)
        wall = time.perf_counter() - t
    return {
        "seconds": round(wall, 3),
        "patches": result.num_patches,
        "patches_per_s": round(result.num_patches / wall, 1),
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
        "peak_rss_growth_mb": round(mem.growth),
        "label": result.label,
        "caption": result.caption[:80],
    }


def square_regions(slide: Any, sizes: list[int], model: Any) -> list[tuple[int, list[np.ndarray]]]:
    """For each target patch count, a square around the densest tissue holding about that many patches
    of the grid the model tiles with."""
    from napari_pathm3 import _backend
    from napari_pathm3.config import TilingConfig
    from napari_pathm3.tiling import make_grid

    grid = make_grid(slide, _backend.model_tiling(model) or TilingConfig())
    if len(grid) == 0:
        return []
    centers = grid.centers()
    # start from the patch with the most tissue patches within ~20 patches (a dense spot)
    cell = grid.size_level0 * 20
    keys = np.floor(centers / cell).astype(np.int64)
    uniq, counts = np.unique(keys, axis=0, return_counts=True)
    c = (uniq[np.argmax(counts)] + 0.5) * cell
    cheb = np.abs(centers - c).max(axis=1)
    order = np.sort(cheb)
    out = []
    for n in sizes:
        if n > len(order):
            break
        half = float(order[n - 1]) + 1.0
        x0, y0, x1, y1 = c[0] - half, c[1] - half, c[0] + half, c[1] + half
        out.append((n, [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--sizes", default="256,1024,4096", help="patch counts of the large-slide regions")
    ap.add_argument("--whole-large", action="store_true", help="also caption the whole large slide")
    ap.add_argument("--no-large", action="store_true")
    ap.add_argument("--slide", default=str(CMU_SLIDE))
    ap.add_argument("--profile", action="store_true", help="cProfile the largest region run (stderr)")
    args = ap.parse_args()

    import torch

    from napari_pathm3 import api
    from napari_pathm3.demo import ensure_demo_model

    t = time.perf_counter()
    model = api.load_model(ensure_demo_model(device="cpu"), device="cpu")
    setup_s = time.perf_counter() - t
    record: dict[str, Any] = {"bench": "caption", "machine": machine(), "device": "cpu",
                              "torch_threads": torch.get_num_threads(), "demo_model_setup_s": round(setup_s, 2)}  # fmt: skip

    with api.open_slide(args.slide) as slide:
        runs = [run_once(api, slide, model) for _ in range(max(1, args.repeat))]
    secs = [r["seconds"] for r in runs]
    record["cmu"] = {**runs[int(np.argmin(secs))], "slide": Path(args.slide).name,
                     "seconds_min": min(secs), "seconds_median": float(np.median(secs))}  # fmt: skip

    if not args.no_large:
        from make_large_slide import large_slide

        path = large_slide()
        sizes = [int(s) for s in args.sizes.split(",") if s]
        rows = []
        with api.open_slide(path) as slide:
            regions = square_regions(slide, sizes, model)
            for i, (n, region) in enumerate(regions):
                if args.profile and i == len(regions) - 1:
                    import cProfile
                    import pstats

                    prof = cProfile.Profile()
                    prof.enable()
                    row = run_once(api, slide, model, region)
                    prof.disable()
                    pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
                    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
                else:
                    row = run_once(api, slide, model, region)
                rows.append({"target": n, **row})
            if args.whole_large:
                rows.append({"target": "whole", **run_once(api, slide, model)})
        record["large"] = {"slide": path.name, "regions": rows}
    emit(record)


if __name__ == "__main__":
    main()
