"""What a result may claim about its model: the accuracy recorded where the model was judged, and how far a
slide's features are from the model's training features (:mod:`napari_pathm3.model.feature_summary`)."""

from __future__ import annotations

from typing import Any

import numpy as np


def model_accuracy(model: Any) -> dict[str, object] | None:
    """Accuracy of the model where its training verdict judged it (validation, cross-validation or, without
    either, the training bags), with the majority-class rate beside it; ``None`` when unrecorded."""
    from .verdict import verdict_of

    verdict = verdict_of(model)
    return None if verdict is None else verdict.accuracy_record()


def ood_check(model: Any, features: np.ndarray) -> Any:
    """The slide's distance to the model's training features (:class:`~.feature_summary.OodCheck`),
    or ``None`` when the model has no training-feature summary (older checkpoints)."""
    from .feature_summary import load_summary

    summary = getattr(model, "feature_summary", None)
    if summary is None:
        summary = load_summary(getattr(model, "checkpoint_dir", None))
        if summary is not None:
            model.feature_summary = summary  # read once per loaded model
    if summary is None or features.shape[1] != summary.mean.shape[0] or not len(features):
        return None
    return summary.check(features)
