"""Per-slide rows and slide embeddings of an evaluation, for the cohort table (:mod:`napari_pathm3.io.cohort`).

The slide embedding is the mean over the learned queries of the image-only Q-Former output (the queries the
classifier and the caption prefix read), ``(hidden_size,)`` per slide.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._types import CancelToken, check_cancel


def slide_embeddings(model: Any, bags: Any, *, cancel: CancelToken | None = None) -> np.ndarray:
    """``(n_bags, hidden)`` mean query outputs of the image-only pass (``(n_bags, 0)`` for a text-only model)
    of ``bags``: a sequence or dataset of items with ``features`` ``(n, d)``."""
    import torch

    core = getattr(model, "module", model)
    if core.config.mode == "text":  # no image path: no slide embedding
        return np.zeros((len(bags), 0), np.float32)
    rows = []
    was = core.training
    core.eval()
    try:
        with torch.no_grad():
            for i in range(len(bags)):
                check_cancel(cancel)
                feats = torch.as_tensor(np.asarray(bags[i].features, np.float32))[None]
                q = core(feats.to(core.device)).query_output  # (1, q, H), no text: the image-only pass
                rows.append(q.float().mean(1)[0].cpu().numpy())
    finally:
        core.train(was)
    return np.stack(rows).astype(np.float32)


def cohort_rows(
    metrics: Mapping[str, Any],
    *,
    paths: Mapping[str, str] | None = None,
    verdict: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per slide from ``evaluate_model(..., return_predictions=True)``: id, label and prediction names,
    ``prob_<class>``, correct, caption, reference, features path, and the checkpoint's verdict fields."""
    names = list(metrics.get("class_names") or [])
    rows = []
    for p in metrics.get("predictions") or []:
        probs = p.get("probabilities")
        label = int(p["label"]) if p.get("label") is not None else -1
        pred = int(np.argmax(probs)) if probs else -1
        row: dict[str, Any] = {
            "slide_id": p["slide_id"],
            "label": names[label] if 0 <= label < len(names) else None,
            "prediction": names[pred] if 0 <= pred < len(names) else None,
        }
        for c, name in enumerate(names):
            row[f"prob_{name}"] = None if not probs else float(probs[c])
        row["correct"] = None if label < 0 or pred < 0 else bool(label == pred)
        row["caption"] = p.get("caption")
        row["reference"] = p.get("reference")
        row["features_path"] = (paths or {}).get(p["slide_id"])
        for k in ("learned_to_classify", "learned_to_caption"):
            if verdict and k in verdict:
                row[f"model_{k}"] = bool(verdict[k])
        rows.append(row)
    return rows


__all__ = ["cohort_rows", "slide_embeddings"]
