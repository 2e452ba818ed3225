"""bench_mil_ablation --quick: the ablation script runs, prints one JSON line with the diagnostics of each run,
and renders its table (figures of a 4-epoch run on 48 bags mean nothing; only the plumbing is checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_bench_mil_ablation_quick_runs_and_renders() -> None:
    env = {**os.environ, "NAPARI_PATHM3_THREADS": "1"}
    cmd = [sys.executable, str(BENCH / "bench_mil_ablation.py"), "--quick", "--workers", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    (run,) = rec["runs"]
    assert run["variant"] == "default" and 0.0 <= run["accuracy"] <= 1.0
    assert set(run["probes"]) == {"threes", "sevens", "zeros"}
    assert "loss_itc" not in run["grad_norms"]  # the shipped recipe has no ITC term (chosen on validation)
    assert run["caption_loss"]["own_prefix"] > 0
    sys.path.insert(0, str(BENCH))
    try:
        import bench_mil_ablation
    finally:
        sys.path.remove(str(BENCH))
    table = bench_mil_ablation.to_markdown(rec)
    assert "| 0 | the default recipe" in table and "probe 0s" in table
