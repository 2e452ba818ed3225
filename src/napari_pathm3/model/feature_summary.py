"""What a model's training features looked like, kept beside the checkpoint, and how far a new slide is from it.

A model only knows the patches it was trained on. At the end of training the patch features of the training
bags are summarised (per-dimension mean and standard deviation, and how atypical training patches themselves
are) into ``feature_summary.safetensors`` + ``feature_summary.json`` in ``best/`` and ``last/``. At inference
the slide's *typical* patch (the median over its patches) is compared with that: a slide whose typical patch
is farther from the training patches than :data:`QUANTILE` of the training patches themselves is out of
distribution, and its result carries a warning with the distance and the threshold.

Distance of one patch: the root-mean-square z-score of its features against the training patches,
``sqrt(mean_d(((x_d - mean_d) / std_d)^2))`` (about 1 for a typical training patch). ``std_d`` is floored at
:data:`STD_FLOOR` of the median std, so a feature that was constant in training does not make every new slide
"infinitely far". Pure numpy; safetensors + JSON only.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._types import PathLike
from ..jsonfile import write_json_atomic

SUMMARY_TENSORS = "feature_summary.safetensors"
SUMMARY_JSON = "feature_summary.json"
#: a slide is far when its typical patch is more atypical than this fraction of training patches
QUANTILE = 0.99
#: ... by at least this factor (training patches define the quantile; a margin absorbs scanner noise)
MARGIN = 1.25
#: per-feature std floor, relative to the median std over features
STD_FLOOR = 0.1
#: patches kept for the summary (spread over the bags) and per slide at inference: bounded memory and time
MAX_PATCHES = 20_000


@dataclass(frozen=True)
class FeatureSummary:
    """Per-feature ``mean`` and ``std`` (floored) of the training patches, and the distance threshold."""

    mean: np.ndarray
    std: np.ndarray
    threshold: float
    train_median: float
    n_patches: int
    n_bags: int

    def patch_distances(self, features: np.ndarray) -> np.ndarray:
        """``(n,)`` RMS z-score of each patch against the training patches."""
        z = (np.asarray(features, np.float32) - self.mean) / self.std
        return np.sqrt(np.mean(z * z, axis=1))

    def check(self, features: np.ndarray) -> OodCheck:
        """How far a slide's patches (``(n, d)``) are from the training patches."""
        feats = _sample(np.asarray(features, np.float32), MAX_PATCHES)
        if feats.shape[1] != self.mean.shape[0]:
            raise ValueError(f"features of width {feats.shape[1]}, the summary has {self.mean.shape[0]}")
        distance = float(np.median(self.patch_distances(feats)))
        return OodCheck(distance=distance, threshold=self.threshold, train_median=self.train_median)


@dataclass(frozen=True)
class OodCheck:
    """A slide's distance to the training features (its median patch's RMS z-score) and the threshold."""

    distance: float
    threshold: float
    train_median: float

    @property
    def far(self) -> bool:
        return self.distance > self.threshold

    def to_dict(self) -> dict[str, object]:
        return {
            "distance": round(self.distance, 4),
            "threshold": round(self.threshold, 4),
            "training_median": round(self.train_median, 4),
            "out_of_distribution": self.far,
            "measure": "median over the slide's patches of the RMS z-score against the training patches",
        }

    def warning(self) -> str:
        return (
            f"out of distribution: this slide's typical patch is {self.distance:.2f} (RMS z-score) from the "
            f"model's training patches, beyond the threshold {self.threshold:.2f} (a typical training patch: "
            f"{self.train_median:.2f}); the model has not seen tissue like this and its output is unreliable"
        )


def _sample(features: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    if len(features) <= limit:
        return features
    idx = np.random.default_rng(seed).choice(len(features), limit, replace=False)
    return features[np.sort(idx)]


def summarize(bags: Iterable[np.ndarray], *, max_patches: int = MAX_PATCHES) -> FeatureSummary:
    """The summary of training bags (each ``(n_i, d)`` patch features)."""
    bags = [np.asarray(b, np.float32) for b in bags if len(b)]
    if not bags:
        raise ValueError("no training features to summarise")
    per_bag = max(1, max_patches // len(bags))
    feats = np.concatenate([_sample(b, per_bag, seed=i) for i, b in enumerate(bags)])
    mean = feats.mean(axis=0)
    std = feats.std(axis=0)
    floor = STD_FLOOR * float(np.median(std)) or 1e-6  # all-constant features: any difference is far
    std = np.sqrt(std * std + floor * floor).astype(np.float32)
    provisional = FeatureSummary(mean, std, float("inf"), 0.0, len(feats), len(bags))
    dist = provisional.patch_distances(feats)
    return FeatureSummary(
        mean=mean.astype(np.float32),
        std=std,
        threshold=float(np.quantile(dist, QUANTILE)) * MARGIN,
        train_median=float(np.median(dist)),
        n_patches=len(feats),
        n_bags=len(bags),
    )


def save_summary(summary: FeatureSummary, folder: PathLike, *, encoder: str | None = None) -> None:
    """Write the summary into a checkpoint folder (each file atomically)."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    meta = {
        "threshold": summary.threshold,
        "training_median": summary.train_median,
        "quantile": QUANTILE,
        "margin": MARGIN,
        "n_patches": summary.n_patches,
        "n_bags": summary.n_bags,
        "feature_dim": int(summary.mean.shape[0]),
        "encoder": encoder,
        "measure": "RMS z-score of a patch against the training patches; a slide: the median over its patches",
    }
    fd, tmp = tempfile.mkstemp(prefix=".summary-", dir=folder)
    os.close(fd)
    save_file({"mean": summary.mean, "std": summary.std}, tmp)
    os.replace(tmp, folder / SUMMARY_TENSORS)
    write_json_atomic(folder / SUMMARY_JSON, meta)


def load_summary(folder: PathLike | None) -> FeatureSummary | None:
    """The summary stored with a checkpoint folder, or ``None`` (older checkpoints; unreadable files)."""
    if not folder:
        return None
    folder = Path(folder)
    if not (folder / SUMMARY_TENSORS).is_file() or not (folder / SUMMARY_JSON).is_file():
        return None
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(folder / SUMMARY_TENSORS))
        meta = json.loads((folder / SUMMARY_JSON).read_text())
        mean, std = np.asarray(tensors["mean"], np.float32), np.asarray(tensors["std"], np.float32)
        if mean.shape != std.shape or mean.ndim != 1 or not (std > 0).all():
            raise ValueError(f"bad shapes or std: {mean.shape}, {std.shape}")
        return FeatureSummary(
            mean=mean,
            std=std,
            threshold=float(meta["threshold"]),
            train_median=float(meta["training_median"]),
            n_patches=int(meta["n_patches"]),
            n_bags=int(meta["n_bags"]),
        )
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for corrupt files
        import logging

        logging.getLogger(__name__).warning("%s: unreadable feature summary (%s)", folder, err)
        return None
