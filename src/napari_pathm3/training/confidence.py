"""What a result may claim about its model: the accuracy recorded where the model was judged, and how far a
slide's features are from the model's training features (:mod:`napari_pathm3.model.feature_summary`)."""

from __future__ import annotations

from typing import Any

import numpy as np


def model_accuracy(model: Any) -> dict[str, Any] | None:
    """Accuracy of the model where its training verdict judged it (validation, cross-validation or, without
    either, the training bags), with the majority-class rate beside it; ``None`` when unrecorded."""
    from .verdict import read_verdict

    verdict = getattr(model, "training_verdict", None) or read_verdict(getattr(model, "checkpoint_dir", None))
    if not verdict or verdict.get("accuracy") is None:
        return None
    keys = ("accuracy", "majority_rate", "evaluated_on", "n")
    return {k: verdict[k] for k in keys if verdict.get(k) is not None}


def ood_check(model: Any, features: np.ndarray) -> Any:
    """The slide's distance to the model's training features (:class:`~.model.feature_summary.OodCheck`),
    or ``None`` when the model has no training-feature summary (older checkpoints)."""
    from ..model.feature_summary import load_summary

    summary = getattr(model, "feature_summary", None)
    if summary is None:
        summary = load_summary(getattr(model, "checkpoint_dir", None))
        if summary is not None:
            model.feature_summary = summary  # read once per loaded model
    if summary is None or features.shape[1] != summary.mean.shape[0] or not len(features):
        return None
    return summary.check(features)
