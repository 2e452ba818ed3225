"""Regions (polygons, label masks) -> bags of the patches whose centre is inside."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_pathm3.training.regions import Region, bags_from_regions, regions_from_labels


@pytest.fixture
def slide_features():
    # 4 x 3 grid of 100-px patches: top-left (x, y) = (100 i, 100 j); feature 0 = patch number
    coords = np.array([(x, y) for y in range(0, 300, 100) for x in range(0, 400, 100)], dtype=np.int64)
    feats = np.zeros((len(coords), 4), np.float32)
    feats[:, 0] = np.arange(len(coords))
    return SimpleNamespace(features=feats, coords=coords, size_level0=100.0)


def test_polygon_selects_patch_centres(slide_features):
    # covers centres (50, 50), (150, 50), (50, 150), (150, 150): patches 0, 1, 4, 5
    square = np.array([[0, 0], [199, 0], [199, 199], [0, 199]], float)
    triangle = np.array([[300, 0], [399, 0], [399, 120]], float)  # centres: (350, 50) only
    bags = bags_from_regions(
        slide_features,
        [Region(label="tumour", polygon=square, caption="glands"), Region(label="normal", polygon=triangle)],
        class_names=("normal", "tumour"),
        slide_id="s1",
    )
    assert [b.features[:, 0].tolist() for b in bags] == [[0, 1, 4, 5], [3]]
    assert [b.label for b in bags] == [1, 0]
    assert bags[0].caption == "glands" and bags[1].caption is None
    assert bags[0].slide_id == "s1#region0"
    assert bags[0].coords.tolist() == [[0, 0], [100, 0], [0, 100], [100, 100]]


def test_label_mask_with_downsample_and_origin(slide_features):
    # label image at downsample 50 (8 x 6 px covers the slide): id 1 on the right column, id 2 on patch 4
    labels = np.zeros((6, 8), np.int32)
    labels[:, 6:] = 1
    labels[2:4, 0:2] = 2
    regions = regions_from_labels(labels, {1: "a", 2: ("b", "two"), 3: "c"}, downsample=50.0)
    assert [r.name for r in regions] == ["label1", "label2"]  # id 3 absent: no region
    bags = bags_from_regions(slide_features, regions, class_names=("a", "b"))
    assert bags[0].features[:, 0].tolist() == [3, 7, 11]
    assert bags[1].features[:, 0].tolist() == [4] and bags[1].caption == "two"
    # origin shifts the mask: the same mask placed 100 px to the left selects the column before
    shifted = regions_from_labels(labels, {1: "a"}, downsample=50.0, origin=(-100.0, 0.0))
    assert bags_from_regions(slide_features, shifted, class_names=("a",))[0].features[:, 0].tolist() == [
        2,
        6,
        10,
    ]


def test_empty_region_skipped_and_tuple_input(slide_features):
    far = np.array([[1000, 1000], [1100, 1000], [1100, 1100]], float)
    t = (slide_features.features, slide_features.coords, 100.0)
    assert bags_from_regions(t, [Region(label=0, polygon=far)]) == []
    with pytest.raises(ValueError, match="exactly one"):
        Region(label=0)


def test_feature_store_bag_patch_size_from_grid_attrs(slide_features):
    from napari_pathm3.io.feature_store import BagMeta, FeatureBag, GridMeta

    bag = FeatureBag(
        features=slide_features.features,
        coords=slide_features.coords,
        patch_size=224,
        mpp=0.5,
        encoder_name="x",
        slide_id="s",
        meta=BagMeta(grid=GridMeta(size_level0=100.0)),
    )
    square = np.array([[0, 0], [199, 0], [199, 199], [0, 199]], float)
    out = bags_from_regions(bag, [Region(label=0, polygon=square)])
    assert out[0].features[:, 0].tolist() == [0, 1, 4, 5]
