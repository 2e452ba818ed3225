"""Restarts chosen on validation: train R models from different initialisations, keep the best.

Whether a small cohort's run learns a rule can depend on the initialisation (issue 21: on two seeds of three the
classification loss stalled for 10+ epochs on the same bags another seed learned). R complete runs (seeds
``seed + 1000·r``) into ``out/restart<r>``; the one whose best validation metric (``config.val_metric``, the
metric that already chooses the best epoch) is best is copied to ``out/best`` and ``out/last``. The test split
is never read. Cost: R runs (early stopping ends most sooner than ``epochs``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from .._types import PathLike
from ..config import TrainConfig
from ..jsonfile import finite_or_null, write_json_atomic

__all__ = ["RESTART_SEED_STEP", "choose_restart", "train_with_restarts"]

log = logging.getLogger(__name__)

#: seed offset between restarts (far from the next benchmark seed)
RESTART_SEED_STEP = 1000


def choose_restart(metrics: list[float], metric: str) -> int:
    """Index of the best run by ``metric`` (lower is better for losses); non-finite values never win; ties
    keep the earlier run."""
    from .loop import LOWER_IS_BETTER

    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    scored = [(sign * m if math.isfinite(m) else math.inf, i) for i, m in enumerate(metrics)]
    return min(scored)[1]


def train_with_restarts(
    model_config: Any,
    train_set: Any,
    val_set: Any,
    config: TrainConfig,
    *,
    restarts: int,
    out_dir: PathLike,
    **train_kwargs: Any,
) -> Any:
    """:func:`~napari_pathm3.training.loop.train` ``restarts`` times; returns the chosen run's ``TrainResult``
    with ``best_dir``/``last_dir`` under ``out_dir`` and ``restarts`` (every run's metric) in its verdict."""
    from ..model.pathm3 import PathM3Model
    from .loop import train

    if restarts < 1:
        raise ValueError(f"restarts: must be >= 1, got {restarts}")
    out = Path(out_dir)
    if restarts == 1:
        return train(model_config, train_set, val_set, config, out_dir=out, **train_kwargs)
    if isinstance(model_config, PathM3Model):
        raise ValueError(
            "restarts start new models: pass a PathM3Config, not a model (fine-tuning runs once)"
        )
    if not val_set:
        raise ValueError("restarts are chosen on the validation split: give validation bags")
    results = []
    for r in range(restarts):
        cfg = dataclasses.replace(config, seed=config.seed + RESTART_SEED_STEP * r)
        results.append(
            train(model_config, train_set, val_set, cfg, out_dir=out / f"restart{r}", **train_kwargs)
        )
        log.info("restart %d/%d: best %s %.4g", r + 1, restarts, config.val_metric, results[-1].best_metric)
    chosen = choose_restart([res.best_metric for res in results], config.val_metric)
    best = results[chosen]
    for name, src in (("best", best.best_dir), ("last", best.last_dir)):
        shutil.rmtree(out / name, ignore_errors=True)
        shutil.copytree(src, out / name)
    record = {
        "val_metric": config.val_metric,
        "chosen": chosen,
        "seeds": [config.seed + RESTART_SEED_STEP * r for r in range(restarts)],
        "best_metrics": [res.best_metric for res in results],
    }
    write_json_atomic(out / "restarts.json", finite_or_null(record))  # a run that never improved: null
    if (Path(best.out_dir) / "log.csv").exists():
        shutil.copy(Path(best.out_dir) / "log.csv", out / "log.csv")
    return dataclasses.replace(
        best,
        out_dir=out,
        best_dir=out / "best",
        last_dir=out / "last",
        verdict={**best.verdict, "restarts": record},
    )
