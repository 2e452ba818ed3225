"""Smoke tests of the benchmark scripts on tiny inputs (no timing assertions: timing lives in benchmarks/),
and the block-reading PatchReader against plain per-patch reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.config import TilingConfig
from napari_pathm3.io.slide import open_slide
from napari_pathm3.tiling import PatchReader, make_grid

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(args: list[str], tmp_path: Path, timeout: float = 600) -> dict:
    env = {**os.environ, "NAPARI_PATHM3_BENCH_DIR": str(tmp_path / "bench")}
    env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, proc.stdout[-2000:]
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def tiny_large_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(BENCH))
    try:
        from make_large_slide import write_slide
    finally:
        sys.path.remove(str(BENCH))
    path = tmp_path_factory.mktemp("bench") / "tiny_large.tif"
    return write_slide(path, width=3000, height=2000, mpp=0.5, tile=256, workers=2)


def test_make_large_slide_is_a_pyramidal_slide(tiny_large_slide: Path) -> None:
    with open_slide(tiny_large_slide) as slide:
        assert slide.backend == "openslide" and slide.vendor == "generic-tiff"
        assert slide.dimensions == (3000, 2000)
        assert slide.mpp == pytest.approx(0.5)
        assert slide.level_count >= 2 and slide.level_downsamples[1] == pytest.approx(2.0)
        assert slide.tile_size(0) == (256, 256)
        thumb = slide.thumbnail(256)
    rgb = thumb.astype(int)
    saturated = (rgb.max(-1) - rgb.min(-1)) > 25
    assert 0.05 < saturated.mean() < 0.95  # tissue on white, not all one or the other


@pytest.mark.parametrize(
    "config",
    [
        TilingConfig(min_tissue_fraction=0.0, stride=112),  # overlapping, level 0
        TilingConfig(min_tissue_fraction=0.0, patch_size=96),  # many small patches
        TilingConfig(min_tissue_fraction=0.0, target_mpp=1.0, patch_size=64),  # level 1 (downsample 2)
        TilingConfig(min_tissue_fraction=0.0, target_mpp=0.75, patch_size=64),  # resized reads
    ],
)
def test_block_reads_equal_patch_reads(tiny_large_slide: Path, config: TilingConfig) -> None:
    with open_slide(tiny_large_slide) as slide:
        grid = make_grid(slide, config)
        idx = np.random.default_rng(0).permutation(len(grid))[:150]  # any order, any subset
        blocks = PatchReader(slide, grid, num_workers=2)
        plain = PatchReader(slide, grid, block_size=0)
        got = np.concatenate([b for _, b in blocks.iter_batches(np.sort(idx), batch_size=16)])
        want = plain.read_batch(np.sort(idx))
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(blocks.read_batch(idx), plain.read_batch(idx))
        order = np.concatenate([i for i, _ in blocks.iter_batches(idx, batch_size=7, prefetch=0)])
        np.testing.assert_array_equal(order, idx)  # batches come back in the order asked for


def test_bench_read_prints_one_json_line(tiny_large_slide: Path, tmp_path: Path) -> None:
    out = _run([str(BENCH / "bench_read.py"), str(tiny_large_slide), "--repeat", "1"], tmp_path)
    assert out["bench"] == "read" and out["patches"] > 0 and out["speedup"] > 0 and "tiled" in out


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("xvfb-run") is None and not os.environ.get("DISPLAY"), reason="needs a display"
)
def test_bench_view_tiny(tmp_path: Path) -> None:
    out = _run([str(BENCH / "bench_view.py"), "--width", "4096", "--height", "3072", "--steps", "3",
                "--modes", "ours,ours_dask_cache"], tmp_path)  # fmt: skip
    for mode in ("ours", "ours_dask_cache"):
        r = out["modes"][mode]
        assert "error" not in r, r
        assert r["reads_first_frame"]["calls"] > 0 and r["steps"] == 3


def test_run_all_collects_and_writes_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results.json"
    out = _run(
        [str(BENCH / "run_all.py"), "--quick", "--only", "read", "--no-doc", "--out", str(results)], tmp_path
    )
    assert "read" in out["results"]
    saved = json.loads(results.read_text())
    assert saved["results"]["read"]["bench"] == "read"
    # the report renders from saved results (into a scratch copy of the doc paths)
    sys.path.insert(0, str(BENCH))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCH))
    monkeypatch.setattr(run_all, "DOC", tmp_path / "benchmarks.md")
    monkeypatch.setattr(run_all, "IMAGES", tmp_path / "images")
    run_all.write_doc(saved["results"], saved["meta"])
    text = (tmp_path / "benchmarks.md").read_text()
    assert "Patch reader" in text and "not measured" in text
