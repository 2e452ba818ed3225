"""Patch reader throughput: the project's threaded, block-reading PatchReader vs a naive single-threaded
OpenSlide ``read_region`` loop over the same patches, measured in the same run. Prints one JSON line.

Two grids on the slide (224 px at 0.5 µm/px, every patch, no tissue filter): ``overlap`` (stride 112, the
original benchmark: neighbouring patches share pixels) and ``tiled`` (stride 224, what extraction uses).
Runs are interleaved (naive, reader, naive, ...) and the best of ``--repeat`` is kept, because a shared
machine's load drifts between measurements.

    python benchmarks/bench_read.py [SLIDE] [--repeat 5] [--workers N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CMU_SLIDE, emit, machine, parallel_headroom  # noqa: E402

DEFAULT_SLIDE = CMU_SLIDE


def naive(slide_path: Path, coords: np.ndarray, size: int) -> float:
    """The baseline: one OpenSlide handle, one thread, read_region + RGBA->RGB per patch."""
    import openslide

    t = time.perf_counter()
    with openslide.OpenSlide(str(slide_path)) as s:
        for x, y in coords:
            np.asarray(s.read_region((int(x), int(y)), 0, (size, size)).convert("RGB"))
    return time.perf_counter() - t


def ours(slide_path: Path, stride: int, workers: int | None, batch: int) -> tuple[float, int]:
    from napari_pathm3.config import TilingConfig
    from napari_pathm3.io.slide import open_slide
    from napari_pathm3.tiling import PatchReader, make_grid

    with open_slide(slide_path) as slide:
        grid = make_grid(slide, TilingConfig(min_tissue_fraction=0.0, stride=stride))
        t = time.perf_counter()
        n = sum(
            len(b) for _, b in PatchReader(slide, grid, num_workers=workers).iter_batches(batch_size=batch)
        )
        return time.perf_counter() - t, n


def measure(path: Path, stride: int, args: argparse.Namespace) -> dict[str, float | int]:
    from napari_pathm3.config import TilingConfig
    from napari_pathm3.io.slide import open_slide
    from napari_pathm3.tiling import make_grid

    with open_slide(path) as slide:
        grid = make_grid(slide, TilingConfig(min_tissue_fraction=0.0, stride=stride))
    naive_t, ours_t, n = [], [], len(grid)
    for _ in range(max(1, args.repeat)):
        naive_t.append(naive(path, grid.coords, grid.read_size))
        t, n = ours(path, stride, args.workers, args.batch)
        ours_t.append(t)
    return {
        "patches": n, "patch_size": grid.read_size, "stride": stride,
        "naive_patches_per_s": round(n / min(naive_t), 1), "reader_patches_per_s": round(n / min(ours_t), 1),
        "speedup": round(min(naive_t) / min(ours_t), 2),
        "speedup_median": round(float(np.median(naive_t) / np.median(ours_t)), 2),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("slide", nargs="?", default=str(DEFAULT_SLIDE))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    path = Path(args.slide)
    headroom = parallel_headroom()
    overlap = measure(path, 112, args)
    tiled = measure(path, 224, args)
    emit({
        "bench": "read", "slide": path.name, "machine": machine(), "workers": args.workers or "default",
        **overlap,  # the headline figures: the overlapping grid, as in the original benchmark
        "tiled": tiled,
        "parallel_headroom": headroom,  # GIL-free work in cores threads vs 1: ~cores when the machine is idle
    })  # fmt: skip


if __name__ == "__main__":
    main()
