"""bench_tissue's mask comparison (rasterising the peer's polygons on our mask grid, Dice) and its skip when
the LazySlide environment is absent (as in CI); the timing itself lives in the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
from bench_tissue import checks, dice, rasterize, to_markdown  # noqa: E402


def test_rasterize_puts_level0_polygons_on_the_mask_grid() -> None:
    # a 40 x 40 level-0 square with a 16 x 16 hole, on a grid of 4 level-0 px per mask pixel: pixel c's
    # centre is at (c + 0.5) * 4, so the square covers pixels 0..9 and the hole pixels 3..6
    square = {
        "exterior": [[0, 0], [40, 0], [40, 40], [0, 40], [0, 0]],
        "holes": [[[12, 12], [28, 12], [28, 28], [12, 28], [12, 12]]],
    }
    mask = rasterize([square], (12, 12), 4.0)
    assert (
        not mask[3:7, 3:7].any()
        and mask[:10, :10].sum() == 100 - 16
        and not mask[10:, :].any()
        and not mask[:, 10:].any()
    )
    assert dice(mask, mask) == 1.0 and dice(mask, ~mask) == 0.0
    assert dice(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0


def test_checks_and_markdown() -> None:
    spread = {"min": 0.4, "median": 0.5, "max": 0.6}
    record = {
        "slide": "large.tif",
        "rounds": 3,
        "repeats": 3,
        "ratio_quiet": 0.5,
        "ratio_busy": 1.2,
        "ratio_spread": {"quiet": spread, "busy": spread},
        "seconds": {c: {"ours": spread, "peer": spread} for c in ("quiet", "busy")},
        "load_1min": {"quiet": spread, "busy": spread},
        "dice": 0.95,
        "shared": {"a.svs": {"dice": 0.85}, "b.tif": {"dice": None, "peer_error": "cannot open"}},
    }
    verdicts = {row[0]: row[2] for row in checks(record)}
    assert verdicts["open + tissue detection, ours ÷ LazySlide, large.tif, quiet"].startswith("meets")
    assert verdicts["open + tissue detection, ours ÷ LazySlide, large.tif, busy"].startswith("misses")
    assert verdicts["tissue mask Dice with LazySlide, a.svs"].startswith("misses")
    assert "not measured (cannot open)" in to_markdown(record)


def test_skips_without_the_peer_environment(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_tissue.py"), "--quick", "--peer-python", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no LazySlide python" in json.loads(proc.stdout.strip().splitlines()[-1])["skipped"]
