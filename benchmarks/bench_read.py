"""Patch reader throughput against plain OpenSlide loops over the same patches, quiet and beside busy processes.

Variants, interleaved in every round (``--repeat`` rounds, figures are min/median/max over rounds):

* ``naive``      one OpenSlide handle, one thread, ``read_region`` + ``convert("RGB")`` per patch: the baseline
* ``loop_k``     the plain loop split over k threads, each with its own handle (what threads alone give)
* ``reader_k``   ``PatchReader`` with k worker threads (``iter_batches``, batches of 64)
* ``reader``     ``PatchReader`` with its default workers (the package thread policy)
* ``reader_openslide``  the same, but every tile decoded by OpenSlide (``direct_tiles=False``): shows what the
  direct TIFF tile decoding (``io/backends/tiff_tiles.py``, identical pixels) adds on these files

Grids (224 px at 0.5 µm/px): ``tiled``, the non-overlapping grid extraction uses (the headline; every grid
square on the CMU sample, tissue patches in grid order on the large slide), and ``overlap`` (stride 112,
CMU only: neighbouring patches share pixels, which block reads decode once). Prints one JSON line.

    python benchmarks/bench_read.py [--repeat 3] [--large-patches 1000] [--no-large] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CMU_SLIDE,
    condition_label,
    emit,
    fmt_spread,
    interleaved,
    machine,
    progress,
    rates,
    target_verdict,
    under_conditions,
)

#: the issue's target: reader >= this x cores x the naive loop on the non-overlapping grid, quiet
QUIET_TARGET_PER_CORE = 0.85


def naive_loop(path: Path, coords: np.ndarray, size: int, threads: int = 1) -> None:
    """Plain ``read_region`` loop; with ``threads`` > 1 the patches are dealt round-robin to threads that
    each open their own handle."""
    import openslide

    def work(part: np.ndarray) -> None:
        with openslide.OpenSlide(str(path)) as s:
            for x, y in part:
                np.asarray(s.read_region((int(x), int(y)), 0, (size, size)).convert("RGB"))

    if threads == 1:
        work(coords)
        return
    ts = [threading.Thread(target=work, args=(coords[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def reader_pass(slide: Any, grid: Any, workers: int | None, direct_tiles: bool = True) -> float:
    from napari_pathm3.io.patch_reader import PatchReader

    t = time.perf_counter()
    reader = PatchReader(slide, grid, num_workers=workers, direct_tiles=direct_tiles)
    n = sum(len(b) for _, b in reader.iter_batches(batch_size=64))
    assert n == len(grid)
    return time.perf_counter() - t


def measure_grid(path: Path, grid: Any, workers: list[int], repeat: int) -> dict[str, Any]:
    from napari_pathm3.io.patch_reader import default_workers
    from napari_pathm3.io.slide import open_slide

    coords, size = grid.coords, grid.read_size
    with open_slide(path) as slide:
        fns: dict[str, Any] = {"naive": lambda: naive_loop(path, coords, size)}
        for k in workers:
            if k > 1:
                fns[f"loop_{k}"] = lambda k=k: naive_loop(path, coords, size, k)
        for k in workers:
            fns[f"reader_{k}"] = lambda k=k: reader_pass(slide, grid, k)
        policy_workers: list[int] = []

        def default() -> float:
            policy_workers.append(default_workers())
            return reader_pass(slide, grid, None)

        fns["reader"] = default
        fns["reader_openslide"] = lambda: reader_pass(slide, grid, None, direct_tiles=False)
        times = interleaved(fns, repeat)
    return {"variants": rates(times, len(grid), baseline="naive"), "default_workers": policy_workers}


def grids(args: argparse.Namespace) -> list[dict[str, Any]]:
    from napari_pathm3.config import TilingConfig
    from napari_pathm3.io.slide import open_slide
    from napari_pathm3.tiling import make_grid

    out = []
    cmu = Path(args.slide)
    with open_slide(cmu) as s:
        tiled = make_grid(s, TilingConfig(min_tissue_fraction=0.0))
        overlap = make_grid(s, TilingConfig(min_tissue_fraction=0.0, stride=112))
    if args.quick:
        tiled, overlap = tiled.subset(np.arange(min(24, len(tiled)))), overlap.subset(np.arange(24))
    out.append({"slide": cmu.name, "path": cmu, "grid": "tiled", "stride": 224, "g": tiled})
    out.append({"slide": cmu.name, "path": cmu, "grid": "overlap", "stride": 112, "g": overlap})
    if not args.no_large and not args.quick:  # the quick run stays on the sample slide (test suite)
        from make_large_slide import large_slide

        big = Path(args.large) if args.large else large_slide()
        with open_slide(big) as s:
            g = make_grid(s, TilingConfig())
        n = min(len(g), 48 if args.quick else args.large_patches)
        start = max(0, len(g) // 2 - n // 2)  # a run of tissue patches in grid order from the middle
        out.append(
            {
                "slide": big.name,
                "path": big,
                "grid": "tiled",
                "stride": 224,
                "g": g.subset(np.arange(start, start + n)),
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", default=str(CMU_SLIDE))
    ap.add_argument("--large", default=None, help="large slide (default: make_large_slide.py's 60k x 40k)")
    ap.add_argument("--no-large", action="store_true")
    ap.add_argument("--large-patches", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", default=None, help="comma-separated worker counts (default 1..cores)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for the test suite")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    workers = [int(w) for w in args.workers.split(",")] if args.workers else list(range(1, min(cores, 8) + 1))
    repeat = 1 if args.quick else max(3, args.repeat)
    rows = []
    for item in grids(args):
        progress(f"{item['slide']} {item['grid']} ({len(item['g'])} patches)")
        conds = under_conditions(
            lambda item=item: measure_grid(item["path"], item["g"], workers, repeat), args.quick
        )
        rows.append(
            {
                "slide": item["slide"],
                "grid": item["grid"],
                "stride": item["stride"],
                "patches": len(item["g"]),
                "patch_size": item["g"].read_size,
                "conditions": conds,
            }
        )
    emit(
        {
            "bench": "read",
            "machine": machine(),
            "workers": workers,
            "repeat": repeat,
            "quick": args.quick,
            "rows": rows,
        }
    )


# ------------------------------------------------------------------------------------------------ report
def checks(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(what, measured, verdict)`` for the issue's targets, computed from the record."""
    cores = record.get("machine", {}).get("cores") or 1
    out = []
    for row in record.get("rows", []):
        if row["grid"] != "tiled":
            continue
        for cond in row["conditions"]:
            ratio = cond["variants"].get("reader", {}).get("ratio")
            quiet = cond["condition"] == "quiet"
            target = QUIET_TARGET_PER_CORE * cores if quiet else 1.0
            med = ratio["median"] if ratio else None
            out.append(
                (
                    f"reader ÷ naive, {row['slide']}, non-overlapping, {cond['condition']}",
                    fmt_spread(ratio, "×"),
                    target_verdict(med, target),
                )
            )
    return out


def to_markdown(record: dict[str, Any]) -> str:
    lines = [
        "Patches per second (median, min–max over interleaved rounds) and the speed ratio to `naive` measured",
        "in the same round. `naive`: one OpenSlide handle, one thread, `read_region` + `convert('RGB')`;",
        "`loop_k`: that loop split over k threads with a handle each; `reader_k`: `PatchReader` with k workers;",
        "`reader`: default workers (thread policy); `reader_openslide`: the same with every tile decoded by",
        "OpenSlide instead of directly from the TIFF (same pixels). "
        f"{record.get('repeat')} rounds per condition.",
        "",
    ]
    for row in record.get("rows", []):
        lines += [
            f"**{row['slide']}**, {row['grid']} grid (stride {row['stride']}), {row['patches']} patches "
            f"of {row['patch_size']} px",
            "",
            "| condition | variant | patches/s | × naive |",
            "|---|---|---|---|",
        ]
        for cond in row["conditions"]:
            label = condition_label(cond)
            dw = cond.get("default_workers") or []
            for name, v in cond["variants"].items():
                shown = f"{name} ({dw[0]} workers)" if name == "reader" and dw else name
                lines.append(
                    f"| {label} | {shown} | {fmt_spread(v['per_s'])} | {fmt_spread(v.get('ratio'), '×')} |"
                )
        lines.append("")
    cks = checks(record)
    if cks:
        cores = record.get("machine", {}).get("cores")
        lines += [
            f"Targets: reader ≥ {QUIET_TARGET_PER_CORE} × cores ({cores}) × naive when quiet, ≥ naive when busy.",
            "",
            "| check | measured | verdict |",
            "|---|---|---|",
        ]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in cks]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
