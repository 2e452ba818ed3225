"""Out-of-distribution honesty (issue 27 item 3): a checkpoint keeps a summary of its training features; a
slide unlike the training slides gets a warning with the distance and the threshold (result, JSON, overlay),
the training slide none; results carry the model's recorded accuracy; the demo model's overlay says
"not diagnostic"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3 import api
from napari_pathm3.layers import overlay_text
from napari_pathm3.model.feature_summary import (
    SUMMARY_JSON,
    SUMMARY_TENSORS,
    load_summary,
    save_summary,
    summarize,
)
from napari_pathm3.training.regions import Region

from .conftest import BLOBS, write_pyramid_tiff


def _rect(x: int, y: int, w: int, h: int) -> np.ndarray:
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], float)


@pytest.fixture(scope="module")
def trained(synthetic_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained on the two pink blobs of the synthetic slide."""

    regions = [
        Region(label="big", polygon=_rect(*BLOBS[0]), caption="a big blob."),
        Region(label="small", polygon=_rect(*BLOBS[1]), caption="a small blob."),
    ]
    out = tmp_path_factory.mktemp("ood") / "run"
    result = api.train(
        [(synthetic_slide, regions)],
        output_dir=out,
        encoder="builtin:colorstats",
        device="cpu",
        epochs=2,
        sub_bags=2,
        validation=False,
    )
    return result.best_dir


@pytest.fixture(scope="module")
def unlike_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same layout, but dark blue-green "tissue" with coarse texture: nothing like pink H&E."""
    rng = np.random.default_rng(1)
    img = np.full((2048, 3072, 3), 245, np.uint8)
    for x, y, w, h in BLOBS:
        patch = np.empty((h, w, 3), np.uint8)
        patch[..., 0] = 30 + rng.integers(0, 60, (h, w))
        patch[..., 1] = 110 + rng.integers(-50, 50, (h, w))
        patch[..., 2] = 90 + rng.integers(-50, 50, (h, w))
        img[y : y + h, x : x + w] = patch
    return write_pyramid_tiff(tmp_path_factory.mktemp("ood") / "unlike.tif", img, mpp=0.5)


def test_checkpoint_keeps_a_training_feature_summary(trained: Path) -> None:
    assert (trained / SUMMARY_TENSORS).is_file() and (trained / SUMMARY_JSON).is_file()
    assert not list(trained.glob("*.pt")) and not list(trained.glob("*.pkl"))
    meta = json.loads((trained / SUMMARY_JSON).read_text())
    assert meta["encoder"] == "builtin:colorstats" and meta["feature_dim"] == 94 and meta["n_patches"] > 0
    summary = load_summary(trained)
    assert summary is not None and summary.mean.shape == (94,) and summary.threshold > summary.train_median


def test_training_slide_has_no_ood_warning(trained: Path, synthetic_slide: Path) -> None:
    result = api.caption_slide(synthetic_slide, model=trained, device="cpu")
    ood = result.out_of_distribution
    assert ood is not None and ood["out_of_distribution"] is False and ood["distance"] <= ood["threshold"]
    assert not any("out of distribution" in w for w in result.warnings)
    assert result.model_accuracy is not None and result.model_accuracy["evaluated_on"] == "training"
    from napari_pathm3.heatmap_png import result_lines

    assert "model's training accuracy" in result_lines(result)[0][0]  # beside the probability in the PNG


def test_unlike_slide_gets_the_warning_everywhere(trained: Path, unlike_slide: Path, tmp_path: Path) -> None:
    result = api.caption_slide(unlike_slide, model=trained, device="cpu")
    ood = result.out_of_distribution
    assert ood is not None and ood["out_of_distribution"] is True and ood["distance"] > ood["threshold"]
    warning = next(w for w in result.warnings if w.startswith("out of distribution"))
    assert f"{ood['distance']:.2f}" in warning and f"{ood['threshold']:.2f}" in warning
    data = json.loads(result.save_json(tmp_path / "r.json").read_text())
    assert data["out_of_distribution"]["out_of_distribution"] is True and warning in data["warnings"]
    text = overlay_text(result, width=400)
    assert "out of distribution" in text and "training accuracy" in text


def test_summary_math_and_corrupt_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    bags = [rng.normal(0, 1, (200, 16)).astype(np.float32) for _ in range(5)]
    bags[0][:, 3] = 2.0  # a constant feature in one bag does not make the std zero
    summary = summarize(bags)
    assert summary.train_median == pytest.approx(1.0, abs=0.15)
    assert not summary.check(rng.normal(0, 1, (300, 16))).far
    assert summary.check(rng.normal(3, 1, (300, 16))).far
    constant = summarize([np.ones((10, 4), np.float32)])  # every feature constant: any change is far
    assert not constant.check(np.ones((5, 4))).far and constant.check(np.full((5, 4), 1.01)).far
    save_summary(summary, tmp_path, encoder="x")
    again = load_summary(tmp_path)
    assert again is not None and np.array_equal(again.mean, summary.mean)
    (tmp_path / SUMMARY_TENSORS).write_bytes(b"not safetensors")
    assert load_summary(tmp_path) is None
    assert load_summary(tmp_path / "missing") is None and load_summary(None) is None
    with pytest.raises(ValueError, match="no training features"):
        summarize([])


def test_demo_overlay_says_not_diagnostic(trained: Path, synthetic_slide: Path) -> None:
    import dataclasses

    result = api.caption_slide(synthetic_slide, model=trained, device="cpu")
    assert "NOT DIAGNOSTIC" not in overlay_text(result) and "disclaimer" not in result.summary()
    demo = dataclasses.replace(result, demo=True)  # what a demo checkpoint's results carry
    assert "NOT diagnostic" in demo.summary()["disclaimer"]
    assert overlay_text(demo).startswith("DEMO MODEL - NOT DIAGNOSTIC")
