"""LazySlide's side of ``bench_tissue.py``: run by the LazySlide venv's python, never imported by us.

    <lazyslide-venv>/bin/python benchmarks/_tissue_peer.py SLIDE REPEATS OUT.json

Times ``wsidata.open_wsi`` + ``zs.pp.find_tissues`` (defaults, no zarr store) ``REPEATS`` times after the
imports, and writes the times and the tissue polygons (level-0 exterior and hole rings) to ``OUT.json``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings


def main() -> None:
    path, repeats, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    warnings.simplefilter("ignore")
    import lazyslide as zs
    from wsidata import open_wsi

    times, wsi = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        wsi = open_wsi(path, store=None)
        zs.pp.find_tissues(wsi)
        times.append(time.perf_counter() - t0)
    rings = []
    for geom in wsi.shapes["tissues"].geometry:
        parts = getattr(geom, "geoms", [geom])
        for poly in parts:
            rings.append(
                {
                    "exterior": [list(map(float, xy)) for xy in poly.exterior.coords],
                    "holes": [[list(map(float, xy)) for xy in r.coords] for r in poly.interiors],
                }
            )
    with open(out, "w") as fh:
        json.dump({"times": times, "polygons": rings}, fh)


if __name__ == "__main__":
    main()
