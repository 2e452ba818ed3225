"""What ``evaluate`` puts beside the model: caption baselines built from the training bags of the same
manifest, scored on the same evaluated bags, and what the model's captions state.

The ``baselines`` block of the evaluate JSON (see :func:`caption_baselines`):

* ``constant``: every bag gets the most frequent training caption;
* ``stock_predicted_class`` / ``stock_true_class``: the most frequent training caption of the class the model
  predicted / of the bag's true class (an oracle);
* ``retrieval``: the caption of the nearest training bag by cosine similarity of mean-pooled features;
* for the model: ``caption_class_agreement`` (share of bags whose caption says the predicted class, read by a
  naive-Bayes caption classifier fitted on the training captions) and ``count_word_accuracy`` where the
  references state quantities (:mod:`.caption_facts`).

Each baseline has ``bleu_4`` (the model's tokenisation), ``count_word_accuracy`` and ``caption_class_agreement``
(its caption against the model's predicted class). Only training rows are read to build a baseline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._types import PathLike
from .caption_facts import CaptionClassifier, agreement, count_word_accuracy
from .data import BagRecord, load_features, resolve_features

__all__ = ["caption_baselines", "format_table"]


def _norm(text: str | None) -> str | None:
    out = " ".join(str(text).split()) if text is not None else ""
    return out or None


def _most_common(items: Sequence[str]) -> str:
    counts = Counter(items)
    best = max(counts.values())
    return next(x for x in items if counts[x] == best)  # ties: first seen (deterministic)


def _mean_pooled(keys: Sequence[str], features_dir: PathLike | None) -> np.ndarray:
    rows = [load_features(resolve_features(k, features_dir))[0].astype(np.float64).mean(0) for k in keys]
    x = np.stack(rows)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _scores(refs: list[str], hyps: list[str | None], predicted: list[int] | None, clf: CaptionClassifier,
            tokenizer: str) -> dict[str, Any]:  # fmt: skip
    from .metrics import bleu

    hyps_s = [h or "" for h in hyps]
    out: dict[str, Any] = {"bleu_4": float(bleu(refs, hyps_s, tokenizer=tokenizer)["bleu_4"])}
    out["count_word_accuracy"] = count_word_accuracy(refs, hyps_s)
    if predicted is not None:
        out["caption_class_agreement"] = agreement(clf, hyps_s, predicted)
    return out


def caption_baselines(
    predictions: Sequence[dict[str, Any]],
    train: Sequence[BagRecord],
    class_names: Sequence[str],
    *,
    eval_keys: Sequence[str] | None = None,
    features_dir: PathLike | None = None,
    tokenizer: str = "paper",
) -> dict[str, Any]:
    """The ``baselines`` block for evaluate's per-bag ``predictions`` (rows with ``label``,
    ``probabilities``, ``reference``, ``caption``), built from the ``train`` records. ``eval_keys`` (feature
    keys of the evaluated bags, in prediction order) and ``features_dir`` enable the retrieval baseline."""
    names = list(class_names)
    normed = [(_norm(r.caption), names.index(r.label) if r.label in names else None) for r in train]
    train_caps = [(c, y) for c, y in normed if c]
    if not train_caps:
        return {"skipped": "no captioned training bags in the manifest to build caption baselines from"}
    rows = [(i, p) for i, p in enumerate(predictions) if _norm(p.get("reference"))]
    if not rows:
        return {"skipped": "no evaluated bag has a reference caption"}
    refs = [str(_norm(p["reference"])) for _, p in rows]
    probs = [p.get("probabilities") for _, p in rows]
    predicted = (
        [int(np.argmax(q)) for q in probs if q is not None] if all(q is not None for q in probs) else None
    )
    clf = CaptionClassifier(
        [c for c, _ in train_caps], [y if y is not None else -1 for _, y in train_caps], len(names)
    )
    by_class: dict[int, list[str]] = {}
    for c, y in train_caps:
        if y is not None:
            by_class.setdefault(y, []).append(c)
    stock = {y: _most_common(cs) for y, cs in by_class.items()}
    constant = _most_common([c for c, _ in train_caps])
    out: dict[str, Any] = {"built_from": f"{len(train_caps)} captioned training bags of the manifest"}
    model_caps = [p.get("caption") for _, p in rows]
    if all(c is not None for c in model_caps):
        out["caption_class_agreement"] = (
            agreement(clf, model_caps, predicted) if predicted is not None else None
        )
        out["count_word_accuracy"] = count_word_accuracy(refs, model_caps)
    out["constant"] = {
        "caption": constant,
        **_scores(refs, [constant] * len(refs), predicted, clf, tokenizer),
    }
    if predicted is not None:
        hyp = [stock.get(y) for y in predicted]
        out["stock_predicted_class"] = _scores(refs, hyp, predicted, clf, tokenizer)
    truth = [int(p.get("label", -1)) for _, p in rows]
    if all(y >= 0 for y in truth):
        out["stock_true_class"] = _scores(refs, [stock.get(y) for y in truth], predicted, clf, tokenizer)
    if eval_keys is not None:
        keys = [eval_keys[i] for i, _ in rows]
        train_keys = [r.key for r in train if _norm(r.caption)]
        sim = _mean_pooled(keys, features_dir) @ _mean_pooled(train_keys, features_dir).T
        capt = [_norm(r.caption) for r in train if _norm(r.caption)]
        out["retrieval"] = _scores(refs, [capt[j] for j in sim.argmax(1)], predicted, clf, tokenizer)
    return out


def format_table(metrics: dict[str, Any]) -> str:
    """Model and baselines side by side (BLEU-4, count words right, caption–class agreement)."""
    base = metrics.get("baselines") or {}
    if "skipped" in base or not base:
        return f"baselines: {base.get('skipped', 'none')}"

    def f(x: Any) -> str:
        return "-" if x is None else f"{float(x):.3f}"

    lines = [f"{'':<26}{'BLEU-4':>8}{'count words':>13}{'agreement':>11}"]
    lines.append(
        f"{'model':<26}{f(metrics.get('bleu_4')):>8}{f(base.get('count_word_accuracy')):>13}"
        f"{f(base.get('caption_class_agreement')):>11}"
    )
    for key, title in (("constant", "constant caption"), ("stock_predicted_class", "stock, predicted class"),
                       ("stock_true_class", "stock, true class"), ("retrieval", "nearest training caption")):  # fmt: skip
        if key in base:
            b = base[key]
            lines.append(
                f"{title:<26}{f(b.get('bleu_4')):>8}{f(b.get('count_word_accuracy')):>13}"
                f"{f(b.get('caption_class_agreement')):>11}"
            )
    return "\n".join(lines)
