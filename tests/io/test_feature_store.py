from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.errors import FeatureStoreError
from napari_pathm3.io.feature_store import (
    FORMAT_VERSION,
    BagMeta,
    BagWriter,
    FeatureBag,
    FeatureStore,
    GridMeta,
    bag_meta,
    inspect_bag,
    read_bag,
)

N, D = 10, 6
COORDS = np.stack([np.arange(N) * 224, np.zeros(N)], axis=1).astype(np.int64)
FEATS = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
ENC = {"name": "test:enc", "dim": D, "input_size": None, "mpp": 0.5, "weights_hash": "abc"}
GRID = {"patch_size": 224, "mpp": 0.5, "tiling": {"patch_size": 224}}


def meta(**kw) -> BagMeta:
    args = dict(slide_id="s1", fingerprint="fp", encoder=ENC, grid=GRID, coords=COORDS, dtype="float32") | kw
    return bag_meta(**args)


def fill(path: Path, *, upto: int = N, m: BagMeta | None = None, chunk_rows: int = 4) -> BagWriter:
    w = BagWriter.open(path, meta=m or meta(), coords=COORDS, dim=D, chunk_rows=chunk_rows)
    while w.done < upto:
        stop = min(w.done + w.chunk_rows, N)
        w.write(w.done, FEATS[w.done : stop])
    if w.done == N:
        w.finish()
    return w


@pytest.mark.parametrize("pieces", [[3, 3, 3, 1], [1] * 10, [10], [5, 5], [4, 6]])
def test_append_writes_whole_chunks_then_the_tail(tmp_path: Path, pieces: list[int]) -> None:
    w = BagWriter.open(tmp_path / "a.zarr", meta=meta(), coords=COORDS, dim=D, chunk_rows=4)
    pos = 0
    for k in pieces:
        w.append(FEATS[pos : pos + k])
        pos += k
        assert w.done % 4 == 0 or w.done == N  # only whole chunks (or the tail) reach the store
        assert pos - w.done < 4 or pos == N
    assert w.done == N
    w.finish()
    np.testing.assert_array_equal(read_bag(tmp_path / "a.zarr").features, FEATS)


def test_write_read_roundtrip(tmp_path: Path) -> None:
    fill(tmp_path / "a.zarr")
    bag = read_bag(tmp_path / "a.zarr")
    np.testing.assert_array_equal(bag.features, FEATS)
    np.testing.assert_array_equal(bag.coords, COORDS)
    assert (bag.patch_size, bag.mpp, bag.encoder_name, bag.slide_id, bag.fingerprint) == (
        224,
        0.5,
        "test:enc",
        "s1",
        "fp",
    )
    assert bag.meta.format_version == FORMAT_VERSION and bag.meta.grid == GridMeta.from_json(GRID)
    assert bag.meta.encoder.weights_hash == "abc" and len(bag) == N and bag.dim == D
    assert inspect_bag(tmp_path / "a.zarr", meta())[0] == "complete"


def test_partial_resume_and_chunk_rules(tmp_path: Path) -> None:
    path = tmp_path / "p.zarr"
    w = fill(path, upto=8)
    with pytest.raises(FeatureStoreError, match="incomplete"):
        read_bag(path)
    assert read_bag(path, allow_partial=True).features.shape == (8, D)
    assert inspect_bag(path, meta()) == ("partial", "8 of 10 rows on disk")
    with pytest.raises(FeatureStoreError, match="out of order"):
        w.write(0, FEATS[:4])
    with pytest.raises(FeatureStoreError, match="finish"):
        w.finish()
    # a new writer with another chunk size resumes with the stored one
    w2 = BagWriter.open(path, meta=meta(), coords=COORDS, dim=D, chunk_rows=100)
    assert (w2.done, w2.chunk_rows) == (8, 4)
    with pytest.raises(FeatureStoreError, match="aligned"):
        w2.write(8, FEATS[8:9])  # not the whole tail chunk
    w2.write(8, FEATS[8:])
    w2.finish()
    np.testing.assert_array_equal(read_bag(path).features, FEATS)


@pytest.mark.parametrize(
    "changed",
    [
        {"encoder": ENC | {"weights_hash": "other"}},
        {"encoder": ENC | {"name": "test:other"}},
        {"grid": GRID | {"patch_size": 256}},
        {"fingerprint": "changed"},
        {"coords": COORDS + 1},
        {"dtype": "float16"},
    ],
)
def test_stale_detected_and_replaced(tmp_path: Path, changed: dict) -> None:
    path = tmp_path / "s.zarr"
    fill(path)
    new = meta(**changed)
    state, reason = inspect_bag(path, new)
    assert state == "stale" and "differs" in reason
    w = BagWriter.open(path, meta=new, coords=COORDS, dim=D)
    assert w.done == 0 and not w.complete


def test_half_created_or_garbage_store_is_foreign_and_kept(tmp_path: Path) -> None:
    """A folder without the store's own marker is never removed: extraction refuses it, nothing changes."""
    import zarr

    path = tmp_path / "h.zarr"
    zarr.open_group(str(path), mode="w")  # e.g. another tool's group, or an interrupted format-1 creation
    assert inspect_bag(path, meta())[0] == "foreign"
    junk = tmp_path / "j.zarr"
    junk.mkdir()
    (junk / "zarr.json").write_text("{not json")
    assert inspect_bag(junk, meta())[0] == "foreign"
    with pytest.raises(FeatureStoreError, match="not a feature store"):
        read_bag(junk)
    with pytest.raises(FeatureStoreError, match="nothing was changed"):
        BagWriter.open(junk, meta=meta(), coords=COORDS, dim=D)
    assert (junk / "zarr.json").read_text() == "{not json"
    empty = tmp_path / "e.zarr"
    empty.mkdir()  # an empty folder holds nothing to lose: it becomes the store
    assert BagWriter.open(empty, meta=meta(), coords=COORDS, dim=D).done == 0


def test_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "o.zarr"
    fill(path)
    w = BagWriter.open(path, meta=meta(), coords=COORDS, dim=D, overwrite=True)
    assert w.done == 0


def test_float16(tmp_path: Path) -> None:
    m = meta(dtype="float16")
    w = BagWriter.open(tmp_path / "f.zarr", meta=m, coords=COORDS, dim=D, chunk_rows=N)
    w.write(0, FEATS.astype(np.float16))
    w.finish()
    bag = read_bag(tmp_path / "f.zarr")
    assert bag.features.dtype == np.float32
    np.testing.assert_allclose(bag.features, FEATS, rtol=1e-3, atol=1e-3)


def test_feature_store_directory(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "root")
    assert store.keys() == [] and len(store) == 0
    ids = ["slide-a", "case/1 b", "x%y"]
    for sid in ids:
        fill(store.path_for(sid), m=meta(slide_id=sid))
    fill(store.path_for("partial"), m=meta(slide_id="partial"), upto=4)
    assert store.keys() == sorted(ids)
    assert store.incomplete() == ["partial"]
    assert "case/1 b" in store and "partial" not in store
    assert store.path_for("case/1 b").parent == store.root  # no sub-folders from slashes
    assert store.open_bag("case/1 b").slide_id == "case/1 b"
    with pytest.raises(FeatureStoreError, match="resume"):
        store.open_bag("partial")
    with pytest.raises(FeatureStoreError, match="no features"):
        store.open_bag("missing")
    with pytest.raises(ValueError):
        store.path_for("")


def test_feature_bag_validation() -> None:
    with pytest.raises(ValueError, match="features"):
        FeatureBag(
            features=np.zeros(3), coords=None, patch_size=None, mpp=None, encoder_name="", slide_id="x"
        )
    with pytest.raises(ValueError, match="coords"):
        FeatureBag(
            features=np.zeros((3, 2)),
            coords=np.zeros((2, 2)),
            patch_size=None,
            mpp=None,
            encoder_name="",
            slide_id="x",
        )


def test_format1_store_is_ours_and_recomputed(tmp_path: Path) -> None:
    """Stores written before the ownership marker are recognised by their attributes and replaced."""
    import zarr

    path = tmp_path / "v1.zarr"
    g = zarr.open_group(str(path), mode="w")
    g.create_array("features", shape=(N, D), chunks=(4, D), dtype="float32")
    g.create_array("coords", shape=(N, 2), chunks=(N, 2), dtype="int64")
    g.attrs.update({"format_version": 1, "slide_id": "s1", "n": N, "done": N, "complete": True})
    assert inspect_bag(path, meta())[0] == "stale"
    w = BagWriter.open(path, meta=meta(), coords=COORDS, dim=D)
    assert w.done == 0 and read_bag(path, allow_partial=True).meta.format_version == FORMAT_VERSION


def test_leftovers_of_killed_runs_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "k.zarr"
    orphan = tmp_path / ".k.zarr.tmp-123-0123abcd"
    orphan.mkdir()
    (orphan / "zarr.json").write_text("{}")
    kept = tmp_path / ".k.zarr.mine"  # not one of our temporary names
    kept.mkdir()
    fill(path)
    assert not orphan.exists() and kept.exists()


def test_meta_round_trips_the_stored_attributes(tmp_path: Path) -> None:
    """The typed metadata writes exactly the attributes it reads: the on-disk format is unchanged."""
    import json

    fill(tmp_path / "a.zarr")
    on_disk = json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())["attributes"]
    parsed = BagMeta.from_attrs(on_disk)
    assert parsed.to_attrs() == on_disk
    assert parsed.owned and parsed.complete and parsed.n == N and parsed.encoder.name == "test:enc"
    assert parsed.grid.patch_size == 224 and parsed.grid.tiling == {"patch_size": 224}


def test_reads_and_reuses_a_store_written_before_the_typed_metadata(tmp_path: Path) -> None:
    """A store whose attributes were written by the dict-based code (PatchGrid.params() with all its keys)
    is read, and reused by a request for the same bag instead of being recomputed."""
    import zarr

    grid = {
        "patch_size": 224,
        "mpp": None,
        "size_level0": 448.0,
        "read_level": 0,
        "read_size": 448,
        "step_level0": 448.0,
        "slide_dimensions": [1000, 800],
        "tiling": {"patch_size": 224, "mpp": 0.5},
    }
    path = tmp_path / "old.zarr"
    group = zarr.open_group(str(path), mode="w")
    feats = group.create_array("features", shape=(N, D), chunks=(N, D), dtype="float32")
    feats.attrs["napari_pathm3"] = "feature-bag"
    group.create_array("coords", shape=(N, 2), chunks=(N, 2), dtype="int64")[:] = COORDS
    feats[:] = FEATS
    from napari_pathm3.io.feature_store._files import _digest, coords_sha256

    group.attrs.update(
        {
            "napari_pathm3": "feature-bag",
            "format_version": 2,
            "slide_id": "s1",
            "slide_fingerprint": "fp",
            "encoder": ENC,
            "grid": grid,
            "patch_size": 224,
            "mpp": None,
            "n": N,
            "coords_sha256": coords_sha256(COORDS),
            "dtype": "float32",
            "chunk_rows": N,
            "chunk_digests": [_digest(FEATS)],
            "done": N,
            "complete": True,
        }
    )
    bag = read_bag(path)
    assert bag.meta.grid.slide_dimensions == (1000, 800) and bag.meta.size_level0 == 448.0
    assert bag.encoder_name == "test:enc" and bag.fingerprint == "fp"
    assert inspect_bag(path, meta(grid=grid)) == ("complete", "complete")
