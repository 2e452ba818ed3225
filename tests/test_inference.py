"""caption_slide, heatmaps and layers on the synthetic two-blob slide with a tiny untrained model (no Qt)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.api import caption_slide  # the request's keywords, as users call it
from napari_pathm3.config import TilingConfig
from napari_pathm3.errors import Cancelled, NoTissueError
from napari_pathm3.heatmaps import attention_raster, normalize, patch_boxes, top_k
from napari_pathm3.inference import STAGES, SlideResult, save_heatmap_png
from napari_pathm3.io.geojson import geojson_to_polygons
from napari_pathm3.io.slide import open_slide
from napari_pathm3.layers import result_layers, shapes_to_level0
from napari_pathm3.tiling import detect_tissue, make_grid

CLASSES = ("tumour", "normal")
#: the progress stages the module's captioning run reported
STAGES_SEEN: list = []
#: a polygon (level-0 x, y) around the first synthetic blob (x 448..1344, y 448..1120): its 4 x 3 patches
BLOB1 = np.array([[400, 400], [1400, 400], [1400, 1150], [400, 1150]], float)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    cfg = PathM3Config.tiny(feature_dim=94, encoder_name="builtin:colorstats", class_names=CLASSES)
    return build_model(cfg).eval().save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def result(synthetic_slide: Path, tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> SlideResult:
    stages: list[str] = []
    res = caption_slide(
        synthetic_slide,
        model=tiny_ckpt,
        device="cpu",
        top_k=5,
        cache_dir=tmp_path_factory.mktemp("cache"),
        progress=lambda e: stages.append(e.within or e.stage),
    )
    STAGES_SEEN[:] = stages
    return res


def test_result_fields(result: SlideResult) -> None:
    n = result.num_patches
    assert n == 18  # 12 + 6 patches on the two blobs
    assert set(result.probabilities) == set(CLASSES)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.label == max(result.probabilities, key=result.probabilities.get)
    assert isinstance(result.caption, str)
    assert result.attention.shape == (n,)
    assert result.query_attention.shape == (4, n)  # tiny config: 4 queries
    np.testing.assert_allclose(result.query_attention.sum(axis=1), 1.0, atol=1e-4)
    assert list(result.top_scores) == sorted(result.top_scores, reverse=True)
    assert len(result.top_indices) == 5
    assert set(result.timings) == {s.value for s in STAGES}  # word maps count under "caption"
    assert [s for s in STAGES if s in STAGES_SEEN] == list(STAGES)
    assert result.encoder_name == "builtin:colorstats"


def test_exports_round_trip(result: SlideResult, tmp_path: Path) -> None:
    data = json.loads(result.save_json(tmp_path / "r.json").read_text())
    assert data["label"] == result.label and data["caption"] == result.caption
    assert len(data["patches"]["attention"]) == result.num_patches
    assert data["top_patches"][0]["index"] == int(result.top_indices[0])
    rows = (result.save_csv(tmp_path / "r.csv")).read_text().splitlines()
    assert rows[0].startswith("index,x,y") and len(rows) == result.num_patches + 1
    polys, props = geojson_to_polygons(json.loads(result.save_geojson(tmp_path / "top.geojson").read_text()))
    i = int(result.top_indices[0])
    x, y = result.coords[i]
    s = result.grid.size_level0
    np.testing.assert_allclose(polys[0].min(0), [x, y])
    np.testing.assert_allclose(polys[0].max(0), [x + s, y + s])
    assert props[0]["rank"] == 1


def test_region_keeps_only_patches_inside(synthetic_slide: Path, tiny_ckpt: Path) -> None:
    res = caption_slide(synthetic_slide, model=tiny_ckpt, device="cpu", region=[BLOB1])
    assert res.num_patches == 12
    assert res.region is not None
    centers = res.grid.centers()
    assert (centers[:, 0] < 1400).all() and (centers[:, 1] < 1150).all()


def test_region_without_tissue(synthetic_slide: Path, tiny_ckpt: Path) -> None:
    empty = np.array([[2800, 100], [3000, 100], [3000, 300], [2800, 300]], float)
    with pytest.raises(NoTissueError, match="inside the selected region"):
        caption_slide(synthetic_slide, model=tiny_ckpt, device="cpu", region=[empty])


def test_cancel_raises(synthetic_slide: Path, tiny_ckpt: Path) -> None:
    class Stop:
        def is_set(self) -> bool:
            return True

    with pytest.raises(Cancelled):
        caption_slide(synthetic_slide, model=tiny_ckpt, device="cpu", cancel=Stop())


def test_heatmap_aligns_with_patches(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        grid = make_grid(slide, TilingConfig(), tissue=detect_tissue(slide))
    values = np.arange(len(grid), dtype=np.float32)
    raster = attention_raster(values, grid)
    mpp = 0.5
    scale, translate = raster.transform((mpp, mpp))
    for i, (x, y) in enumerate(grid.coords):
        r, c = round(y / grid.step_level0), round(x / grid.step_level0)
        assert raster.data[r, c] == values[i]
        # the raster pixel's centre in world units is the patch centre in the slide layer's world units
        centre_world = (np.array([y, x]) + (grid.size_level0 - 1) / 2) * mpp
        np.testing.assert_allclose(np.array(translate) + np.array([r, c]) * np.array(scale), centre_world)
    assert np.isnan(raster.data).sum() == raster.data.size - len(grid)


def test_overlapping_grid_averages(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        grid = make_grid(slide, TilingConfig.with_overlap(0.5), tissue=detect_tissue(slide))
    raster = attention_raster(np.ones(len(grid)), grid)
    assert raster.downsample == grid.step_level0 == 112
    assert np.nanmax(raster.data) == pytest.approx(1.0)
    stack = attention_raster(np.ones((3, len(grid))), grid)
    assert stack.data.shape == (3, *raster.data.shape)


def test_normalize_and_top_k() -> None:
    v = np.array([0.1, np.nan, 0.3, 0.2])
    np.testing.assert_allclose(normalize(v), [0, np.nan, 1, 0.5])
    np.testing.assert_allclose(normalize(v, method="rank"), [0, np.nan, 1, 0.5])
    idx, s = top_k(np.array([0.2, 0.5, 0.5, 0.1]), 3)
    assert idx.tolist() == [1, 2, 0] and s.tolist() == [0.5, 0.5, 0.2]


def test_result_layers_align_with_slide(result: SlideResult) -> None:
    layers = {kw["metadata"]["kind"]: (data, kw, kind) for data, kw, kind in result_layers(result)}
    assert set(layers) == {"tissue", "attention", "query_attention", "top_patches"}
    mpp = 0.5
    tissue, kw, kind = layers["tissue"]
    assert kind == "labels" and tissue.dtype == np.uint8
    ds = result.tissue.downsample
    assert kw["scale"] == pytest.approx((ds * mpp, ds * mpp))
    heat, kw, kind = layers["attention"]
    assert kind == "image" and heat.shape == (2048 // 224 + 1, 3072 // 224 + 1)
    assert kw["scale"] == pytest.approx((224 * mpp, 224 * mpp))
    assert kw["translate"] == pytest.approx((111.5 * mpp, 111.5 * mpp))
    assert kw["colormap"] == "turbo" and 0 < kw["opacity"] < 1
    stack, kw, _ = layers["query_attention"]
    assert stack.shape == (4, *heat.shape) and len(kw["scale"]) == 3
    boxes, kw, kind = layers["top_patches"]
    assert kind == "shapes" and len(boxes) == 5 and kw["scale"] == (mpp, mpp)
    assert list(kw["features"]["rank"]) == [1, 2, 3, 4, 5]
    meta = kw["metadata"]["pathm3"]
    assert meta["label"] == result.label and meta["caption"] == result.caption
    assert meta["probabilities"] == pytest.approx(result.probabilities)
    # top box corners, back in level-0 pixels, enclose exactly the patch
    (poly,) = shapes_to_level0([boxes[0]], scale=(mpp, mpp), translate=(0, 0), slide_scale=(mpp, mpp))
    x, y = result.coords[result.top_indices[0]]
    np.testing.assert_allclose(poly.min(0) + 0.5, [x, y])
    np.testing.assert_allclose(patch_boxes(result.grid, result.top_indices[:1])[0], boxes[0])


def test_heatmap_png(result: SlideResult, tmp_path: Path) -> None:
    from PIL import Image

    path = save_heatmap_png(result, tmp_path / "heat.png", max_size=512)
    img = np.asarray(Image.open(path))
    # a 512-px thumbnail plus the colour bar and the text block (napari_pathm3.heatmap_png)
    assert max(img.shape[:2]) > 512 and img.shape[2] == 3
