"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_pathm3.training import metrics as M

pytest.importorskip("nltk")

# PathM3 paper, supplementary Table 5: (reference, predicted caption, printed BLEU@4). The 3-decimal
# values; the paper prints 0.34 / 0.58 / 0.85 (and 0 / 1 for the outer rows).
TABLE5 = [
    (
        "highly columnar epithelium with disordered nuclear localization proliferates showing fusion ductal "
        "construction",
        "in the superficial epithelium, tumor tissue that invades by forming medium-sized to small, irregular "
        "ducts is observed",
        0.0,
    ),
    (
        "the superficial epithelium shows a large sheet-like shape, and some tumor tissue infiltrates with small "
        "irregular ducts",
        "the superficial epithelium has a large amount of tumor tissue that infiltrates with small irregular ducts",
        0.342,
    ),
    (
        "in the superficial epithelium, tumor tissue that invades by forming medium-sized to small, irregular "
        "ducts is observed. tumor cells are columnar or cuboidal in shape",
        "in the superficial epithelium, tumor tissue that invades by forming medium-sized to small, irregular "
        "ducts is observed",
        0.584,
    ),
    (
        "tumor tissue consisting of cord-like or small, irregular glandular ducts fused and infiltrated is "
        "observed in the superficial epithelium",
        "tumor tissue consisting of cord-like or small, irregular ducts fused and infiltrated is observed in the "
        "superficial epithelium",
        0.852,
    ),
    (
        "from the superficial epithelium to the muscularis mucosae, tumor tissue consisting of medium-sized and "
        "irregular glandular ducts infiltrating is observed",
        "from the superficial epithelium to the muscularis mucosae, tumor tissue consisting of medium-sized and "
        "irregular glandular ducts infiltrating is observed",
        1.0,
    ),
]


def test_tokenize_paper_is_lowercase_whitespace():
    assert M.tokenize("Small, irregular DUCTS are seen .") == [
        "small,",
        "irregular",
        "ducts",
        "are",
        "seen",
        ".",
    ]
    assert M.tokenize("Well-differentiated, TUBULAR adenocarcinoma.", "words") == [
        "well",
        "differentiated",
        "tubular",
        "adenocarcinoma",
    ]
    with pytest.raises(ValueError, match="tokenizer"):
        M.tokenize("x", "ptb")


@pytest.mark.parametrize(("ref", "hyp", "printed"), TABLE5)
def test_table5_per_example_bleu4_reproduced(ref, hyp, printed):
    assert round(M.sentence_bleu4(ref, hyp), 3) == printed


def test_old_word_tokenizer_does_not_reproduce_table5():
    got = [round(M.sentence_bleu4(r, h, tokenizer="words"), 3) for r, h, _ in TABLE5[1:4]]
    assert got == [0.321, 0.641, 0.861]  # the figures for the project's former tokenisation


def test_classification_metrics_by_hand():
    y = [0, 1, 2, 2]
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.5, 0.3, 0.2]])
    m = M.classification_metrics(y, probs)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    # F1: class 0: p=1/2, r=1 -> 2/3; class 1: 1; class 2: p=1, r=1/2 -> 2/3
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert m["auc"] == pytest.approx(1.0)


def test_auc_with_ties_and_absent_class():
    # positives 0.8, 0.5; negatives 0.5, 0.2 -> pairs: (0.8>0.5, 0.8>0.2, 0.5=0.5 -> 1/2, 0.5>0.2) = 3.5/4
    assert M._binary_auc(np.array([1, 1, 0, 0], bool), np.array([0.8, 0.5, 0.5, 0.2])) == pytest.approx(0.875)
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    assert M.roc_auc_ovr([0, 1], probs) == pytest.approx(1.0)  # class 2 absent: skipped, not NaN


def test_bleu_matches_hand_computation():
    b = M.bleu(["the cat is on the mat"], ["the cat sat on the mat"])
    assert b["bleu_1"] == pytest.approx(5 / 6)
    assert b["bleu_2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert b["bleu_3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert b["bleu_4"] == pytest.approx(0.0, abs=1e-12)
    assert M.bleu([["a b c d e", "x"]], ["a b c d e"])["bleu_4"] == pytest.approx(1.0)


def test_meteor_nltk_exact_match_variant():
    # 5 matches, P = R = 5/6, Fmean = 5/6; chunks "the cat" + "on the mat" = 2 -> penalty 0.5 * (2/5)^3
    expected = 5 / 6 * (1 - 0.5 * 0.4**3)
    assert M.meteor_nltk(["the cat is on the mat"], ["the cat sat on the mat"]) == pytest.approx(expected)
    # no stemming / synonyms: "cats" does not match "cat"
    assert M.meteor_nltk(["cat"], ["cats"]) == 0.0
    assert not hasattr(M, "meteor")  # named for what it is


def test_rouge_l_coco_beta():
    # LCS("the cat is on the mat", "the cat sat on the mat") = 5 -> P = R = 5/6 -> F = 5/6 for any beta
    assert M.rouge_l(["the cat is on the mat"], ["the cat sat on the mat"]) == pytest.approx(5 / 6)
    assert M.rouge_l([["x y", "a b"]], ["a b"]) == pytest.approx(1.0)  # max over references
    # P = 2/2, R = 2/4: coco-caption's F with beta 1.2 = 2.44 * 0.5 / (0.5 + 1.44), not F1 = 2/3
    assert M.ROUGE_BETA == 1.2
    assert M.rouge_l(["a b c d"], ["a b"]) == pytest.approx(2.44 * 0.5 / 1.94)
    assert M.rouge_l(["a b c d"], ["a b"], beta=1.0) == pytest.approx(2 / 3)
    # P and R are maxed over references separately (coco): P = 1 from the short one, R = 1 from the long one
    assert M.rouge_l([["a b c d", "q"]], ["a b c d e f g h"]) == pytest.approx(
        2.44 * 0.5 * 1.0 / (1.0 + 1.44 * 0.5)
    )
    assert M.rouge_l(["a b"], ["x y"]) == 0.0


def test_rouge_l_lcs_agrees_with_rouge_score_at_beta_1():
    rs = pytest.importorskip("rouge_score.rouge_scorer")

    class _Ws:
        @staticmethod
        def tokenize(text):
            return M.tokenize(text)

    scorer = rs.RougeScorer(["rougeL"], tokenizer=_Ws())
    for ref, hyp, _ in TABLE5:
        want = scorer.score(ref, hyp)["rougeL"].fmeasure
        assert M.rouge_l([ref], [hyp], beta=1.0) == pytest.approx(want)


def test_cider_d_by_hand():
    refs = ["a b c d e", "f g h i j"]
    assert M.cider_d(refs, refs) == pytest.approx(10.0)
    # first hypothesis: n-gram cosines 4/5, 3/4, 2/3, 1/2 (all weights log 2), same length -> no penalty
    first = 10 * (0.8 + 0.75 + 2 / 3 + 0.5) / 4
    assert M.cider_d(refs, ["a b c d x", "f g h i j"]) == pytest.approx((first + 10) / 2)


def test_caption_metrics_keys_and_mean_std():
    m = M.caption_metrics(["well differentiated adenocarcinoma"], ["well differentiated adenocarcinoma"])
    assert set(m) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor_nltk", "rouge_l", "cider_d"}
    assert tuple(m) == M.CAPTION_METRIC_KEYS  # no SPICE: it is not computed
    ms = M.mean_std([{"accuracy": 0.5, "cm": [[1]]}, {"accuracy": 0.7, "cm": [[1]]}])
    assert set(ms) == {"accuracy"}
    assert ms["accuracy"][0] == pytest.approx(0.6)
    assert ms["accuracy"][1] == pytest.approx(np.std([0.5, 0.7], ddof=1))
