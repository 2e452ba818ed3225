"""The paper's PatchGastric protocol behind one entry point (:func:`run_patchgastric`).

PathM3 §4.1: the three main subtypes of PatchGastric (well / moderately differentiated tubular
adenocarcinoma, poorly differentiated adenocarcinoma = its solid and non-solid types together: 283 / 265 / 145
= 693 slides), random 20 / 40 / 40 % train / val / test splits (stratified by class here; the paper does not
say), three seeds, mean ± std. Classification accuracy is reported for a model trained and tested with images
only and for one trained and tested with images and captions (Table 1); captioning metrics come from the full
(image+text, multi-task) model, whose captions are generated from the images only (Table 2).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._types import CancelToken, PathLike, ProgressFn
from ..errors import PathM3Error
from .data import BagRecord, read_manifest

log = logging.getLogger(__name__)

PATCHGASTRIC_CLASSES = (
    "well differentiated tubular adenocarcinoma",
    "moderately differentiated tubular adenocarcinoma",
    "poorly differentiated adenocarcinoma",
)
# subtype string in captions.csv (lower-case) -> class of the 3-class subset; every other subtype (papillary,
# signet ring, mixed "well to moderately", ...) is left out, like in the paper (and CITE)
PATCHGASTRIC_SUBTYPES = {
    "well differentiated tubular adenocarcinoma": 0,
    "moderately differentiated tubular adenocarcinoma": 1,
    "poorly differentiated adenocarcinoma, solid type": 2,
    "poorly differentiated adenocarcinoma, non-solid type": 2,
}
SPLIT_FRACTIONS = (0.2, 0.4, 0.4)  # §4.1: train 20 %, validation 40 %, test 40 %
SEEDS = (0, 1, 2)  # §4.2: "three times with different random seeds"


def patchgastric_subset(captions_csv: PathLike) -> list[BagRecord]:
    """The 693 slides of the paper's 3-class subset, labelled with :data:`PATCHGASTRIC_CLASSES` names."""
    out = []
    for r in read_manifest(captions_csv):
        cls = PATCHGASTRIC_SUBTYPES.get((r.label or "").strip().lower())
        if cls is not None:
            out.append(dataclasses.replace(r, label=PATCHGASTRIC_CLASSES[cls], split=None))
    if not out:
        raise PathM3Error(
            f"{captions_csv}: no slide of the three PatchGastric subtypes (is it captions.csv?)"
        )
    return out


def stratified_split(
    labels: Sequence[int | str], *, fractions: Sequence[float] = SPLIT_FRACTIONS, seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Disjoint index arrays, one per fraction, with each class split in the same proportions.

    Per class, the counts are ``floor(n_c * f)`` plus the largest remainders (so they add up to ``n_c``);
    the order inside a class is a permutation drawn from ``numpy.random.default_rng(seed)``.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions: must be non-negative and sum to 1, got {list(fractions)}")
    labels_arr = np.asarray([str(x) for x in labels])
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in f]
    for cls in sorted(set(labels_arr.tolist())):
        idx = np.flatnonzero(labels_arr == cls)
        idx = idx[rng.permutation(idx.size)]
        exact = idx.size * f
        counts = np.floor(exact).astype(int)
        for j in np.argsort(-(exact - counts), kind="stable")[: idx.size - counts.sum()]:
            counts[j] += 1
        start = 0
        for p, c in zip(parts, counts, strict=True):
            p.extend(idx[start : start + c].tolist())
            start += c
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


def patchgastric_splits(captions_csv: PathLike, *, seed: int) -> dict[str, list[BagRecord]]:
    """``{"train", "val", "test"}`` records of the 3-class subset for one seed."""
    records = patchgastric_subset(captions_csv)
    tr, va, te = stratified_split([r.label for r in records], seed=seed)  # type: ignore[misc]
    return {name: [records[i] for i in idx] for name, idx in (("train", tr), ("val", va), ("test", te))}


# --------------------------------------------------------------------------------------------- running it

TABLE_ROWS = (
    ("image only accuracy (%)", "image", "accuracy", 100.0),
    ("image & text accuracy (%)", "image_text", "accuracy", 100.0),
    ("BLEU@4", "captions", "bleu_4", 1.0),
    ("METEOR (exact)", "captions", "meteor", 1.0),
    ("ROUGE-L", "captions", "rouge_l", 1.0),
    ("CIDEr-D", "captions", "cider", 1.0),
)


@dataclass
class ProtocolResult:
    """Per-seed test metrics of each trained mode and their mean ± std."""

    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # mode -> one dict per seed
    summary: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    def table(self) -> str:
        """The paper's layout (Tables 1 and 2) as plain text."""
        lines = [f"{'metric':<28}{'mean ± std':>20}"]
        for title, mode, key, scale in TABLE_ROWS:
            mean, std = self.summary.get(mode, {}).get(key, (float("nan"), float("nan")))
            lines.append(
                f"{title:<28}{f'{mean * scale:.2f} ± {std * scale:.2f}' if scale != 1 else f'{mean:.3f} ± {std:.3f}':>20}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "summary": self.summary}


def run_patchgastric(
    features_dir: PathLike,
    *,
    out_dir: PathLike,
    captions_csv: PathLike,
    model_config: Any,
    train_config: Any,
    seeds: Sequence[int] = SEEDS,
    modes: Sequence[str] = ("image", "image_text"),
    generate: bool = True,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> ProtocolResult:
    """Train and test PathM3 on PatchGastric as in the paper, for every seed and classification mode.

    Args:
        features_dir: one feature store/file per slide, named by the slide id of ``captions.csv``.
        out_dir: gets ``seed<k>/<mode>/`` training runs, ``results.json`` and ``table.txt``.
        captions_csv: PatchGastric ``captions.csv``.
        model_config: a ``PathM3Config``; its ``class_names`` are replaced by the three subtypes.
        train_config: a ``TrainConfig``; its ``seed`` is replaced by each protocol seed.
        seeds: the random seeds (split and training).
        modes: classification modes to train (``"image"``, ``"image_text"``, ``"text"``).
        generate: generate test captions with the ``image_text`` model (or the last mode) for caption metrics.

    Returns:
        The per-seed metrics and their mean ± std; ``result.table()`` prints the paper's layout.
    """
    from .evaluate import evaluate_model
    from .loop import train
    from .metrics import mean_std

    out = Path(out_dir)
    model_config = dataclasses.replace(model_config, class_names=PATCHGASTRIC_CLASSES)
    result = ProtocolResult()
    caption_mode = "image_text" if "image_text" in modes else modes[-1]
    for seed in seeds:
        splits = patchgastric_splits(captions_csv, seed=seed)
        for mode in modes:
            run_dir = out / f"seed{seed}" / mode
            cfg = dataclasses.replace(train_config, seed=seed, mode=mode)
            log.info("protocol: seed %d, mode %s -> %s", seed, mode, run_dir)
            res = train(model_config, splits["train"], splits["val"], cfg, out_dir=run_dir,
                        features_dir=features_dir, progress=progress, cancel=cancel)  # fmt: skip
            metrics = evaluate_model(
                res.best_dir, splits["test"], features_dir=features_dir, mode=mode,
                generate=generate and mode == caption_mode, device=cfg.device, cancel=cancel,
            )  # fmt: skip
            metrics["seed"] = seed
            result.runs.setdefault(mode, []).append(metrics)
            if mode == caption_mode and generate:
                result.runs.setdefault("captions", []).append(metrics)
    result.summary = {mode: mean_std(runs) for mode, runs in result.runs.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    (out / "table.txt").write_text(result.table() + "\n")
    return result
