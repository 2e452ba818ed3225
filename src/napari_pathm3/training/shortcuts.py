"""Shortcut baselines: what a model could score on a split by memory alone, measured beside the model.

PatchGastric's captions repeat: most test captions occur word for word among the training captions, so looking
up a caption's label, or pasting the most frequent training caption (of a class), scores close to the paper's
figures without looking at a slide. Every function here reads only the training split's captions, labels and
(for the nearest neighbour) mean-pooled features; none sees a test label or caption except to score it.

Keys of :func:`shortcut_baselines` (fractions and caption metrics over the test bags that have what the
metric needs):

* ``verbatim_overlap``: share of test captions that occur verbatim among the training captions;
* ``caption_lookup_accuracy``: label accuracy of "the majority label of the identical training caption"
  (the most frequent training class when the caption is new or missing) — a text-only shortcut;
* ``most_frequent_caption_*``: every test bag gets the most frequent training caption;
* ``true_class_caption_*``: the most frequent training caption of the bag's true class (an oracle);
* ``nn_caption_*`` / ``nn_label_accuracy``: caption and label of the nearest training bag by cosine
  similarity of mean-pooled patch features (image-only, no training);
* :func:`predicted_class_captions` gives the most frequent caption of a model's predicted class.

Caption metrics: BLEU@4 (``*_bleu_4``), ROUGE-L and CIDEr-D on the paper tokenisation (:mod:`.metrics`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._types import PathLike
from .data import BagRecord, load_features, resolve_features

__all__ = [
    "caption_scores",
    "class_captions",
    "predicted_class_captions",
    "shortcut_baselines",
]


def _norm(text: str | None) -> str | None:
    out = " ".join(str(text).split()) if text is not None else ""
    return out or None


def _most_common(items: Sequence[object]) -> Any:
    """The most frequent item; ties go to the one seen first (deterministic)."""
    counts = Counter(items)
    best = max(counts.values())
    return next(x for x in items if counts[x] == best)


def class_captions(train: Sequence[BagRecord], class_names: Sequence[str]) -> dict[int, str | None]:
    """The most frequent training caption of each class (None for a class without captioned bags)."""
    out: dict[int, str | None] = {}
    for c, name in enumerate(class_names):
        caps = [_norm(r.caption) for r in train if r.label == name and _norm(r.caption)]
        out[c] = _most_common(caps) if caps else None
    return out


def caption_scores(references: Sequence[str | None], hypotheses: Sequence[str | None]) -> dict[str, float]:
    """BLEU-4, ROUGE-L and CIDEr-D over the pairs with a reference (a missing hypothesis counts as empty)."""
    from .metrics import bleu, cider_d, rouge_l

    pairs = [(str(r), h or "") for r, h in zip(references, hypotheses, strict=True) if _norm(r)]
    if not pairs:
        return {"bleu_4": float("nan"), "rouge_l": float("nan"), "cider_d": float("nan")}
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    return {
        "bleu_4": bleu(refs, hyps)["bleu_4"],
        "rouge_l": rouge_l(refs, hyps),
        "cider_d": cider_d(refs, hyps),
    }


def predicted_class_captions(
    train: Sequence[BagRecord], class_names: Sequence[str], predicted: Sequence[int]
) -> list[str | None]:
    """Per test bag, the most frequent training caption of its predicted class."""
    per_class = class_captions(train, class_names)
    return [per_class.get(int(p)) for p in predicted]


def _mean_features(records: Sequence[BagRecord], features_dir: PathLike | None) -> np.ndarray:
    rows = []
    for r in records:
        feats, _ = load_features(resolve_features(r.key, features_dir))
        rows.append(feats.astype(np.float64).mean(axis=0))
    x = np.stack(rows)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def shortcut_baselines(
    train: Sequence[BagRecord],
    test: Sequence[BagRecord],
    class_names: Sequence[str],
    *,
    features_dir: PathLike | None = None,
) -> dict[str, float]:
    """The shortcut figures of one split (see the module docstring); ``features_dir`` None skips the
    nearest-neighbour rows."""
    names = list(class_names)
    train_labels = [names.index(r.label) if r.label in names else None for r in train]
    known = [y for y in train_labels if y is not None]
    majority = _most_common(known) if known else None  # no labelled training bag: lookups only
    by_caption: dict[str, list[int]] = {}
    for r, y in zip(train, train_labels, strict=True):
        if _norm(r.caption) and y is not None:
            by_caption.setdefault(_norm(r.caption), []).append(y)  # type: ignore[arg-type]
    refs = [_norm(r.caption) for r in test]
    labels = [names.index(r.label) if r.label in names else None for r in test]
    captioned = [c for c in refs if c]
    out: dict[str, float] = {
        "verbatim_overlap": (
            float(np.mean([c in by_caption for c in captioned])) if captioned else float("nan")
        ),
    }
    lookup = [_most_common(by_caption[c]) if c in by_caption else majority for c in refs]
    scored = [(p, y) for p, y in zip(lookup, labels, strict=True) if y is not None and p is not None]
    out["caption_lookup_accuracy"] = float(np.mean([p == y for p, y in scored])) if scored else float("nan")
    train_caps = [c for c in (_norm(r.caption) for r in train) if c]
    if train_caps:
        top = _most_common(train_caps)
        out.update(_prefixed("most_frequent_caption", caption_scores(refs, [top] * len(refs))))
        per_class = class_captions(train, names)
        truth = [per_class.get(y) if y is not None else None for y in labels]
        out.update(_prefixed("true_class_caption", caption_scores(refs, truth)))
    if features_dir is not None:
        out.update(_nearest_neighbour(train, test, train_labels, labels, refs, features_dir))
    return out


def _nearest_neighbour(
    train: Sequence[BagRecord],
    test: Sequence[BagRecord],
    train_labels: list[int | None],
    labels: list[int | None],
    refs: list[str | None],
    features_dir: PathLike,
) -> dict[str, float]:
    """Caption and label of the most similar training bag (cosine of mean-pooled features)."""
    sim = _mean_features(test, features_dir) @ _mean_features(train, features_dir).T  # (test, train)
    out: dict[str, float] = {}
    has_label = np.asarray([y is not None for y in train_labels])
    if has_label.any():
        nn_label = np.where(has_label[None], sim, -np.inf).argmax(axis=1)
        scored = [(train_labels[j], y) for j, y in zip(nn_label, labels, strict=True) if y is not None]
        out["nn_label_accuracy"] = float(np.mean([p == y for p, y in scored])) if scored else float("nan")
    has_cap = np.asarray([_norm(r.caption) is not None for r in train])
    if has_cap.any():
        nn_cap = np.where(has_cap[None], sim, -np.inf).argmax(axis=1)
        out.update(_prefixed("nn_caption", caption_scores(refs, [_norm(train[j].caption) for j in nn_cap])))
    return out


def _prefixed(prefix: str, scores: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in scores.items()}
