"""The PatchGastric 3-class subset and its 20/40/40 stratified splits."""

from __future__ import annotations

from collections import Counter

import pytest

from napari_pathm3.training.protocol import (
    PATCHGASTRIC_CLASSES,
    patchgastric_splits,
    patchgastric_subset,
    stratified_split,
)


def test_subset_sizes(captions_csv):
    records = patchgastric_subset(captions_csv)
    assert len(records) == 693
    counts = Counter(r.label for r in records)
    assert [counts[c] for c in PATCHGASTRIC_CLASSES] == [283, 265, 145]
    assert all(r.caption for r in records)
    assert len({r.key for r in records}) == 693


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_splits_disjoint_stratified(captions_csv, seed):
    splits = patchgastric_splits(captions_csv, seed=seed)
    ids = {k: {r.key for r in v} for k, v in splits.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert [len(splits[k]) for k in ("train", "val", "test")] == [139, 277, 277]
    for name, frac in (("train", 0.2), ("val", 0.4), ("test", 0.4)):
        c = Counter(r.label for r in splits[name])
        for cls, n in zip(PATCHGASTRIC_CLASSES, (283, 265, 145), strict=True):
            assert abs(c[cls] - frac * n) < 1
    assert ids != {
        k: {r.key for r in v} for k, v in patchgastric_splits(captions_csv, seed=seed + 10).items()
    }


def test_stratified_split_deterministic_and_validated():
    labels = ["a"] * 10 + ["b"] * 5
    a = stratified_split(labels, seed=3)
    b = stratified_split(labels, seed=3)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert sorted(sum((list(x) for x in a), [])) == list(range(15))
    with pytest.raises(ValueError, match="fractions"):
        stratified_split(labels, fractions=(0.5, 0.6))
