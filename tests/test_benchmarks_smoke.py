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
from napari_pathm3.io.patch_reader import PatchReader
from napari_pathm3.io.slide import open_slide
from napari_pathm3.tiling import make_grid

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
        plain = PatchReader(slide, grid, block_size=0, fast=False)  # every patch through Slide.read_region
        got = np.concatenate([b for _, b in blocks.iter_batches(np.sort(idx), batch_size=16)])
        want = plain.read_batch(np.sort(idx))
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(blocks.read_batch(idx), plain.read_batch(idx))
        order = np.concatenate([i for i, _ in blocks.iter_batches(idx, batch_size=7, prefetch=0)])
        np.testing.assert_array_equal(order, idx)  # batches come back in the order asked for


def _markdown(name: str, record: dict) -> str:
    sys.path.insert(0, str(BENCH))
    try:
        import importlib

        mod = importlib.import_module(f"bench_{name}")
    finally:
        sys.path.remove(str(BENCH))
    text = mod.to_markdown(record)
    assert isinstance(text, str) and "|" in text
    return text


def _check_read(out: dict) -> None:
    """What ``bench_read.py --quick`` reports (run once, through run_all below: the same command)."""
    assert out["bench"] == "read" and {r["grid"] for r in out["rows"]} == {"tiled", "overlap"}
    for row in out["rows"]:
        assert [c["condition"] for c in row["conditions"]] == ["quiet", "busy"]
        for cond in row["conditions"]:
            assert {"naive", "reader_1", "reader"} <= set(cond["variants"])
            assert cond["variants"]["reader"]["ratio"]["median"] > 0 and "load_end" in cond
    text = _markdown("read", out)
    assert "non-overlapping" in text and "× naive" in text


def _check_extract(out: dict) -> None:
    assert out["bench"] == "extract" and out["encoder"] == "builtin:colorstats"
    for cond in out["conditions"]:
        assert cond["variants"]["pipeline"]["ratio"]["median"] > 0
        assert cond["cpu_s"]["read"]["median"] > 0
        assert set(cond["page_faults"]) == {"encoder", "pipeline", "read"}
        assert cond["untuned_encoder"]["allocator_tuned"] is False and cond["untuned_encoder"]["per_s"]


def test_bench_extract_quick(tmp_path: Path) -> None:
    """The default encoder through every condition (the ViT-S ``--heavy-patches`` run repeats the same
    ``run_encoder`` with another encoder: its build is checked below, the whole run in the slow test)."""
    out = _run([str(BENCH / "bench_extract.py"), "--quick"], tmp_path)
    _check_extract(out)
    assert "heavy" not in out
    # the page's heavy-encoder section, from this run's record under the heavy encoder's name
    heavy = {k: out[k] for k in ("slide", "patches", "conditions")} | {"encoder": "bench:vit-s"}
    text = _markdown("extract", {**out, "heavy": heavy})
    assert "encoder alone" in text and "read share" in text and "not the default" in text


def test_bench_extract_heavy_encoder_is_a_vit_s() -> None:
    """``--heavy-patches``' encoder: a ViT-S/16 (384 wide) through the package's frozen-encoder wrapper."""
    sys.path.insert(0, str(BENCH))
    try:
        from bench_extract import build_encoder
    finally:
        sys.path.remove(str(BENCH))
    enc = build_encoder("vit-s")
    assert enc.name == "bench:vit-s" and enc.dim == 384
    patches = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    feats = np.asarray(enc.encode(patches))
    assert feats.shape == (2, 384) and np.isfinite(feats).all()


@pytest.mark.slow  # ~50 s on 2 cores: both encoders through both conditions (fast: the two tests above)
def test_bench_extract_quick_with_heavy_encoder(tmp_path: Path) -> None:
    out = _run([str(BENCH / "bench_extract.py"), "--quick", "--heavy-patches", "2"], tmp_path)
    _check_extract(out)
    assert out["heavy"]["encoder"] == "bench:vit-s" and out["heavy"]["patches"] == 2
    text = _markdown("extract", out)
    assert "encoder alone" in text and "read share" in text and "not the default" in text


@pytest.mark.slow  # ~20 s: two conditions, each importing spatialdata
def test_bench_export_quick(tmp_path: Path) -> None:
    pytest.importorskip("spatialdata", reason="the [spatialdata] extra is in [testing]")
    out = _run([str(BENCH / "bench_export.py"), "--quick"], tmp_path)
    assert out["bench"] == "export" and out["tiles"] == 2000
    for cond in out["conditions"]:
        assert set(cond["exports"]) == {"spatialdata", "qupath_geojson", "ome_zarr"}
        assert all(r["seconds"]["median"] > 0 and r["size_mb"] > 0 for r in cond["exports"].values())
    assert "2000 tiles" in _markdown("export", out)


@pytest.mark.slow
def test_bench_caption_quick(tmp_path: Path) -> None:
    out = _run([str(BENCH / "bench_caption.py"), "--quick"], tmp_path)
    assert out["inprocess"][0]["patches"] > 0 and out["cli"][0]["seconds"]["median"] > 0
    assert out["cli_imports"]["transformers_imported"] is False  # the demo model loads without transformers
    assert "in-process" in _markdown("caption", out)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("xvfb-run") is None and not os.environ.get("DISPLAY"), reason="needs a display"
)
def test_bench_view_quick(tmp_path: Path) -> None:
    out = _run([str(BENCH / "bench_view.py"), "--quick"], tmp_path)
    for cond in out["conditions"]:
        for mode in ("ours", "zarr"):
            r = cond["modes"][mode]
            assert "error" not in r, r
            assert r["last"]["steps"] == 3 and r["first_frame_s"]["median"] > 0
        assert cond["modes"]["ours"]["last"]["first_frame_tissue_fraction"] >= 0
    assert "tifffile-zarr" in _markdown("view", out)


def test_run_all_collects_and_writes_the_page(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    doc = tmp_path / "docs" / "benchmarks.md"
    out = _run(
        [
            str(BENCH / "run_all.py"),
            "--quick",
            "--only",
            "read,nosuch",
            "--out",
            str(results),
            "--doc",
            str(doc),
            "--provisional",
            "smoke test",
        ],
        tmp_path,
    )
    assert set(out["results"]) == {"read", "nosuch"}
    saved = json.loads(results.read_text())
    assert "skipped" in saved["results"]["nosuch"]
    _check_read(saved["results"]["read"])  # run_all ran `bench_read.py --quick`: its record, checked in full
    text = doc.read_text()
    assert "Provisional" in text and "## Patch reading (`bench_read.py`)" in text
    assert "## Targets" in text and "reader ÷ naive" in text and "not on this branch" in text
    # the page is rewritten from the saved results without running anything
    doc.unlink()
    _run([str(BENCH / "run_all.py"), "--from-json", str(results), "--doc", str(doc)], tmp_path)
    assert "## Patch reading" in doc.read_text()
