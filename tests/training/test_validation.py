"""What a region-trained model learned (issue 27 item 4): held-out regions, or cross-validation when there
are too few, accuracy against the majority class, the caption check, and the verdict in words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_pathm3.training.data import SlideBag
from napari_pathm3.training.regions import Region
from napari_pathm3.training.validation import plan_validation, pooled_verdict, verdict_text
from napari_pathm3.training.verdict import VERDICT_NAME, judge

from ..conftest import BLOBS


def _bags(counts: dict[int, int]) -> list[SlideBag]:
    return [
        SlideBag(np.zeros((3, 4), np.float32), label=c, slide_id=f"s#{c}-{i}")
        for c, n in counts.items()
        for i in range(n)
    ]


def test_plan_holdout_cv_or_none() -> None:
    plan = plan_validation(_bags({0: 4, 1: 3}))
    assert plan.kind == "holdout"
    assert sorted(b.label for b in plan.val) == [0, 1]  # one of each class held out
    assert len(plan.train) == 5 and not {id(b) for b in plan.val} & {id(b) for b in plan.train}
    plan = plan_validation(_bags({0: 2, 1: 5}))
    assert plan.kind == "cv" and len(plan.folds) == 2
    assert all(sorted({b.label for b in f}) == [0, 1] for f in plan.folds)  # stratified
    assert sum(len(f) for f in plan.folds) == 7
    plan = plan_validation(_bags({0: 1, 1: 5}), class_names=("tumour", "normal"))
    assert plan.kind == "none" and "'tumour' has only one region" in plan.reason


def test_pooled_verdict_against_the_majority_class() -> None:
    folds = [
        {"n": 2, "accuracy": 1.0, "captions_judged": 2, "verbatim_training_captions": 2},
        {"n": 2, "accuracy": 0.5, "captions_judged": 2, "verbatim_training_captions": 1},
    ]
    v = pooled_verdict(folds, [0, 0, 1, 1])
    assert v["accuracy"] == pytest.approx(0.75) and v["majority_rate"] == 0.5 and v["learned_to_classify"]
    assert v["verbatim_training_captions"] == 3 and v["captions_judged"] == 4 and not v["warnings"]
    bad = pooled_verdict([{"n": 4, "accuracy": 0.5}], [0, 0, 0, 1])
    assert not bad["learned_to_classify"] and "has not learned to classify" in bad["warnings"][0]
    text = verdict_text(v)
    assert "75%" in text and "2-fold cross-validation over 4 region(s)" in text and "50%" in text
    assert "3 of 4 repeat a training caption word for word" in text
    assert "NOT learned to classify" in verdict_text(bad)
    assert "Not validated: x" in verdict_text({"evaluated_on": "training", "n": 3, "not_validated": "x"})
    assert verdict_text(None) == "No verdict recorded."


def test_judge_counts_verbatim_training_captions() -> None:
    from napari_pathm3.training.evaluate import Predictions

    pred = Predictions(
        slide_ids=["a", "b", "c"],
        labels=np.array([0, 1, 1]),
        probabilities=np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]),
        references=["x one.", "y two.", "y three."],
        captions=["X  one.", "something new.", "y two."],
    )
    v = judge(pred, where="validation", captions_trained=True, train_captions=["x one.", "y two."])
    assert v["verbatim_training_captions"] == 2 and v["captions_judged"] == 3  # case and spacing ignored
    assert v["accuracy"] == pytest.approx(2 / 3) and v["majority_rate"] == pytest.approx(2 / 3)


def _rect(x: float, y: float, w: float, h: float) -> np.ndarray:
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], float)


def test_two_regions_per_class_are_cross_validated(synthetic_slide: Path, tmp_path: Path) -> None:
    from napari_pathm3 import api

    (x0, y0, w0, h0), (x1, y1, w1, h1) = BLOBS
    regions = [  # each blob cut in two: two regions per class
        Region(label="big", polygon=_rect(x0, y0, w0 / 2, h0), caption="big blob."),
        Region(label="big", polygon=_rect(x0 + w0 / 2, y0, w0 / 2, h0), caption="big blob."),
        Region(label="small", polygon=_rect(x1, y1, w1, h1 / 2), caption="small blob."),
        Region(label="small", polygon=_rect(x1, y1 + h1 / 2, w1, h1 / 2), caption="small blob."),
    ]
    result = api.train(
        [(synthetic_slide, regions)],
        output_dir=tmp_path / "run",
        encoder="builtin:colorstats",
        device="cpu",
        epochs=2,
        sub_bags=1,
    )
    v = result.verdict
    assert v["evaluated_on"] == "cross-validation" and v["folds"] == 2 and v["n"] == 4
    assert v["majority_rate"] == 0.5 and 0.0 <= v["accuracy"] <= 1.0 and "training_accuracy" in v
    assert json.loads((result.best_dir / VERDICT_NAME).read_text())["evaluated_on"] == "cross-validation"
    assert not list((tmp_path / "run").glob(".cv-*"))  # the fold models are not left behind
    assert "cross-validation" in verdict_text(v)
