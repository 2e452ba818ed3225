"""The verdict against baselines: does the trained model beat what simpler means give on the same bags?

Computed at the end of a training run on the **validation** split (the bags the checkpoint was chosen on),
against baselines computed in the same run from the same training bags:

* ``abmil_accuracy``: gated-attention ABMIL (:func:`.baselines.fit_abmil`) trained on the same features,
  its epoch chosen on the same validation bags;
* ``stock_caption_bleu_4``: every bag gets the most frequent training caption of the class the model
  predicted (a model whose captions are its class's stock sentence says nothing about the slide);
* ``constant_caption_bleu_4``: every bag gets the most frequent training caption;
* ``caption_class_agreement``: share of bags whose caption says the class the model predicted
  (:class:`.caption_facts.CaptionClassifier` fitted on the training captions).

A warning (with the figures) is added when the model's accuracy is below ABMIL's, when its BLEU-4 does not
exceed the stock caption's by :data:`CAPTION_MARGIN`, or when caption and class agree on fewer than
:data:`AGREEMENT_BAR` of the bags. The figures go into the verdict under ``baselines``; the warnings reach the
CLI summary, ``TrainResult.warnings``, ``SlideResult.warnings`` and both widgets like every verdict warning.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .baselines import AbmilConfig, fit_abmil
from .caption_facts import CaptionClassifier, agreement

log = logging.getLogger(__name__)

NOT_BEATING = "this model does not beat its baselines"
DISAGREES = "this model's captions disagree with its class"
CAPTION_MARGIN = 0.01  # BLEU-4 must exceed the predicted class's stock caption by more than this
AGREEMENT_BAR = 0.9  # caption and class must agree on at least this share of bags
MAX_BAGS = 2000  # bags read for the ABMIL baseline (spread over the set): bounded time on large cohorts
ABMIL_STEPS = 20_000  # at most this many ABMIL steps (bags x epochs)


def _spread(n: int, limit: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(n, limit)).round().astype(int).tolist())) if n else []


def _labelled(dataset: Sequence[Any], limit: int) -> list[tuple[np.ndarray, int]]:
    out = []
    for i in _spread(len(dataset), limit):
        bag = dataset[i]
        if bag.label is not None and int(bag.label) >= 0 and len(bag.features):
            out.append((np.asarray(bag.features, np.float32), int(bag.label)))
    return out


def _most_common(items: Sequence[str]) -> str:
    counts = Counter(items)
    best = max(counts.values())
    return next(x for x in items if counts[x] == best)


def _norm(text: Any) -> str | None:
    out = " ".join(str(text).split()) if text is not None else ""
    return out or None


def judge_against_baselines(
    pred: Any,
    train: Sequence[Any],
    val: Sequence[Any],
    *,
    num_classes: int,
    seed: int = 0,
    captions_trained: bool = True,
    abmil: AbmilConfig | None = None,
) -> dict[str, Any]:
    """Baseline figures and warnings for the predictions ``pred`` (``training.evaluate.Predictions`` of the
    chosen checkpoint on ``val``); ``train`` / ``val`` are the run's datasets of :class:`SlideBag`.
    ``abmil`` overrides the ABMIL settings (default: :class:`AbmilConfig` with ``seed``, up to 20 epochs)."""
    from .metrics import bleu

    out: dict[str, Any] = {}
    warnings: list[str] = []
    flags: dict[str, bool] = {}
    labels = np.asarray(pred.labels)
    probs = np.asarray(pred.probabilities)
    has = (labels >= 0) & np.isfinite(probs).all(axis=1) if probs.size else np.zeros(len(labels), bool)
    predicted = probs.argmax(1) if probs.size else np.zeros(0, int)
    if has.any():
        acc = float((predicted[has] == labels[has]).mean())
        tr, va = _labelled(train, MAX_BAGS), _labelled(val, MAX_BAGS)
        if tr and va and len({y for _, y in tr}) > 1:
            epochs = int(np.clip(ABMIL_STEPS // len(tr), 3, 20))
            cfg = abmil or AbmilConfig(seed=seed, epochs=epochs)
            fit = fit_abmil(tr, va, num_classes=num_classes, config=cfg)
            out.update(accuracy=acc, abmil_accuracy=fit.val_accuracy, abmil_chosen=fit.chosen)
            out["abmil_seconds"] = round(fit.seconds, 2)
            flags["beats_abmil"] = acc >= fit.val_accuracy
            if not flags["beats_abmil"]:
                warnings.append(
                    f"{NOT_BEATING}: validation accuracy {acc:.2f}, while attention pooling (ABMIL) trained on "
                    f"the same features and bags reaches {fit.val_accuracy:.2f}"
                )
    normed = [(_norm(b.caption), b.label) for b in (train[i] for i in _spread(len(train), 10 * MAX_BAGS))]
    train_caps = [(c, y) for c, y in normed if c]
    rows = [i for i, r in enumerate(pred.references) if _norm(r)]
    if captions_trained and pred.captions is not None and train_caps and rows:
        refs = [str(_norm(pred.references[i])) for i in rows]
        gen = [pred.captions[i] or "" for i in rows]
        by_class: dict[int, list[str]] = {}
        for c, y in train_caps:
            if y is not None and int(y) >= 0:
                by_class.setdefault(int(y), []).append(c)
        stock = {y: _most_common(cs) for y, cs in by_class.items()}
        constant = _most_common([c for c, _ in train_caps])
        model_bleu = float(bleu(refs, gen)["bleu_4"])
        const_bleu = float(bleu(refs, [constant] * len(refs))["bleu_4"])
        out.update(bleu_4=model_bleu, constant_caption_bleu_4=const_bleu)
        if probs.size and has[rows].all():
            p = [int(predicted[i]) for i in rows]
            stock_bleu = float(bleu(refs, [stock.get(y, constant) for y in p])["bleu_4"])
            clf = CaptionClassifier(
                [c for c, _ in train_caps],
                [int(y) if y is not None else -1 for _, y in train_caps],
                num_classes,
            )
            agree = agreement(clf, gen, p)
            out.update(stock_caption_bleu_4=stock_bleu, caption_class_agreement=agree)
            flags["beats_stock_caption"] = model_bleu > max(stock_bleu, const_bleu) + CAPTION_MARGIN
            if not flags["beats_stock_caption"]:
                warnings.append(
                    f"{NOT_BEATING}: validation caption BLEU-4 {model_bleu:.3f}, while the stock caption of the "
                    f"predicted class gives {stock_bleu:.3f} and the most frequent training caption "
                    f"{const_bleu:.3f}: its captions say little about the slide beyond its class"
                )
            if agree is not None:
                flags["captions_agree_with_class"] = agree >= AGREEMENT_BAR
            if agree is not None and agree < AGREEMENT_BAR:
                warnings.append(
                    f"{DISAGREES}: on {1 - agree:.0%} of the validation bags the caption states another class "
                    f"than the classifier predicts (agreement {agree:.2f}); trust neither blindly"
                )
    if not out:
        return {}
    beats = all(v for k, v in flags.items() if k.startswith("beats_"))
    return {
        "baselines": {**out, **flags, "evaluated_on": "validation", "n": int(len(labels))},
        "beats_baselines": beats,
        "warnings": warnings,
    }


def baselines_text(verdict: dict[str, Any]) -> str:
    """The baseline figures of a verdict in one sentence (the Train widget's verdict text)."""
    b = verdict.get("baselines") or {}

    def f(key: str, fmt: str = ".2f") -> str:
        v = b.get(key)
        return "-" if v is None else format(float(v), fmt)

    parts = []
    if "abmil_accuracy" in b:
        parts.append(f"accuracy {f('accuracy')} vs {f('abmil_accuracy')} for attention pooling (ABMIL)")
    if "bleu_4" in b:
        parts.append(
            f"caption BLEU-4 {f('bleu_4', '.3f')} vs {f('stock_caption_bleu_4', '.3f')} for the predicted "
            f"class's stock caption and {f('constant_caption_bleu_4', '.3f')} for one constant caption"
        )
    if b.get("caption_class_agreement") is not None:
        parts.append(f"caption and class agree on {float(b['caption_class_agreement']):.0%} of bags")
    word = "beats them" if verdict.get("beats_baselines") else "does NOT beat them"
    return (
        f"Against baselines on the {b.get('n', '?')} validation bags: " + "; ".join(parts) + f" — it {word}."
    )
