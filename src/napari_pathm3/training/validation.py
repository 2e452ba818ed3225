"""Did a model trained on drawn regions learn? Hold regions out, or cross-validate when there are too few.

Regions, not patches, are the unit: sub-bags of one region are near copies of it, so a region is either in
training or in validation, never both. The plan:

* every class has at least :data:`MIN_FOR_HOLDOUT` regions: about a quarter of each class's regions (at least
  one) are held out; the model is trained on the rest and judged on them (``evaluated_on="validation"``);
* else every class has at least two regions: ``k``-fold cross-validation over the regions (``k`` = the
  smallest class's region count, at most :data:`MAX_FOLDS`), each fold trained like the final model; the
  final model is trained on every region and carries the cross-validated verdict
  (``evaluated_on="cross-validation"``);
* else no validation is possible (a class with one region): the verdict says so and why.

Accuracy is always shown beside the majority-class rate, and the caption check counts generated captions that
repeat a training caption word for word (:func:`napari_pathm3.training.verdict.judge`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .data import SlideBag
from .verdict import CHANCE_MARGIN, NOT_CLASSIFYING

MIN_FOR_HOLDOUT = 3  # regions per class: one held out leaves two to learn from
HOLDOUT_FRACTION = 0.25
MAX_FOLDS = 5


@dataclass(frozen=True)
class Plan:
    """How a region-trained model is validated: ``kind`` is "holdout", "cv" or "none"."""

    kind: str
    train: list[SlideBag] = field(default_factory=list)
    val: list[SlideBag] = field(default_factory=list)
    folds: list[list[SlideBag]] = field(default_factory=list)
    reason: str = ""


def plan_validation(bags: Sequence[SlideBag], *, seed: int = 0, class_names: Sequence[str] = ()) -> Plan:
    """Split one-bag-per-region ``bags`` by the rules in the module docstring (stratified by class)."""
    by_class: dict[Any, list[SlideBag]] = defaultdict(list)
    for b in bags:
        by_class[b.label].append(b)
    rng = np.random.default_rng(seed)
    for members in by_class.values():
        rng.shuffle(members)
    smallest = min(len(m) for m in by_class.values())
    if smallest >= MIN_FOR_HOLDOUT:
        train, val = [], []
        for members in by_class.values():
            k = max(1, round(HOLDOUT_FRACTION * len(members)))
            val += members[:k]
            train += members[k:]
        return Plan("holdout", train=train, val=val)
    if smallest >= 2:
        k = min(smallest, MAX_FOLDS)
        folds: list[list[SlideBag]] = [[] for _ in range(k)]
        for members in by_class.values():
            for i, b in enumerate(members):
                folds[i % k].append(b)
        return Plan("cv", folds=folds)
    lonely = [_name(c, class_names) for c, m in by_class.items() if len(m) < 2]
    return Plan(
        "none",
        train=list(bags),
        reason=f"class {', '.join(repr(c) for c in lonely)} has only one region: draw at least 2 regions per "
        f"class for cross-validation, {MIN_FOR_HOLDOUT} for a held-out check",
    )


def _name(label: Any, class_names: Sequence[str]) -> str:
    if isinstance(label, (int, np.integer)) and 0 <= int(label) < len(class_names):
        return class_names[int(label)]
    return str(label)


def pooled_verdict(fold_verdicts: list[dict[str, Any]], labels: list[Any]) -> dict[str, Any]:
    """One cross-validated verdict from the folds' validation verdicts (weighted by bags judged), against
    the majority-class rate of all regions."""
    n = [int(v.get("n", 0)) for v in fold_verdicts]
    accs = [float(v["accuracy"]) for v in fold_verdicts if v.get("accuracy") is not None]
    if not accs or sum(n) == 0:
        return {"evaluated_on": "cross-validation", "folds": len(fold_verdicts), "warnings": []}
    acc = float(
        np.average(accs, weights=[w for w, v in zip(n, fold_verdicts, strict=True) if "accuracy" in v])
    )
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    learned = acc >= majority + CHANCE_MARGIN
    out: dict[str, Any] = {
        "evaluated_on": "cross-validation",
        "folds": len(fold_verdicts),
        "n": sum(n),
        "accuracy": acc,
        "fold_accuracies": accs,
        "majority_rate": majority,
        "learned_to_classify": learned,
        "warnings": [],
    }
    judged = [v for v in fold_verdicts if "captions_judged" in v]
    if judged:
        out["captions_judged"] = sum(int(v["captions_judged"]) for v in judged)
        out["verbatim_training_captions"] = sum(int(v["verbatim_training_captions"]) for v in judged)
    if not learned:
        out["warnings"].append(
            f"{NOT_CLASSIFYING}: cross-validated accuracy {acc:.2f}, while always predicting the most frequent "
            f"class gives {majority:.2f} (more regions per class, more epochs or a higher learning rate may help)"
        )
    return out


def verdict_text(verdict: dict[str, Any] | None) -> str:
    """What the Train widget shows: where the model was judged, accuracy against the majority baseline,
    the caption check and the verdict in words."""
    if not verdict:
        return "No verdict recorded."
    where = verdict.get("evaluated_on", "training")
    n = verdict.get("n")
    what = {
        "validation": f"on {n} held-out region(s)",
        "cross-validation": f"{verdict.get('folds')}-fold cross-validation over {n} region(s)",
    }.get(where, f"on its own {n} training bag(s) only (not validated)")
    lines = []
    if verdict.get("accuracy") is not None:
        acc, maj = float(verdict["accuracy"]), float(verdict.get("majority_rate", float("nan")))
        ok = verdict.get("learned_to_classify")
        word = "learned to classify" if ok else "NOT learned to classify"
        lines.append(
            f"Accuracy {acc:.0%} {what}, vs {maj:.0%} by always guessing the most frequent class: {word}."
        )
    else:
        lines.append(f"Judged {what}; no class accuracy.")
    if verdict.get("captions_judged"):
        k, m = int(verdict["verbatim_training_captions"]), int(verdict["captions_judged"])
        lines.append(f"Captions: {k} of {m} repeat a training caption word for word.")
    if verdict.get("learned_to_caption") is False:
        lines.append("It has NOT learned to caption (one caption for every region).")
    if verdict.get("not_validated"):
        lines.append(f"Not validated: {verdict['not_validated']}.")
    if verdict.get("baselines"):
        from .verdict_baselines import baselines_text

        lines.append(baselines_text(verdict))
    return " ".join(lines)
