"""bench_model.py: the Nyström error measurement (row-major vs random patch order) and its --quick run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_model
    finally:
        sys.path.remove(str(BENCH))
    return bench_model


def test_row_major_landmarks_beat_random_order_on_a_smooth_bag(bench):
    rows = bench.error_worker(600, 64)
    assert {(r["order"], r["sharpness"]) for r in rows} == {
        (o, s) for o in ("random", "row-major") for s in (1.0, 4.0)
    }
    for sharp in (1.0, 4.0):
        err = {r["order"]: r["relative_error"] for r in rows if r["sharpness"] == sharp}
        assert 0 < err["row-major"] < err["random"]


@pytest.mark.slow
def test_quick_run_emits_one_json_line_and_renders(bench, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_model.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert not [r for r in record["errors"] + record["memory"] if "error" in r]
    assert set(record["timing"]) == {"quiet", "busy"}
    md = bench.to_markdown(record)
    assert "relative error" in md and "peak RSS MB" in md and "busy" in md


@pytest.mark.slow  # ~25 s: trains 3 seeds x 2 variants
def test_image_only_loss_ablation_runs_and_renders():
    sys.path.insert(0, str(BENCH))
    try:
        import ablation_image_only_loss as ablation
    finally:
        sys.path.remove(str(BENCH))
    runs = [ablation.run(0, flag, 2, 2.0) for flag in (True, False)]
    assert all(0.0 <= r["acc_image_only"] <= 1.0 and 0.0 <= r["acc_image_text"] <= 1.0 for r in runs)
    md = ablation.to_markdown({"steps": 2, "signal": 2.0, "load_average": 0.0, "runs": runs, "mean": {}})
    assert md.count("| True |") == 1 and md.count("| False |") == 1
