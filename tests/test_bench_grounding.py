"""Smoke test of benchmarks/bench_grounding.py (an untrained tiny model on a few bags: seconds) and of its
report functions on a recorded-shape record."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_quick_run_prints_the_grounding_keys(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import bench_grounding
    finally:
        sys.path.remove(str(BENCH))
    record = bench_grounding.main(["--quick"])
    assert record["bench"] == "grounding"
    for key in ("phrase_map_auc", "aggregate_auc", "random_auc"):
        assert 0.0 <= record[key] <= 1.0
    assert "word_map_auc" in record and set(record["targets_met"]) == {"word_map_auc", "phrase_map_auc"}
    assert record["runs"][0]["phrase_cases"] > 0
    assert bench_grounding.to_markdown(record).startswith("_not measured")
