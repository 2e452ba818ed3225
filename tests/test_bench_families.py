"""The task-family generators of benchmarks/_families.py: deterministic, the right counts and splits, captions
that state what the family says they state, and bags the real reader takes."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
from _families import COUNT_WORDS, FAMILIES, make_cohort, write_cohort  # noqa: E402

sys.path.remove(str(BENCH))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_cohort_is_deterministic_balanced_and_split_20_40_40(name: str) -> None:
    fam = FAMILIES[name]
    bags = 30 * len(fam.classes)
    a, b = make_cohort(fam, 3, bags), make_cohort(fam, 3, bags)
    assert {s: len(v) for s, v in a.items()} == {
        "train": bags // 5,
        "val": 2 * bags // 5,
        "test": 2 * bags // 5,
    }
    for split in a:
        counts = Counter(bag.label for _, bag in a[split])
        assert len(set(counts.values())) == 1 and set(counts) == set(fam.classes)  # stratified
        for (fa, ba), (fb, bb) in zip(a[split], b[split], strict=True):
            assert np.array_equal(fa, fb) and ba.caption == bb.caption
    other = make_cohort(fam, 4, bags)
    assert not np.array_equal(a["train"][0][0], other["train"][0][0])  # seeds differ
    feats, bag = a["train"][0]
    assert feats.shape == (len(bag.kinds), fam.width) and feats.dtype == np.float32
    assert bag.coords.shape == (len(bag.kinds), 2)


def _count(caption: str) -> int:
    word = caption.split()[0]
    return COUNT_WORDS.index(word)


def test_counting_family_counts_are_what_the_caption_and_class_say() -> None:
    cohort = make_cohort(FAMILIES["counting"], 0, 200)
    sizes = []
    for _, bag in cohort["train"] + cohort["test"]:
        n = int((bag.kinds == 0).sum())
        assert _count(bag.caption) == n
        assert bag.label == ("high" if n >= 3 else "low")
        sizes.append(len(bag.kinds))
    assert min(sizes) < 40 and max(sizes) > 100  # bag size varies: the share does not give the count


def test_presence_family_names_each_kind_present_with_its_count() -> None:
    for _, bag in make_cohort(FAMILIES["presence"], 1, 90)["train"]:
        n0, n1 = int((bag.kinds == 0).sum()), int((bag.kinds == 1).sum())
        assert bag.label == {0: "benign", 1: "low grade", 2: "high grade"}[(n0 > 0) + (n1 > 0)]
        assert bag.caption.endswith(f". {bag.label} .")
        if n0:
            assert re.search(rf"\b{COUNT_WORDS[n0]} mitotic figure", bag.caption)
        if n1:
            assert re.search(rf"\b{COUNT_WORDS[n1]} necrotic", bag.caption)


def test_spatial_family_differs_only_in_where_the_key_patches_lie() -> None:
    for _, bag in make_cohort(FAMILIES["spatial"], 0, 40)["train"]:
        key = bag.coords[bag.kinds == 0]
        gaps = np.abs(key[:, None] - key[None]).max(-1) + np.eye(len(key), dtype=int) * 99
        if bag.label == "scattered":
            assert gaps.min() > 1  # no two key patches touch
        else:
            assert np.abs(key - key.mean(0)).max() <= 3  # one compact nest


def test_written_bags_are_read_by_the_manifest_reader(tmp_path: Path) -> None:
    from napari_pathm3.training.data import BagDataset, read_manifest

    fam = FAMILIES["distractors"]
    cohort = make_cohort(fam, 0, 10, width=1024)
    manifest = write_cohort(cohort, tmp_path)
    records = read_manifest(manifest)
    assert Counter(r.split for r in records) == {"train": 2, "val": 4, "test": 4}
    ds = BagDataset(records, list(fam.classes), tmp_path)
    first = ds[0]
    assert first.features.shape[1] == 1024 and first.caption and first.coords is not None


def _run(seed: int, acc: float, abmil: float, bleu: float, stock: float, agree: float, count: float) -> dict:
    return {
        "seed": seed,
        "model": {
            "accuracy": acc,
            "bleu_4": bleu,
            "caption_class_agreement": agree,
            "count_word_accuracy": count,
            "train_seconds": 1.0,
        },  # fmt: skip
        "baselines": {
            "abmil_accuracy": abmil,
            "abmil_chosen": "epoch 1",
            "mean_pool_linear_accuracy": 0.5,
            "stock_predicted_class_bleu_4": stock,
            "constant_bleu_4": 0.1,
        },  # fmt: skip
    }


def test_acceptance_checks_follow_the_issue_bar() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import bench_families as bf
    finally:
        sys.path.remove(str(BENCH))
    fam = FAMILIES["counting"]
    good = bf.summarise(
        fam, [_run(0, 0.9, 0.8, 0.7, 0.6, 0.95, 0.6), _run(1, 0.85, 0.8, 0.7, 0.66, 0.92, 0.55)]
    )
    assert all(good["checks"].values()), good["checks"]
    # one seed below ABMIL - 0.02, one seed's BLEU-4 within 0.03 of the stock caption, counts at chance
    bad = bf.summarise(
        fam, [_run(0, 0.99, 0.8, 0.7, 0.6, 0.95, 0.3), _run(1, 0.77, 0.8, 0.62, 0.6, 0.95, 0.2)]
    )
    assert bad["checks"] == {
        "mean_accuracy_vs_abmil": True,
        "every_seed_accuracy_vs_abmil": False,
        "every_seed_bleu4_vs_stock": False,
        "caption_class_agreement": True,
        "count_words": False,
    }
    assert bad["stats"]["model_accuracy"]["min"] == pytest.approx(0.77)
    record = {"families": [bad], "bags": 10, "split": "20/40/40", "seeds": [0, 1]}
    rows = bf.checks(record)
    assert ("counting: count_words", "0.250", "**not met**") in rows
    assert "| counting | " in bf.to_markdown({**record, "families": [{**bad, "width": 128}]})


def test_cached_seeds_are_summarised_and_spliced_into_the_page(tmp_path: Path, capsys) -> None:
    import json

    sys.path.insert(0, str(BENCH))
    try:
        import bench_families as bf
    finally:
        sys.path.remove(str(BENCH))
    cache = tmp_path / "results"
    cache.mkdir()
    for seed in (0, 1):
        res = _run(seed, 0.9, 0.8, 0.7, 0.6, 0.95, 0.6)
        (cache / f"counting_w128_b10_s{seed}.json").write_text(json.dumps(res))
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\ntext\n\n## Notes\n\n- n\n")
    args = [
        "--only-cached",
        "--results",
        str(cache),
        "--families",
        "counting",
        "abundance",
        "--seeds",
        "0",
        "1",
        "2",
    ]
    rec = bf.main([*args, "--splice", str(doc), "--note", "load 12"])  # each family: its cached size
    assert [f["family"] for f in rec["families"]] == [
        "counting"
    ]  # abundance: nothing cached, nothing trained
    fam = rec["families"][0]
    assert [r["seed"] for r in fam["runs"]] == [0, 1] and fam["bags"] == 10 and rec["notes"] == ["load 12"]
    page = doc.read_text()
    assert page.index("## Other") < page.index(bf.START) < page.index("## Notes")
    bf.splice(rec, doc)  # a second splice replaces the section, it does not add one
    assert (
        doc.read_text().count(bf.START) == 1 and "| counting: count_words | 0.600 | met |" in doc.read_text()
    )
