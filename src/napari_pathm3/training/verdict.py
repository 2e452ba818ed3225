"""Did a training run learn? The verdict on both heads, kept beside the checkpoint for inference to read.

A run "has not learned to classify" when its accuracy on the bags it was judged on is within
:data:`CHANCE_MARGIN` of always predicting the most frequent class; it "has not learned to caption" when
it writes one and the same caption for every one of those bags while their references differ. The verdict is
written as ``training_verdict.json`` into ``best/`` and ``last/``; :func:`napari_pathm3.model.verdict.read_verdict` reads it back and
inference puts its warnings into ``SlideResult.warnings``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..model.verdict import NOT_CAPTIONING, NOT_CLASSIFYING, VERDICT_NAME, write_verdict

log = logging.getLogger(__name__)

__all__ = ["CHANCE_MARGIN", "NOT_CAPTIONING", "NOT_CLASSIFYING", "VERDICT_NAME", "judge", "judge_best"]

CHANCE_MARGIN = 0.05  # accuracy must beat the majority-class rate by this much


def combined_score(metrics: dict[str, Any]) -> float:
    """The ``combined`` validation score: mean of accuracy and caption BLEU-4 (accuracy alone without
    generated captions)."""
    acc = float(metrics.get("accuracy", float("nan")))
    bleu = metrics.get("bleu_4")
    return acc if bleu is None else 0.5 * (acc + float(bleu))


def judge(pred: Any, *, where: str, captions_trained: bool, train_captions: Any = None) -> dict[str, Any]:
    """Verdict on predictions (``training.evaluate.Predictions``) of the chosen model. With
    ``train_captions``, generated captions that copy a training caption word for word are counted (a
    model that only recalls sentences has not learned to describe)."""
    warnings: list[str] = []
    out: dict[str, Any] = {"evaluated_on": where, "n": len(pred.slide_ids)}
    labels = np.asarray(pred.labels)
    # A text-only model classifies from text alone: judge it on its text-conditioned outputs (its image-only
    # rows are NaN); every other model on the image-only pass, as users run it.
    probs = (
        pred.text_probabilities
        if pred.mode == "text" and pred.text_probabilities is not None
        else pred.probabilities
    )
    has = (labels >= 0) & np.isfinite(probs).all(axis=1) if probs.size else labels >= 0
    if has.any():
        acc = float((probs[has].argmax(1) == labels[has]).mean())
        majority = Counter(labels[has].tolist()).most_common(1)[0][1] / int(has.sum())
        learned = acc >= majority + CHANCE_MARGIN
        out.update(accuracy=acc, majority_rate=majority, learned_to_classify=learned)
        if not learned:
            warnings.append(
                f"{NOT_CLASSIFYING}: {where} accuracy {acc:.2f}, while always predicting the most frequent "
                f"class gives {majority:.2f} (more epochs, a higher --lr, or more bags may help)"
            )
    if captions_trained and pred.captions is not None:
        refs = {r for r in pred.references if r}
        gen = [c for c, r in zip(pred.captions, pred.references, strict=True) if r]
        distinct = len(set(gen))
        learned = not (len(refs) > 1 and distinct <= 1)
        out.update(distinct_captions=distinct, distinct_references=len(refs), learned_to_caption=learned)
        if train_captions is not None:
            known = {_norm(c) for c in train_captions if c}
            out.update(
                captions_judged=len(gen), verbatim_training_captions=sum(_norm(c) in known for c in gen)
            )
        if not learned:
            example = gen[0] if gen else ""
            # kept apart too: cross-validation carries the final model's caption verdict over by this key
            out["caption_warning"] = (
                f"{NOT_CAPTIONING}: it writes the same caption for all {len(gen)} {where} bags "
                f"({example!r}); train longer or on more captioned bags"
            )
            warnings.append(out["caption_warning"])
    out["warnings"] = warnings
    return out


def _norm(caption: str) -> str:
    return " ".join(str(caption).lower().split())


def judge_best(
    core: Any,
    out: Path,
    dataset: Any,
    batch: int,
    mode: str,
    device: Any,
    config: Any,
    dist: Any,
    captioned: bool,
    *,
    where: str,
    train_captions: Any = None,
    train_dataset: Any = None,
) -> dict[str, Any]:
    """Judge the best checkpoint (``out/best``) on ``dataset`` (validation, else training bags), store the verdict
    in ``best/`` and ``last/`` and log its warnings; ``core`` keeps its own (last-epoch) weights."""
    import torch

    from ..model.checkpoint import load_tensors
    from .evaluate import predict

    best = out / "best"
    last_state = {k: v.detach().clone() for k, v in core.state_dict().items()}
    try:
        if best.is_dir():
            core.load_state_dict(load_tensors(best), strict=False)
        pred = predict(
            core,
            dataset,
            batch_size=batch,
            mode=mode,
            device=device,
            bf16=config.bf16,
            dist=dist,
            generate=captioned,
        )
    finally:
        with torch.no_grad():
            core.load_state_dict(last_state)
    verdict = judge(pred, where=where, captions_trained=captioned, train_captions=train_captions)
    if train_dataset is not None and where == "validation" and dist.is_main:
        verdict = _with_baselines(verdict, pred, train_dataset, dataset, core, config, captioned)
    if dist.is_main:
        write_verdict(verdict, [best, out / "last"])
    for w in verdict["warnings"]:
        log.warning("%s", w)
    return verdict


def _with_baselines(
    verdict: dict[str, Any], pred: Any, train: Any, val: Any, core: Any, config: Any, captioned: bool
) -> dict[str, Any]:
    """``verdict`` with the baseline figures and warnings of :mod:`.verdict_baselines` (validation bags); a
    baseline that fails is logged and left out, never a reason to lose the trained model."""
    from .verdict_baselines import judge_against_baselines

    try:
        extra = judge_against_baselines(
            pred,
            train,
            val,
            num_classes=core.config.num_classes,
            seed=int(getattr(config, "seed", 0)),
            captions_trained=captioned,
        )
    except (ValueError, RuntimeError, OSError) as err:
        log.warning("no baselines in the training verdict: %s", err)
        return verdict
    if not extra:
        return verdict
    warnings = list(verdict.get("warnings", [])) + extra["warnings"]
    return {**verdict, "baselines": extra["baselines"], "beats_baselines": extra["beats_baselines"],
            "warnings": warnings}  # fmt: skip
