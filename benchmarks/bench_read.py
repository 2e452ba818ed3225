"""Patch reader throughput: the project's threaded PatchReader vs a naive single-threaded read_region loop
over the same patches, measured in the same run. Prints one JSON line.

    python benchmarks/bench_read.py [SLIDE] [--repeat 3] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SLIDE = Path(os.environ.get("NAPARI_PATHM3_DATA", HERE.parent.parent / "shared" / "data")) / "slides" / "CMU-1-Small-Region.svs"


def naive(slide_path: Path, coords: np.ndarray, size: int) -> float:
    """The baseline: one OpenSlide handle, one thread, read_region + RGBA->RGB per patch."""
    import openslide

    t = time.perf_counter()
    with openslide.OpenSlide(str(slide_path)) as s:
        for x, y in coords:
            np.asarray(s.read_region((int(x), int(y)), 0, (size, size)).convert("RGB"))
    return time.perf_counter() - t


def ours(slide_path: Path, workers: int | None, batch: int) -> tuple[float, int]:
    from napari_pathm3.config import TilingConfig
    from napari_pathm3.io.slide import open_slide
    from napari_pathm3.tiling import PatchReader, make_grid

    with open_slide(slide_path) as slide:
        grid = make_grid(slide, TilingConfig(min_tissue_fraction=0.0, stride=112))
        t = time.perf_counter()
        n = sum(len(b) for _, b in PatchReader(slide, grid, num_workers=workers).iter_batches(batch_size=batch))
        return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("slide", nargs="?", default=str(DEFAULT_SLIDE))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    from napari_pathm3.config import TilingConfig
    from napari_pathm3.io.slide import open_slide
    from napari_pathm3.tiling import make_grid

    path = Path(args.slide)
    with open_slide(path) as slide:
        grid = make_grid(slide, TilingConfig(min_tissue_fraction=0.0, stride=112))  # overlapping grid: many reads
    naive_t = min(naive(path, grid.coords, grid.read_size) for _ in range(args.repeat))
    ours_runs = [ours(path, args.workers, args.batch) for _ in range(args.repeat)]
    ours_t, n = min(r[0] for r in ours_runs), ours_runs[0][1]
    print(json.dumps({
        "bench": "read", "slide": path.name, "patches": n, "patch_size": grid.read_size,
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(), "python": sys.version.split()[0],
        "naive_patches_per_s": round(n / naive_t, 1), "reader_patches_per_s": round(n / ours_t, 1),
        "speedup": round(naive_t / ours_t, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
