from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from napari_pathm3.errors import FeatureStoreError
from napari_pathm3.io.interop import (
    bags_from_patch_folder,
    patch_folder_slides,
    read_feature_file,
    read_h5_bag,
)

RNG = np.random.default_rng(0)
FEATS = RNG.normal(size=(7, 5)).astype(np.float32)
COORDS = np.stack([np.arange(7) * 512, np.arange(7) * 256], axis=1)


def test_trident_h5(tmp_path: Path) -> None:
    path = tmp_path / "slide-7.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=FEATS)
        c = f.create_dataset("coords", data=COORDS.astype(np.int32))
        c.attrs["patch_size"] = 256
        c.attrs["level"] = 0
        c.attrs["patch_size_level0"] = 512
        c.attrs["name"] = b"slide-7"
    bag = read_h5_bag(path)
    np.testing.assert_array_equal(bag.features, FEATS)
    np.testing.assert_array_equal(bag.coords, COORDS)
    assert bag.coords.dtype == np.int64 and bag.features.dtype == np.float32
    assert (bag.patch_size, bag.slide_id, bag.mpp) == (256, "slide-7", None)
    assert (
        bag.meta.extra["level"] == 0
        and bag.meta.patch_size_level0 == 512
        and bag.meta.extra["name"] == "slide-7"
    )


def test_clam_h5_batch_axis_and_float_coords(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=FEATS[None].astype(np.float16))
        f.create_dataset("coords", data=COORDS[None].astype(np.float64) + 0.2)
        f["coords"].attrs["patch_level"] = 1
    bag = read_feature_file(path, slide_id="case")
    assert bag.features.shape == (7, 5) and bag.slide_id == "case" and bag.patch_size is None
    np.testing.assert_array_equal(bag.coords, COORDS)


def test_h5_features_only(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=FEATS)
    assert read_h5_bag(path).coords is None


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"feats": FEATS}, "no 'features'"),
        ({"features": FEATS, "coords": COORDS[:3]}, "coords must be"),
        ({"features": FEATS[0]}, r"\(N, D\)"),
        ({"features": np.array([b"a", b"b"])}, "real floating-point"),
    ],
)
def test_malformed_h5(tmp_path: Path, content: dict, match: str) -> None:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        for k, v in content.items():
            f.create_dataset(k, data=v)
    with pytest.raises(FeatureStoreError, match=match):
        read_h5_bag(path)


def test_not_hdf5_and_unknown_suffix(tmp_path: Path) -> None:
    (tmp_path / "x.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(FeatureStoreError, match="HDF5"):
        read_feature_file(tmp_path / "x.h5")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(FeatureStoreError, match="unsupported"):
        read_feature_file(tmp_path / "x.csv")
    with pytest.raises(FeatureStoreError, match="no such file"):
        read_feature_file(tmp_path / "missing.h5")


def test_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", FEATS.astype(np.float64))
    bag = read_feature_file(tmp_path / "s.npy")
    assert bag.coords is None and bag.slide_id == "s" and bag.features.dtype == np.float32
    np.testing.assert_allclose(bag.features, FEATS)
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FeatureStoreError):
        read_feature_file(tmp_path / "o.npy")  # pickled objects are refused


class _Evil:
    def __reduce__(self):  # would run code if loaded without weights_only
        return (print, ("pwned",))


def test_pt(tmp_path: Path) -> None:
    torch.save(torch.from_numpy(FEATS), tmp_path / "t.pt")
    np.testing.assert_array_equal(read_feature_file(tmp_path / "t.pt").features, FEATS)
    torch.save(
        {"features": torch.from_numpy(FEATS).half(), "coords": torch.from_numpy(COORDS)}, tmp_path / "d.pt"
    )
    bag = read_feature_file(tmp_path / "d.pt")
    np.testing.assert_array_equal(bag.coords, COORDS)
    assert bag.features.dtype == np.float32
    torch.save({"x": torch.zeros(2)}, tmp_path / "k.pt")
    with pytest.raises(FeatureStoreError, match="'features'"):
        read_feature_file(tmp_path / "k.pt")
    torch.save(_Evil(), tmp_path / "evil.pt")
    with pytest.raises(FeatureStoreError, match="weights_only"):
        read_feature_file(tmp_path / "evil.pt")


@pytest.fixture(scope="module")
def patch_folder(cmu_slide_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PatchGastric look-alike: 300 px JPEGs named {slide_id}_{hash}.jpg from two 'slides' of CMU."""
    from PIL import Image

    from napari_pathm3.io import open_slide

    folder = tmp_path_factory.mktemp("patchgastric")
    with open_slide(cmu_slide_path) as slide:
        for i, (x, y) in enumerate([(600, 600), (900, 600), (600, 900), (1200, 1500), (1500, 1500)]):
            sid = "TCGA-AB-0001" if i < 3 else "TCGA-AB-0002"
            Image.fromarray(slide.read_region((x, y), 0, (300, 300))).save(
                folder / f"{sid}_{i:08x}.jpg", quality=90
            )
    (folder / "README.txt").write_text("not an image")
    (folder / "nounderscore.jpg").write_bytes(b"")
    return folder


def test_patch_folder_grouping(patch_folder: Path) -> None:
    groups = patch_folder_slides(patch_folder)
    assert {k: len(v) for k, v in groups.items()} == {"TCGA-AB-0001": 3, "TCGA-AB-0002": 2}


def test_bags_from_patch_folder(patch_folder: Path) -> None:
    from PIL import Image

    from napari_pathm3.features.encoders import get_encoder

    enc = get_encoder("builtin:colorstats")
    seen: list[int] = []
    bags = bags_from_patch_folder(patch_folder, enc, batch_size=2, progress=lambda e: seen.append(e.done))
    assert sorted(bags) == ["TCGA-AB-0001", "TCGA-AB-0002"]
    bag = bags["TCGA-AB-0001"]
    assert bag.coords is None and bag.features.shape == (3, enc.dim) and bag.patch_size == 300
    assert bag.encoder_name == "builtin:colorstats" and seen[-1] == 5
    first = sorted(patch_folder.glob("TCGA-AB-0001_*.jpg"))[0]
    ref = enc.encode(np.asarray(Image.open(first).convert("RGB"))[None])
    np.testing.assert_allclose(bag.features[:1], ref, rtol=1e-5, atol=1e-6)


class _MeanEncoder:
    """Any object with ``encode(uint8 (b, h, w, 3)) -> (b, d)`` works."""

    name, input_size = "test:mean", 64

    def encode(self, batch: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), -1, 3).mean(1)


def test_patch_folder_subset_and_resize(patch_folder: Path) -> None:
    only = bags_from_patch_folder(patch_folder, _MeanEncoder(), slide_ids=["TCGA-AB-0002"])
    assert list(only) == ["TCGA-AB-0002"]
    assert only["TCGA-AB-0002"].features.shape == (2, 3) and only["TCGA-AB-0002"].patch_size == 64
    with pytest.raises(FeatureStoreError, match="no images"):
        bags_from_patch_folder(patch_folder, _MeanEncoder(), slide_ids=["nope"])


def test_empty_patch_folder(tmp_path: Path) -> None:
    with pytest.raises(FeatureStoreError, match="no patch images"):
        patch_folder_slides(tmp_path)


def test_safetensors(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    feats = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    coords = np.arange(10, dtype=np.int32).reshape(5, 2)
    save_file({"features": feats, "coords": coords}, str(tmp_path / "s1.safetensors"))
    bag = read_feature_file(tmp_path / "s1.safetensors")
    np.testing.assert_array_equal(bag.features, feats)
    assert bag.coords.dtype == np.int64 and bag.coords.tolist() == coords.tolist() and bag.slide_id == "s1"
    save_file({"other": feats}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(FeatureStoreError, match="no 'features'"):
        read_feature_file(tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(FeatureStoreError, match="cannot read features"):
        read_feature_file(tmp_path / "junk.safetensors")
