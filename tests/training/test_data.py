"""Manifests, feature files and the padded collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_pathm3.errors import FeatureStoreError, PathM3Error
from napari_pathm3.training.data import (
    IGNORE_INDEX,
    BagDataset,
    SlideBag,
    collate_bags,
    read_manifest,
    split_records,
)


def test_collate_pads_and_masks():
    bags = [
        SlideBag(np.ones((3, 2), np.float32), 1, "x", "a"),
        SlideBag(np.full((5, 2), 2, np.float32), None),
    ]
    b = collate_bags(bags)
    assert b.features.shape == (2, 5, 2)
    assert b.mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert b.features[0, 3:].abs().sum() == 0
    assert b.labels.tolist() == [1, IGNORE_INDEX]
    assert b.captions == ["x", None]


def test_patchgastric_csv_is_a_manifest(captions_csv):
    recs = read_manifest(captions_csv)
    assert len(recs) == 991
    assert recs[0].key == "f77a619f6ccc449f915b44bdc0d6d8f0"
    assert recs[0].label == "Well differentiated tubular adenocarcinoma"
    assert recs[0].caption.startswith("Large atypical cells")


def test_manifest_with_feature_files(tmp_path):
    feats = tmp_path / "feats"
    feats.mkdir()
    np.save(feats / "s1.npy", np.ones((4, 3), np.float32))
    torch.save(
        {"features": torch.zeros(2, 3), "coords": torch.zeros(2, 2, dtype=torch.long)}, feats / "s2.pt"
    )
    (tmp_path / "m.csv").write_text("slide,label,caption,split\ns1,b,cap one,train\ns2,a,,val\ns3,a,x,test\n")
    recs = read_manifest(tmp_path / "m.csv")
    parts = split_records(recs)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [1, 1, 1]
    ds = BagDataset(recs, ("a", "b"), feats)
    assert ds[0].label == 1 and ds[0].features.shape == (4, 3) and ds[0].caption == "cap one"
    assert ds[1].coords.shape == (2, 2) and ds[1].caption is None
    with pytest.raises(FeatureStoreError, match="s3"):
        ds[2]
    with pytest.raises(PathM3Error, match="not one of"):
        BagDataset(recs, ("x", "y"), feats)[0]


def test_max_patches_subsamples_per_epoch():
    ds = BagDataset([SlideBag(np.arange(20, dtype=np.float32)[:, None], 0)], max_patches=5)
    a = ds[0].features[:, 0].tolist()
    ds.reseed(1)
    b = ds[0].features[:, 0].tolist()
    assert len(a) == 5 and a == sorted(a) and a != b


def test_batch_caption_mask_marks_bags_with_a_caption():
    bags = [SlideBag(np.ones((2, 2), np.float32), 0, c, str(i)) for i, c in enumerate(["x", None, "  ", "y"])]
    assert collate_bags(bags).caption_mask.tolist() == [True, False, False, True]


def test_model_inputs_keep_caption_less_bags_in_image_text_mode():
    from napari_pathm3.training.evaluate import model_inputs

    bags = [
        SlideBag(np.ones((2, 2), np.float32), 0, "a caption", "a"),
        SlideBag(np.ones((3, 2), np.float32), 1),
    ]
    batch = collate_bags(bags)
    kw = model_inputs(batch, "image_text", 0.5, device="cpu")
    assert kw["captions"] == ["a caption", None] and kw["text"] == ["a caption", None]
    assert model_inputs(batch, "image", 1.0, device="cpu")["captions"] is None  # α = 1: no caption loss
    with pytest.raises(PathM3Error, match="mode 'text' needs a caption"):
        model_inputs(batch, "text", 0.5, device="cpu")


def test_bags_come_in_row_major_patch_order():
    from napari_pathm3.training.data import row_major_order, spatially_ordered

    coords = np.array([[224, 0], [0, 224], [0, 0], [224, 224], [448, 0]])
    assert row_major_order(coords).tolist() == [2, 0, 4, 1, 3]
    feats = np.arange(5, dtype=np.float32)[:, None].repeat(2, axis=1)
    bag = SlideBag(feats, 1, "c", "s", coords)
    ds = BagDataset([bag])
    out = ds[0]
    assert out.coords.tolist() == [[0, 0], [224, 0], [448, 0], [0, 224], [224, 224]]
    assert out.features[:, 0].tolist() == [2, 0, 4, 1, 3]  # features travel with their coords
    assert BagDataset([bag], spatial_order=False)[0] is bag
    plain = SlideBag(feats, 1)  # no coords (PatchGastric folders): order kept
    assert spatially_ordered(plain) is plain
    # subsampled bags are ordered too
    sub = BagDataset([bag], max_patches=3)[0]
    assert (np.diff(sub.coords[:, 1] * 10_000 + sub.coords[:, 0]) > 0).all()


def test_training_with_some_captions_missing_in_image_text_mode(tmp_path):
    """Limited captions: half the bags have none; image_text training runs and trains the caption loss."""
    import dataclasses

    from napari_pathm3.config import AdamWConfig, PathM3Config, TrainConfig
    from napari_pathm3.training.loop import train

    rng = np.random.default_rng(0)
    bags = [
        SlideBag(
            rng.normal(size=(5, 16)).astype(np.float32), i % 2, "solid sheets" if i % 4 < 2 else None, f"s{i}"
        )
        for i in range(8)
    ]
    cfg = PathM3Config.tiny(feature_dim=16, mode="image_text", optim=AdamWConfig(batch_size=4))
    res = train(cfg, bags, None, TrainConfig(epochs=1, device="cpu"), out_dir=tmp_path)
    rec = res.history[0]
    assert np.isfinite(rec["train_loss"]) and np.isfinite(rec["train_loss_caption"])
    assert dataclasses.asdict(res.model.config)["mode"] == "image_text"


def test_slide_grids_are_already_row_major(cmu_slide_path):
    """caption_slide feeds grid-ordered features to the model: the grid must be row-major for local landmarks."""
    from napari_pathm3.io.slide import open_slide
    from napari_pathm3.tiling import make_grid
    from napari_pathm3.training.data import row_major_order

    with open_slide(cmu_slide_path) as slide:
        grid = make_grid(slide)
    assert len(grid) > 10
    assert (row_major_order(grid.coords) == np.arange(len(grid))).all()
