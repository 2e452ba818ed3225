"""Exporting a large slide's results: SpatialData (wsidata/LazySlide layout, with the features), QuPath GeoJSON
(every tile with measurements) and OME-Zarr maps, for a synthetic 100k-tile result.

The result is built directly (a square grid of 224-px tiles at 0.5 µm/px, random attention over 8 queries,
``--dim`` float32 features), so only the writers are timed, each into a fresh folder, quiet and beside one
busy process per core; min / median / max over ``--repeat`` interleaved rounds, plus the size on disk.

    python benchmarks/bench_export.py [--quick] [--tiles 100000] [--dim 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    condition_label,
    emit,
    fmt_spread,
    interleaved,
    machine,
    progress,
    spread,
    target_verdict,
    under_conditions,
)

TARGET_S = 10.0  # the issue: "100k tiles export in seconds"


def synthetic_result(n: int, queries: int = 8) -> Any:
    from napari_pathm3.result import SlideResult
    from napari_pathm3.tiling import PatchGrid, TissueMask

    side = math.ceil(math.sqrt(n))
    rows, cols = np.divmod(np.arange(n), side)
    coords = np.stack([cols * 224, rows * 224], 1).astype(np.int64)
    dims = (side * 224, (int(rows.max()) + 1) * 224)
    grid = PatchGrid(
        coords=coords,
        patch_size=224,
        mpp=0.5,
        size_level0=224.0,
        read_level=0,
        read_size=224,
        step_level0=224.0,
        slide_dimensions=dims,
        tissue_fraction=np.ones(n, np.float32),
    )
    rng = np.random.default_rng(0)
    qa = rng.dirichlet(np.ones(n), size=queries).astype(np.float32)  # (q, n), rows sum to 1
    att = qa.mean(0)
    top = np.argsort(-att)[:8]
    return SlideResult(
        slide_path="synthetic.svs",
        slide_dimensions=dims,
        mpp_xy=(0.25, 0.25),
        label="tumour",
        probabilities={"tumour": 0.8, "normal": 0.2},
        caption="synthetic result for the export benchmark.",
        attention=att,
        query_attention=qa,
        grid=grid,
        tissue=TissueMask(np.ones((1, 1), bool), float(max(dims)), 0.0),
        top_indices=top,
        top_scores=att[top],
        encoder_name="timm:resnet18",
    )


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def measure(n: int, dim: int, repeat: int) -> dict[str, Any]:
    from napari_pathm3.exports import export_ome_zarr, export_spatialdata, save_qupath_geojson

    t = time.perf_counter()
    import anndata  # noqa: F401  - the first export in a process pays these imports; timed apart
    import ome_zarr.writer  # noqa: F401
    import spatialdata  # noqa: F401

    import_s = round(time.perf_counter() - t, 2)
    result = synthetic_result(n)
    features = np.random.default_rng(1).normal(size=(n, dim)).astype(np.float32)
    root = Path(tempfile.mkdtemp(prefix="bench-export-"))
    sizes: dict[str, float] = {}

    def run(name: str, write: Any) -> Any:
        def go() -> float:
            target = root / name
            shutil.rmtree(target, ignore_errors=True)
            target.unlink(missing_ok=True) if target.is_file() else None
            t = time.perf_counter()
            write(target)
            seconds = time.perf_counter() - t
            sizes[name] = _size_mb(target)
            return seconds

        return go

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            times = interleaved(
                {
                    "spatialdata": run(
                        "slide.zarr", lambda p: export_spatialdata(result, p, features=features)
                    ),
                    "qupath_geojson": run("slide.geojson", lambda p: save_qupath_geojson(result, p)),
                    "ome_zarr": run("maps.ome.zarr", lambda p: export_ome_zarr(result, p)),
                },
                repeat,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    key = {"spatialdata": "slide.zarr", "qupath_geojson": "slide.geojson", "ome_zarr": "maps.ome.zarr"}
    return {
        "import_s": import_s,
        "exports": {
            k: {"seconds": spread(v), "tiles_per_s": spread([n / t for t in v], 0), "size_mb": sizes[key[k]]}
            for k, v in times.items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2000 tiles, 1 round (smoke run)")
    ap.add_argument("--tiles", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n, repeat = (2000, 1) if args.quick else (args.tiles, args.repeat)
    progress(f"{n} tiles, {args.dim}-d features, {repeat} rounds")
    rows = under_conditions(lambda: measure(n, args.dim, repeat), quick=args.quick)
    emit(
        {
            "bench": "export",
            "tiles": n,
            "dim": args.dim,
            "repeat": repeat,
            "quick": args.quick,
            "machine": machine(),
            "conditions": rows,
        }
    )


def checks(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The issue's target: 100k tiles export in seconds (here: each format ≤ 10 s, median, busy machine)."""
    out = []
    busy = [r for r in record.get("conditions", []) if r.get("condition") == "busy"]
    for name, row in (busy[0]["exports"] if busy else {}).items():
        med = row["seconds"].get("median")
        label = f"{name} export of {record['tiles']} tiles (busy machine, median)"
        out.append((label, f"{med:.1f} s", target_verdict(med, TARGET_S, at_most=True)))
    return out


def to_markdown(record: dict[str, Any]) -> str:
    """The docs/benchmarks.md section, from the measured figures only."""
    lines = [
        f"Exporting a synthetic result of **{record['tiles']} tiles** ({record['dim']}-d float32 features, 8 "
        f"queries) with `napari_pathm3.exports`; seconds are median (min–max) over {record['repeat']} "
        "interleaved rounds, each into a fresh folder. SpatialData = tiles + features table (written chunked by "
        "anndata/zarr) + per-tile results; QuPath GeoJSON = every tile with its measurements + top patches; "
        "OME-Zarr = the attention and per-query maps (one pixel per tile) as a multiscale image. The first "
        "export in a process also imports spatialdata/anndata/ome-zarr: "
        + ", ".join(f"{r['import_s']} s ({r['condition']})" for r in record.get("conditions", []))
        + " (in the first condition only: later ones find them imported).",
        "",
        "| condition | format | seconds | tiles/s | size on disk |",
        "|---|---|---|---|---|",
    ]
    for r in record.get("conditions", []):
        for name, row in r["exports"].items():
            lines.append(
                f"| {condition_label(r)} | {name} | {fmt_spread(row['seconds'], ' s')} | "
                f"{fmt_spread(row['tiles_per_s'])} | {row['size_mb']} MB |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
