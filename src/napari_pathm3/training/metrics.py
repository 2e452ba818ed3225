"""Classification and caption metrics, one function each (numpy; nltk for BLEU and METEOR).

Exact variants, so numbers can be compared with other work:

* Tokenisation (:func:`tokenize`), one scheme for every caption metric:

  - ``"paper"`` (default): lower-case, split on whitespace. This is how the paper's per-example BLEU@4 values
    (Table 5: 0.342, 0.584, 0.852) come out: punctuation is a token of its own where the text spaces it
    (``"ducts ."`` -> ``ducts``, ``.``) and stays attached where it does not (``"epithelium,"`` is one token,
    as in the paper's reference captions).
  - ``"words"``: lower-case runs of ``[a-z0-9]`` (punctuation and hyphens dropped; this project's old default).
* BLEU-1..4: ``nltk.translate.bleu_score.corpus_bleu`` with uniform weights, no smoothing (equal to
  pycocoevalcap's corpus BLEU on the same tokens); :func:`sentence_bleu4` scores one caption.
* ``meteor_nltk``: nltk's ``single_meteor_score`` (α=0.9, β=3, γ=0.5) restricted to the **exact-match**
  stage — WordNet synonyms need a corpus download, so no stem or synonym matches; max over references, mean
  over the corpus. It is not the Java METEOR 1.5 of coco-caption / the paper and reads lower.
* ROUGE-L: coco-caption's definition (pycocoevalcap ``Rouge``): LCS precision and recall, each the max over
  references, F-measure with β=1.2; corpus mean.
* CIDEr-D (``cider_d``): coco-caption's ``CiderD`` (n=1..4, σ=6, clipped tf-idf, ×10, document frequencies over
  the reference corpus being scored), re-implemented here in pure python.
* SPICE is **not** computed (it needs Java and the Stanford CoreNLP scene-graph parser).
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


# --------------------------------------------------------------------------------------------- classification


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """``(C, C)`` counts; row = true class, column = predicted class."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of correct predictions."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    return float((t == p).mean()) if t.size else float("nan")


def balanced_accuracy(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float:
    """Mean per-class recall over the classes present in ``y_true``."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(cm)[present] / support[present]).mean())


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float:
    """Unweighted mean of per-class F1 over classes present in ``y_true`` or ``y_pred`` (an absent class's
    F1 is 0 when it is predicted, sklearn's ``zero_division=0``)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)  # 2tp + fp + fn
    used = denom > 0
    if not used.any():
        return float("nan")
    return float((2 * tp[used] / denom[used]).mean())


def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(s.size, dtype=np.float64)
    i = 0
    while i < s.size:  # average rank over runs of tied scores
        j = i
        while j + 1 < s.size and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty_like(ranks)
    r[order] = ranks
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc_ovr(y_true: Sequence[int], probabilities: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC over the classes present in ``y_true`` (and absent from none of the rest);
    ``probabilities`` is ``(N, C)``. NaN when fewer than two classes occur."""
    t = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    aucs = [_binary_auc(t == c, probs[:, c]) for c in range(probs.shape[1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def classification_metrics(
    y_true: Sequence[int], probabilities: np.ndarray, *, num_classes: int | None = None
) -> dict[str, object]:
    """Accuracy, balanced accuracy, macro-F1, OvR AUC and the confusion matrix (as nested lists) for
    ``(N, C)`` class probabilities; the prediction is the arg-max."""
    probs = np.asarray(probabilities, dtype=np.float64)
    c = num_classes or probs.shape[1]
    pred: list[int] = probs.argmax(1).tolist() if probs.size else []
    return {
        "accuracy": accuracy(y_true, pred),
        "balanced_accuracy": balanced_accuracy(y_true, pred, c),
        "macro_f1": macro_f1(y_true, pred, c),
        "auc": roc_auc_ovr(y_true, probs),
        "confusion_matrix": confusion_matrix(y_true, pred, c).tolist(),
    }


# --------------------------------------------------------------------------------------------- captions

References = Sequence[str | Sequence[str]]
TOKENIZERS = ("paper", "words")
DEFAULT_TOKENIZER = "paper"
ROUGE_BETA = 1.2  # coco-caption's ROUGE-L
CAPTION_METRIC_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor_nltk", "rouge_l", "cider_d")


def tokenize(text: str, tokenizer: str = DEFAULT_TOKENIZER) -> list[str]:
    """Caption tokens: ``"paper"`` = lower-case whitespace split; ``"words"`` = lower-case ``[a-z0-9]+`` runs."""
    if tokenizer == "paper":
        return text.lower().split()
    if tokenizer == "words":
        return _WORD.findall(text.lower())
    raise ValueError(f"tokenizer: one of {', '.join(TOKENIZERS)}, got {tokenizer!r}")


def _refs(references: References, n: int, tokenizer: str) -> list[list[list[str]]]:
    if len(references) != n:
        raise ValueError(f"references: {len(references)} entries for {n} hypotheses")
    out = []
    for r in references:
        group = [r] if isinstance(r, str) else list(r)
        if not group:
            raise ValueError("references: every hypothesis needs at least one reference")
        out.append([tokenize(x, tokenizer) for x in group])
    return out


def _clean_bleu(s: float) -> float:
    return float(s) if s > 1e-30 else 0.0  # nltk returns ~1e-78 instead of 0 when an order has no match


def bleu(
    references: References, hypotheses: Sequence[str], *, tokenizer: str = DEFAULT_TOKENIZER
) -> dict[str, float]:
    """Corpus BLEU-1..4 (nltk ``corpus_bleu``, uniform n-gram weights, no smoothing)."""
    from nltk.translate.bleu_score import corpus_bleu

    refs = _refs(references, len(hypotheses), tokenizer)
    hyps = [tokenize(h, tokenizer) for h in hypotheses]
    weights = [(1.0,), (0.5, 0.5), (1 / 3, 1 / 3, 1 / 3), (0.25, 0.25, 0.25, 0.25)]
    with warnings.catch_warnings():  # nltk warns on every zero n-gram count; 0 is the documented score
        warnings.simplefilter("ignore", UserWarning)
        scores = corpus_bleu(refs, hyps, weights=weights)
    return {f"bleu_{i + 1}": _clean_bleu(s) for i, s in enumerate(scores)}


def sentence_bleu4(
    reference: str | Sequence[str], hypothesis: str, *, tokenizer: str = DEFAULT_TOKENIZER
) -> float:
    """BLEU@4 of one caption (nltk ``sentence_bleu``, no smoothing): the per-example score of Table 5."""
    from nltk.translate.bleu_score import sentence_bleu

    refs = _refs([reference], 1, tokenizer)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _clean_bleu(sentence_bleu(refs, tokenize(hypothesis, tokenizer)))


class _NoSynonyms:
    """Stand-in WordNet for nltk's METEOR: no synsets, so only exact matches count (no download)."""

    @staticmethod
    def synsets(_word: str) -> list:
        return []


class _NoStem:
    @staticmethod
    def stem(word: str) -> str:
        return word


def meteor_nltk(
    references: References, hypotheses: Sequence[str], *, tokenizer: str = DEFAULT_TOKENIZER
) -> float:
    """nltk's METEOR restricted to exact matches (α=0.9, β=3, γ=0.5; no stems, no WordNet synonyms), max over
    references, mean over the corpus. Not Java METEOR 1.5 (the paper's)."""
    from nltk.translate.meteor_score import single_meteor_score

    refs = _refs(references, len(hypotheses), tokenizer)
    scores = []
    for group, hyp in zip(refs, hypotheses, strict=True):
        h = tokenize(hyp, tokenizer)
        scores.append(max(single_meteor_score(r, h, stemmer=_NoStem(), wordnet=_NoSynonyms()) for r in group))
    return float(np.mean(scores)) if scores else float("nan")


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(
    references: References,
    hypotheses: Sequence[str],
    *,
    tokenizer: str = DEFAULT_TOKENIZER,
    beta: float = ROUGE_BETA,
) -> float:
    """ROUGE-L as coco-caption computes it: per hypothesis, LCS precision and recall (each the max over its
    references), ``F = (1+β²)PR / (R + β²P)`` with β=1.2 (0 when P or R is 0); mean over the corpus."""
    refs = _refs(references, len(hypotheses), tokenizer)
    scores = []
    for group, hyp in zip(refs, hypotheses, strict=True):
        h = tokenize(hyp, tokenizer)
        lcs = [_lcs(r, h) for r in group]
        p = max((c / len(h) if h else 0.0) for c in lcs)
        r = max((c / len(ref) if ref else 0.0) for c, ref in zip(lcs, group, strict=True))
        scores.append((1 + beta**2) * p * r / (r + beta**2 * p) if p > 0 and r > 0 else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def _ngrams(tokens: list[str], n: int = 4) -> Counter:
    return Counter(tuple(tokens[i : i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


def cider_d(
    references: References,
    hypotheses: Sequence[str],
    *,
    n: int = 4,
    sigma: float = 6.0,
    tokenizer: str = DEFAULT_TOKENIZER,
) -> float:
    """CIDEr-D (Vedantam et al. 2015, coco-caption's ``CiderD``): mean over n=1..n of the clipped tf-idf
    cosine between hypothesis and each reference, times a Gaussian length penalty (σ), averaged over
    references, ×10; document frequencies come from the references of this corpus."""
    refs = _refs(references, len(hypotheses), tokenizer)
    crefs = [[_ngrams(r, n) for r in group] for group in refs]
    ctest = [_ngrams(tokenize(h, tokenizer), n) for h in hypotheses]
    df: Counter = Counter()
    for group in crefs:
        df.update({g for c in group for g in c})
    log_n = math.log(float(len(crefs)))

    def vec(counts: Counter) -> tuple[list[dict], np.ndarray, int]:
        v: list[dict] = [{} for _ in range(n)]
        norm = np.zeros(n)
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            w = float(tf) * (log_n - math.log(max(1.0, df[gram])))
            v[k][gram] = w
            norm[k] += w * w
            if k == 1:  # coco-caption counts the length in bigrams; kept for comparable numbers
                length += tf
        return v, np.sqrt(norm), length

    scores = []
    for test, group in zip(ctest, crefs, strict=True):
        vh, nh, lh = vec(test)
        total = np.zeros(n)
        for ref in group:
            vr, nr, lr = vec(ref)
            val = np.zeros(n)
            for k in range(n):
                for gram, w in vh[k].items():
                    r = vr[k].get(gram, 0.0)
                    val[k] += min(w, r) * r  # CIDEr-D clipping
                if nh[k] != 0 and nr[k] != 0:
                    val[k] /= nh[k] * nr[k]
                val[k] *= math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
            total += val
        scores.append(float(total.mean()) / len(group) * 10.0)
    return float(np.mean(scores)) if scores else float("nan")


def caption_metrics(
    references: References, hypotheses: Sequence[str], *, tokenizer: str = DEFAULT_TOKENIZER
) -> dict[str, float]:
    """BLEU-1..4, ``meteor_nltk`` (exact match), ROUGE-L (β=1.2) and CIDEr-D of generated captions against
    references, all on the same tokens (:func:`tokenize`). No SPICE."""
    out = bleu(references, hypotheses, tokenizer=tokenizer)
    out["meteor_nltk"] = meteor_nltk(references, hypotheses, tokenizer=tokenizer)
    out["rouge_l"] = rouge_l(references, hypotheses, tokenizer=tokenizer)
    out["cider_d"] = cider_d(references, hypotheses, tokenizer=tokenizer)
    return out


# --------------------------------------------------------------------------------------------- aggregation


def mean_std(runs: Sequence[Mapping[str, object]], *, ddof: int = 1) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation (``ddof=1``: sample std over seeds) of every scalar metric shared by
    all runs; non-numeric entries (e.g. confusion matrices) are skipped."""
    if not runs:
        return {}
    keys = [k for k in runs[0] if all(isinstance(r.get(k), (int, float)) for r in runs)]
    out = {}
    for k in keys:
        v = np.array([float(r[k]) for r in runs])  # type: ignore[arg-type]
        out[k] = (float(v.mean()), float(v.std(ddof=ddof)) if v.size > ddof else 0.0)
    return out
