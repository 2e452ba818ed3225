"""Baselines beside the model: ABMIL and the mean-pool linear model learn an easy task on tiny data;
caption facts (count words, caption class) and evaluate's ``baselines`` block are what they claim."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_pathm3.training.baselines import AbmilConfig, fit_abmil, fit_mean_pool_linear
from napari_pathm3.training.caption_facts import (
    CaptionClassifier,
    agreement,
    count_facts,
    count_word_accuracy,
)
from napari_pathm3.training.data import BagRecord
from napari_pathm3.training.evaluate_baselines import caption_baselines, format_table


def _witness_bags(n: int, seed: int, dim: int = 8) -> list[tuple[np.ndarray, int]]:
    """Class 1 bags hold one or two key instances (feature 0 = +4) among 10-20 noise instances: a MIL task
    a mean over the bag dilutes and attention pooling does not."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = i % 2
        f = rng.normal(size=(int(rng.integers(10, 21)), dim)).astype(np.float32)
        if y:
            f[: int(rng.integers(1, 3)), 0] += 4.0
        out.append((f[rng.permutation(len(f))], y))
    return out


def test_abmil_learns_an_easy_family_on_tiny_data_and_is_deterministic() -> None:
    train, val, test = _witness_bags(40, 0), _witness_bags(20, 1), _witness_bags(40, 2)
    cfg = AbmilConfig(seed=0, epochs=15, hidden=32, embed=16, attention=8, lr=3e-3)
    fit = fit_abmil(train, val, num_classes=2, config=cfg)
    acc = float((fit.predict([f for f, _ in test]) == np.asarray([y for _, y in test])).mean())
    assert acc >= 0.85, acc
    assert fit.val_accuracy >= 0.85 and fit.chosen.startswith("epoch ")
    again = fit_abmil(train, val, num_classes=2, config=cfg)
    assert again.val_accuracy == fit.val_accuracy and again.chosen == fit.chosen


def test_mean_pool_linear_learns_a_shifted_mean_and_picks_its_decay_on_validation() -> None:
    rng = np.random.default_rng(0)

    def bags(n: int) -> list[tuple[np.ndarray, int]]:
        return [(rng.normal(size=(6, 5)).astype(np.float32) + (i % 2), i % 2) for i in range(n)]

    fit = fit_mean_pool_linear(bags(30), bags(20), num_classes=2, weight_decays=(1e-3, 10.0))
    test = bags(40)
    assert (fit.predict([f for f, _ in test]) == np.asarray([y for _, y in test])).mean() >= 0.9
    assert fit.chosen.startswith("weight decay")


def test_abmil_refuses_empty_splits() -> None:
    with pytest.raises(ValueError, match="training and validation"):
        fit_abmil([], _witness_bags(2, 0), num_classes=2)


def test_count_facts_and_count_word_accuracy() -> None:
    assert count_facts("two mitotic figures and one necrotic focus . high grade .") == {
        "mitotic": 2,
        "necrotic": 1,
    }
    assert count_facts("3 mitoses seen") == {"mitose": 3}
    assert count_facts("high grade .") == {}
    refs = ["two mitotic figures . high .", "one mitotic figure . low .", "high grade ."]
    assert (
        count_word_accuracy(refs, ["two mitotic figures . high .", "three mitotic figures . low .", ""])
        == 0.5
    )
    assert count_word_accuracy(["high grade ."], ["low grade ."]) is None  # no quantities stated


def test_caption_classifier_reads_the_class_a_caption_states() -> None:
    caps = [
        "no atypia . benign .",
        "one mitotic figure . low grade .",
        "two mitotic figures and one necrotic focus . high grade .",
        "one mitotic figure and two necrotic foci . high grade .",
    ]
    clf = CaptionClassifier(caps * 3, [0, 1, 2, 2] * 3, 3)
    assert clf.predict("four mitotic figures . low grade .") == 1
    assert clf.predict("three necrotic foci and one mitotic figure . high grade .") == 2
    assert clf.predict("") is None and clf.predict("unseen words only") is None
    assert agreement(clf, ["no atypia . benign .", "one mitotic figure . low grade ."], [0, 2]) == 0.5


def _rows(captions: list[str], labels: list[int], predicted: list[int], refs: list[str]) -> list[dict]:
    return [
        {"label": y, "probabilities": np.eye(3)[p].tolist(), "reference": r, "caption": c}
        for c, y, p, r in zip(captions, labels, predicted, refs, strict=True)
    ]


def test_caption_baselines_block_scores_each_baseline_on_the_same_bags(tmp_path) -> None:
    train = [
        BagRecord("t0", "a", "no atypia . benign .", "train"),
        BagRecord("t1", "a", "no atypia . benign .", "train"),
        BagRecord("t2", "b", "one mitotic figure . low grade .", "train"),
        BagRecord("t3", "c", "two mitotic figures . high grade .", "train"),
    ]
    for i, r in enumerate(train):
        np.save(tmp_path / f"{r.key}.npy", np.full((3, 4), float(i + 1), np.float32) * np.eye(4)[i % 4])
    refs = [
        "no atypia . benign .",
        "three mitotic figures . high grade .",
        "one mitotic figure . low grade .",
    ]
    for i in range(3):  # each evaluated bag's features look like training bag i (retrieval finds it)
        np.save(tmp_path / f"e{i}.npy", np.eye(4, dtype=np.float32)[i][None].repeat(2, 0))
    preds = _rows(refs, [0, 2, 1], [0, 2, 1], refs)  # a perfect model
    block = caption_baselines(
        preds, train, ["a", "b", "c"], eval_keys=["e0", "e1", "e2"], features_dir=tmp_path
    )
    assert block["caption_class_agreement"] == 1.0 and block["count_word_accuracy"] == 1.0
    assert block["constant"]["caption"] == "no atypia . benign ."
    assert block["constant"]["caption_class_agreement"] == pytest.approx(1 / 3)
    assert block["stock_predicted_class"]["count_word_accuracy"] == pytest.approx(2 / 3)  # "two" for "three"
    assert block["stock_true_class"]["bleu_4"] == block["stock_predicted_class"]["bleu_4"]
    assert block["retrieval"]["bleu_4"] < 1.0
    table = format_table({"bleu_4": 1.0, "baselines": block})
    assert "stock, predicted class" in table and "nearest training caption" in table
    assert caption_baselines(preds, [BagRecord("t0", "a", None, "train")], ["a", "b", "c"])["skipped"]


def test_evaluate_cli_puts_the_baselines_beside_the_model(tmp_path, capsys) -> None:
    import torch

    from napari_pathm3.cli import main
    from napari_pathm3.config import PathM3Config
    from napari_pathm3.model import build_model

    from .conftest import CAPTIONS, make_bags

    torch.manual_seed(0)
    build_model(PathM3Config.tiny(feature_dim=16, mode="image"), device="cpu").save_pretrained(
        tmp_path / "ckpt"
    )
    feats = tmp_path / "feats"
    feats.mkdir()
    rows = ["slide,label,caption,split"]
    for i, bag in enumerate(make_bags(8, seed=3)):
        np.save(feats / f"{bag.slide_id}.npy", bag.features)
        rows.append(f"{bag.slide_id},{'ab'[bag.label]},{CAPTIONS[bag.label]},{'test' if i >= 4 else 'train'}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    args = [
        "evaluate",
        str(tmp_path / "ckpt"),
        "--manifest",
        str(tmp_path / "m.csv"),
        "--features",
        str(feats),
    ]
    assert main([*args, "--split", "test", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    m = json.loads(out)
    base = m["baselines"]
    assert set(base) >= {
        "constant",
        "stock_predicted_class",
        "stock_true_class",
        "retrieval",
        "caption_class_agreement",
    }
    assert base["stock_true_class"]["bleu_4"] == pytest.approx(
        1.0
    )  # one caption per class: the oracle is exact
    assert "predictions" not in m and "stock, true class" in err
    assert main([*args, "--split", "test", "--device", "cpu", "--no-generate"]) == 0
    assert "skipped" in json.loads(capsys.readouterr().out)["baselines"]
