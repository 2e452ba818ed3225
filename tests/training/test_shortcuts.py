"""Shortcut baselines (what memory alone scores) and the caption-disjoint split, on hand-made records and on
PatchGastric's real captions (the figures docs/method.md quotes come from benchmarks/bench_shortcuts.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pathm3.training.data import BagRecord
from napari_pathm3.training.dedup import caption_disjoint_split
from napari_pathm3.training.protocol import PATCHGASTRIC_CLASSES, patchgastric_splits
from napari_pathm3.training.shortcuts import predicted_class_captions, shortcut_baselines

CLASSES = ("a", "b")


def _records(tmp_path, rows, prefix):
    out = []
    for i, (label, caption, shift) in enumerate(rows):
        key = f"{prefix}{i}"
        f = np.random.default_rng(i).normal(scale=0.01, size=(3, 4)).astype(np.float32)
        f[:, 0] += shift
        f[:, 1] += 1 - shift
        np.save(tmp_path / f"{key}.npy", f)
        out.append(BagRecord(key, label, caption))
    return out


def test_shortcuts_by_hand(tmp_path):
    train = _records(
        tmp_path,
        [
            ("a", "glands", 1.0),
            ("a", "glands", 1.0),
            ("a", "ducts", 1.0),
            ("b", "sheets", 0.0),
            ("b", None, 0.0),
        ],
        "tr",
    )
    test = _records(
        tmp_path, [("a", "glands", 1.0), ("b", "sheets", 0.0), ("b", "cords", 0.0), ("b", None, 0.0)], "te"
    )
    out = shortcut_baselines(train, test, CLASSES, features_dir=tmp_path)
    assert out["verbatim_overlap"] == pytest.approx(
        2 / 3
    )  # "cords" is new; the caption-less bag is not counted
    # lookup: glands -> a, sheets -> b, cords (new) and None -> the majority training class a
    assert out["caption_lookup_accuracy"] == pytest.approx(2 / 4)
    assert out["nn_label_accuracy"] == 1.0  # the features separate the classes
    assert out["true_class_caption_bleu_4"] == 0.0  # one-word captions have no 4-grams
    assert set(out) >= {"most_frequent_caption_bleu_4", "nn_caption_bleu_4", "nn_caption_cider_d"}
    assert predicted_class_captions(train, CLASSES, [1, 0]) == ["sheets", "glands"]
    assert "nn_label_accuracy" not in shortcut_baselines(train, test, CLASSES)  # no features, no neighbours


def test_patchgastric_shortcuts_are_large(captions_csv):
    """The issue's figures: ~3/4 of test captions occur verbatim in training; looking their label up scores
    about as well as the paper's text-only row (79.79 %); pasting captions beats the paper's prior art."""
    s = patchgastric_splits(captions_csv, seed=0)
    out = shortcut_baselines(s["train"], s["test"], PATCHGASTRIC_CLASSES)
    assert out["verbatim_overlap"] == pytest.approx(0.731, abs=1e-3)
    assert out["caption_lookup_accuracy"] == pytest.approx(0.769, abs=1e-3)
    assert out["most_frequent_caption_bleu_4"] == pytest.approx(0.385, abs=1e-3)  # paper's prior art: 0.342
    assert out["true_class_caption_bleu_4"] == pytest.approx(0.589, abs=1e-3)  # PathM3 in the paper: 0.520


@pytest.mark.parametrize("style", ["paper", "raw"])
def test_caption_disjoint_split(captions_csv, style):
    s = patchgastric_splits(captions_csv, seed=0, captions=style, split="caption_disjoint")
    caps = {k: {" ".join(r.caption.split()) for r in v if r.caption} for k, v in s.items()}
    assert (
        not caps["test"] & caps["train"]
        and not caps["val"] & caps["train"]
        and not caps["val"] & caps["test"]
    )
    assert sum(len(v) for v in s.values()) == 693 and len({r.key for v in s.values() for r in v}) == 693
    assert shortcut_baselines(s["train"], s["test"], PATCHGASTRIC_CLASSES)["verbatim_overlap"] == 0.0
    assert 110 <= len(s["train"]) <= 160  # near the 20 % target as far as the groups allow
    assert all(len({r.label for r in v}) == 3 for v in s.values())  # every class in every split
    again = patchgastric_splits(captions_csv, seed=0, captions=style, split="caption_disjoint")
    assert [r.key for r in again["test"]] == [r.key for r in s["test"]]  # deterministic per seed


def test_caption_disjoint_split_by_hand():
    labels = ["a"] * 6 + ["b"] * 4
    caps = ["x", "x", "x", "y", "z", None, "w", "w", "v", "u"]
    parts = caption_disjoint_split(labels, caps, fractions=(0.5, 0.5), seed=0)
    where = {i: k for k, p in enumerate(parts) for i in p}
    assert where[0] == where[1] == where[2] and where[6] == where[7]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="fractions"):
        caption_disjoint_split(labels, caps, fractions=(0.5, 0.6))
    with pytest.raises(ValueError, match="captions"):
        caption_disjoint_split(labels, caps[:3], fractions=(0.5, 0.5))
