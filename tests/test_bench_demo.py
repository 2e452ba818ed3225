"""``benchmarks/bench_demo.py``: its report renders from a record, and (slow) a quick cold run works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import benchmark_module

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _module():
    return benchmark_module("bench_demo")


def test_to_markdown_reports_each_condition_against_its_target() -> None:
    bench = _module()
    run = {"wall_s": 50.0, "cpu_s": 40.0, "ok": True}
    record = {
        "bench": "demo",
        "quick": False,
        "targets_s": bench.TARGETS_S,
        "machine": {"cpu": "x", "cores": 2},
        "conditions": {
            "quiet": {
                "busy_processes": 0,
                "load_average": 0.1,
                "runs": [run],
                "wall_s": bench.spread([50.0]),
                "cpu_s": bench.spread([40.0]),
                "within_target": True,
            },
            "busy": {
                "busy_processes": 2,
                "load_average": 2.0,
                "runs": [run],
                "wall_s": bench.spread([130.0]),
                "cpu_s": bench.spread([41.0]),
                "within_target": False,
            },
        },
    }
    md = bench.to_markdown(record)
    assert "| quiet | 0.1 | 1 | 50.0 / 50.0 / 50.0 | 40.0 | ≤ 60 s | yes |" in md
    assert "| 2 busy processes | 2.0 | 1 | 130.0 / 130.0 / 130.0 | 41.0 | ≤ 120 s | NO |" in md


@pytest.mark.slow  # trains the demo model for one epoch in a fresh process: ~10-30 s
def test_quick_cold_demo_run(cmu_slide_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_demo.py"), "--quick"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    quiet = record["conditions"]["quiet"]
    assert quiet["all_ok"] and quiet["runs"][0]["wall_s"] > 0
