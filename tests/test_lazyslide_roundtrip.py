"""LazySlide both ways, run by LazySlide itself: it reads our SpatialData export (its feature aggregation and
tile plot on our attention column) and writes a store of its own that our caption reads without re-extraction.

LazySlide replaces torch, so it lives in its own virtual environment and is driven through that interpreter
in a subprocess: ``$NAPARI_PATHM3_LAZYSLIDE_PYTHON`` (default ``../venvs/lazyslide/bin/python`` beside the checkout). Without
it the test is skipped with that reason; wsidata's side is covered in our own venv by
``test_ecosystem_formats.py`` (default run). This one is ``slow``: ``python -m pytest -m slow tests/test_lazyslide_roundtrip.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.cli import main

pytest.importorskip("spatialdata", reason="the [spatialdata] extra is in [testing]")

PEER = Path(
    os.environ.get(
        "NAPARI_PATHM3_LAZYSLIDE_PYTHON",
        Path(__file__).resolve().parents[2] / "venvs" / "lazyslide" / "bin" / "python",
    )
)
SCRIPT = Path(__file__).parent / "peers" / "lazyslide_roundtrip.py"


def _lazyslide_python() -> Path:
    if not PEER.is_file():
        pytest.skip(
            f"no LazySlide interpreter at {PEER} (set NAPARI_PATHM3_LAZYSLIDE_PYTHON to its venv's python)"
        )
    probe = subprocess.run([str(PEER), "-c", "import lazyslide, wsidata"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{PEER} cannot import lazyslide: {probe.stderr.strip().splitlines()[-1:]}")
    return PEER


@pytest.mark.slow  # two interpreters, LazySlide's tiling and encoding: ~1 min on 2 busy cores
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_lazyslide_reads_our_export_and_we_read_lazyslides_store(
    synthetic_slide: Path, tmp_path: Path
) -> None:
    python = _lazyslide_python()
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    cfg = PathM3Config.tiny(feature_dim=94, encoder_name="builtin:colorstats", class_names=("a", "b"))
    ours_model = build_model(cfg).eval().save_pretrained(tmp_path / "m94")
    ours = tmp_path / "ours.zarr"
    args = ["caption", str(synthetic_slide), "--model", str(ours_model), "--spatialdata", str(ours)]
    assert main([*args, "--out", str(tmp_path / "r.json"), "--device", "cpu", "--no-cache", "--quiet"]) == 0
    store, report = tmp_path / "lazyslide.zarr", tmp_path / "peer.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = subprocess.run(
        [str(python), str(SCRIPT), str(synthetic_slide), str(ours), str(store), str(report)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    peer = json.loads(report.read_text())
    n = json.loads((tmp_path / "r.json").read_text())["num_patches"]
    assert peer["n_tiles_read"] == n and peer["agg_shape"] == [94, 1] and peer["agg_matches_mean"]
    assert (tmp_path / "peer-tiles.png").stat().st_size > 0
    # LazySlide's own store, captioned here without re-extraction
    cfg48 = PathM3Config.tiny(feature_dim=48, encoder_name="tinycnn", class_names=("a", "b"))
    model48 = build_model(cfg48).eval().save_pretrained(tmp_path / "m48")
    out = tmp_path / "from-lazyslide.json"
    assert (
        main(
            [
                "caption",
                str(store),
                "--model",
                str(model48),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--per-patch",
                "--quiet",
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["num_patches"] == len(peer["written_tiles"]) and res["patch_size_level0"] == 224.0
    got = sorted(zip(res["patches"]["x"], res["patches"]["y"], strict=True))
    assert got == sorted(map(tuple, np.asarray(peer["written_tiles"]).tolist()))
