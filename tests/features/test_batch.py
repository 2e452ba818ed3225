from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.cli import main
from napari_pathm3.config import TilingConfig
from napari_pathm3.errors import PathM3Error
from napari_pathm3.features.batch import SlideJob, extract_many, read_manifest, summarize
from napari_pathm3.io.feature_store import FeatureStore

TILING = TilingConfig(patch_size=224, target_mpp=1.0)  # 4x fewer patches than the default: fast tests


def test_read_manifest(tmp_path: Path, slides_dir: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text(f"slide,slide_id,mpp\n{slides_dir / 'CMU-1-Small-Region.svs'},cmu,\nother.tif,,0.25\n")
    jobs = read_manifest(csv)
    assert jobs[0] == SlideJob(str(slides_dir / "CMU-1-Small-Region.svs"), "cmu", None)
    assert jobs[1] == SlideJob(
        str(tmp_path / "other.tif"), "other", 0.25
    )  # relative to the CSV, id from stem
    (tmp_path / "bad.csv").write_text("path\nx.svs\n")
    with pytest.raises(PathM3Error, match="'slide' column"):
        read_manifest(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text("slide\na/x.svs\nb/x.svs\n")
    with pytest.raises(PathM3Error, match="duplicate"):
        read_manifest(tmp_path / "dup.csv")
    (tmp_path / "mpp.csv").write_text("slide,mpp\nx.svs,abc\n")
    with pytest.raises(PathM3Error, match="mpp"):
        read_manifest(tmp_path / "mpp.csv")


def test_extract_many_reports_bad_slide_and_continues(
    slides_dir: Path, tmp_path: Path, tiny_hf_dir: Path
) -> None:
    seen: list[tuple[int, int, str]] = []
    jobs = [slides_dir / "broken.svs", slides_dir / "CMU-1-Small-Region.svs"]
    results = extract_many(
        jobs,
        f"hf:{tiny_hf_dir}",
        tmp_path / "store",
        tiling=TILING,
        device="cpu",
        progress=lambda e: seen.append((e.done, e.total, e.stage)),
    )
    assert [r.ok for r in results] == [False, True]
    assert "broken.svs" in (results[0].error or "")
    assert results[1].n_patches > 0 and results[1].dim == 32
    assert seen[-1] == (2, 2, "slides")
    store = FeatureStore(tmp_path / "store")
    assert store.keys() == ["CMU-1-Small-Region"]
    assert len(store.open_bag("CMU-1-Small-Region")) == results[1].n_patches
    assert "FAILED broken" in summarize(results) and "1 of 2 slides" in summarize(results)


def test_distributed_two_slides_two_workers(slides_dir: Path, tmp_path: Path, tiny_hf_dir: Path) -> None:
    pytest.importorskip("distributed")
    jobs = [
        SlideJob(str(slides_dir / "CMU-1-Small-Region.svs"), "svs"),
        SlideJob(str(slides_dir / "CMU-1-Small-Region-dicom"), "dicom"),
    ]
    results = extract_many(
        jobs, f"hf:{tiny_hf_dir}", tmp_path / "store", tiling=TILING, device="cpu", workers=2, processes=False
    )
    assert all(r.ok for r in results), [r.error for r in results]
    store = FeatureStore(tmp_path / "store")
    assert store.keys() == ["dicom", "svs"]
    a, b = store.open_bag("svs"), store.open_bag("dicom")
    np.testing.assert_array_equal(a.coords, b.coords)  # same region, same grid
    assert a.features.shape == b.features.shape


def test_cli_extract(
    slides_dir: Path, tmp_path: Path, tiny_hf_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "slides.csv"
    csv.write_text(
        f"slide,slide_id\n{slides_dir / 'CMU-1-Small-Region.svs'},cmu\n{slides_dir / 'broken.svs'},bad\n"
    )
    out = tmp_path / "store"
    args = [
        "extract",
        "--manifest",
        str(csv),
        "--encoder",
        f"hf:{tiny_hf_dir}",
        "--out",
        str(out),
        "--target-mpp",
        "1.0",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(args) == 1  # one slide failed
    text = capsys.readouterr().out
    assert "1 of 2 slides extracted" in text and "FAILED bad" in text
    assert FeatureStore(out).keys() == ["cmu"]
    ok = [
        "extract",
        str(slides_dir / "CMU-1-Small-Region.svs"),
        "--encoder",
        f"hf:{tiny_hf_dir}",
        "--out",
        str(out),
        "--target-mpp",
        "1.0",
        "--device",
        "cpu",
    ]
    assert main(ok) == 0
    assert FeatureStore(out).keys() == ["CMU-1-Small-Region", "cmu"]
    assert main(["extract", "--list-encoders"]) == 0
    assert "builtin:colorstats" in capsys.readouterr().out
    assert main(["extract", "--out", str(out)]) == 1  # no slides: a clear error, not a traceback
    bad = ["extract", str(slides_dir / "broken.svs"), "--out", str(out), "--encoder", "hf:/no/such/dir"]
    assert main(bad) == 1
    assert "encoder 'hf:/no/such/dir'" in capsys.readouterr().err  # once, up front, not once per slide
