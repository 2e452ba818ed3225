"""The PatchGastric 3-class subset and its 20/40/40 stratified splits."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from napari_pathm3.errors import PathM3Error
from napari_pathm3.training.protocol import (
    PATCHGASTRIC_CLASSES,
    keyword_rule,
    keyword_rule_accuracy,
    paper_caption,
    patchgastric_splits,
    patchgastric_subset,
    stratified_split,
)

from .test_metrics import TABLE5

TABLE5_IDS = (
    "12ffb560b9b54be8bf574c9e96804dcb",
    "20a86214444542ebb703f47334620827",
    "76bec5ab16da4801b5a707c9c1a30542",
    "debebb808a1e45ea95656599098fea9c",
    "17770d23ffc8494c829b82591a73f7a5",
)


def test_subset_sizes(captions_csv):
    records = patchgastric_subset(captions_csv)
    assert len(records) == 693
    counts = Counter(r.label for r in records)
    assert [counts[c] for c in PATCHGASTRIC_CLASSES] == [283, 265, 145]
    assert len({r.key for r in records}) == 693
    assert all(r.caption for r in patchgastric_subset(captions_csv, captions="raw"))
    # paper style: 17 captions are nothing but the diagnosis, so those slides have no caption
    assert sum(r.caption is None for r in records) == 17


def test_paper_captions_are_table5_references(captions_csv):
    by_id = {r.key: r.caption for r in patchgastric_subset(captions_csv)}
    assert [by_id[i] for i in TABLE5_IDS] == [ref for ref, _, _ in TABLE5]


def test_paper_captions_drop_the_subtype_sentence(captions_csv):
    raw = patchgastric_subset(captions_csv, captions="raw")
    paper = patchgastric_subset(captions_csv)
    assert [r.key for r in raw] == [r.key for r in paper] and [r.label for r in raw] == [
        r.label for r in paper
    ]
    named = re.compile(r"adenocarcinoma|differentiated|diffentiated", re.IGNORECASE)
    assert sum(bool(named.search(r.caption)) for r in raw) == 693
    assert not any(named.search(r.caption) for r in paper if r.caption)
    assert all(r.caption == r.caption.lower() and not r.caption.endswith(".") for r in paper if r.caption)
    # the text-only shortcut: a keyword rule reads the class off 97.4 % of raw captions, 41.4 % of paper ones
    # (the majority class alone is 283 / 693 = 40.8 %)
    assert keyword_rule_accuracy(raw) == pytest.approx(675 / 693)
    assert keyword_rule_accuracy(paper) == pytest.approx(287 / 693)
    with pytest.raises(PathM3Error, match="captions"):
        patchgastric_subset(captions_csv, captions="lower")


def test_paper_caption_rules():
    assert paper_caption("Ducts are seen. Tumor cells are small.  Well differentiated adenocarcinoma.") == (
        "ducts are seen. tumor cells are small"
    )
    assert (
        paper_caption("Group 5, Adenocarcinoma. Poorly differentiated adenocarcinoma, non-solid type") is None
    )
    assert paper_caption(None) is None
    assert keyword_rule("solid sheets; well formed") == 2 and keyword_rule("ducts") is None


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
