"""End to end on the real CMU slide: regions labelled in code -> features -> train a few steps ->
checkpoint -> evaluate -> caption the slide from the CLI, with every output checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_pathm3.cli import main  # noqa: E402
from napari_pathm3.config import AdamWConfig, PathM3Config, TilingConfig, TrainConfig  # noqa: E402
from napari_pathm3.features.encoders import get_encoder  # noqa: E402
from napari_pathm3.features.extract import extract_features  # noqa: E402
from napari_pathm3.io.slide import open_slide  # noqa: E402
from napari_pathm3.tiling import make_grid  # noqa: E402
from napari_pathm3.training.evaluate import evaluate_model  # noqa: E402
from napari_pathm3.training.loop import train  # noqa: E402
from napari_pathm3.training.regions import Region, bags_from_regions  # noqa: E402

ENCODER = "builtin:colorstats"
CLASSES = ("upper tissue", "lower tissue")
CAPTIONS = {"upper tissue": "upper part of the section.", "lower tissue": "lower part of the section."}


def _rect(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def test_regions_to_caption_cli(cmu_slide_path: Path, tmp_path: Path) -> None:
    encoder = get_encoder(ENCODER, device="cpu")
    with open_slide(cmu_slide_path) as slide:
        grid = make_grid(slide, TilingConfig(stride=112, min_tissue_fraction=0.25))
        bag = extract_features(slide, grid, encoder, store=tmp_path / "features" / "cmu", device="cpu")
    assert bag.features.shape == (len(grid), encoder.dim) and np.isfinite(bag.features).all()
    np.testing.assert_array_equal(bag.coords, grid.coords)

    bands = [(0, 700), (700, 1480), (1480, 2200), (2200, 2967)]
    regions = [
        Region(
            label=CLASSES[int(y0 >= 1480)],
            polygon=_rect(0, y0, 2220, y1),
            caption=CAPTIONS[CLASSES[int(y0 >= 1480)]],
        )
        for y0, y1 in bands
    ]
    bags = bags_from_regions(
        bag, regions, class_names=CLASSES, slide_id="cmu", patch_size_level0=grid.size_level0
    )
    assert len(bags) == 4 and all(len(b.features) > 0 for b in bags)
    # every patch lands in exactly the band that holds its centre
    assert sum(len(b.features) for b in bags) == len(grid)

    config = PathM3Config.tiny(
        feature_dim=encoder.dim,
        class_names=CLASSES,
        encoder_name=ENCODER,
        mode="image",
        optim=AdamWConfig(lr=3e-3, warmup_lr=1e-4, batch_size=2),
    )
    result = train(
        config, bags, bags, TrainConfig(epochs=3, patience=None, device="cpu"), out_dir=tmp_path / "run"
    )
    assert result.step == 6 and len(result.history) == 3
    best = Path(result.best_dir)
    assert (best / "model.safetensors").is_file() and (best / "config.json").is_file()
    assert json.loads((best / "config.json").read_text())["encoder_name"] == ENCODER

    metrics = evaluate_model(best, bags, device="cpu")
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert np.asarray(metrics["confusion_matrix"]).sum() == 4
    assert 0.0 <= metrics["bleu_4"] <= 1.0 and 0.0 <= metrics["cider_d"] <= 10.0

    out, png, geo = tmp_path / "cmu.json", tmp_path / "cmu.png", tmp_path / "top.geojson"
    rc = main(
        [
            "caption",
            str(cmu_slide_path),
            "--model",
            str(best),
            "--out",
            str(out),
            "--heatmap",
            str(png),
            "--geojson",
            str(geo),
            "--device",
            "cpu",
            "--quiet",
            "--no-cache",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["label"] in CLASSES
    probs = res["probabilities"]
    assert set(probs) == set(CLASSES) and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert res["label"] == max(probs, key=probs.get)
    assert isinstance(res["caption"], str) and res["caption"].strip()
    top = res["top_patches"]
    assert 1 <= len(top) <= 8
    scores = [p["attention"] for p in top]
    assert scores == sorted(scores, reverse=True)
    for p in top:  # on the default grid (224 px at ~0.5 µm/px, no overlap), inside the slide
        assert p["x"] % 224 == 0 and p["y"] % 224 == 0 and 0 <= p["x"] < 2220 and 0 <= p["y"] < 2967
    from PIL import Image

    assert Image.open(png).size[1] > 0
    everything = json.loads(geo.read_text())["features"]  # QuPath: every tile, then the top patches
    tiles = [f for f in everything if f["properties"]["objectType"] == "tile"]
    assert len(tiles) == res["num_patches"] and all(f["properties"]["measurements"] for f in tiles)
    features = [f for f in everything if f["properties"]["objectType"] == "annotation"]
    assert len(features) == len(top)
    ring = np.asarray(features[0]["geometry"]["coordinates"][0])  # level-0 (x, y) corners of the top patch
    assert ring[:, 0].min() == pytest.approx(top[0]["x"]) and ring[:, 1].min() == pytest.approx(top[0]["y"])
    assert ring[:, 0].max() - ring[:, 0].min() == pytest.approx(top[0]["size"])
