"""Restarts chosen on validation (training/restarts.py)."""

from __future__ import annotations

import json
import math

import pytest

from napari_pathm3.config import AdamWConfig, PathM3Config, TrainConfig
from napari_pathm3.training.restarts import RESTART_SEED_STEP, choose_restart, train_with_restarts


def test_choose_restart_by_metric_direction() -> None:
    assert choose_restart([0.4, 0.7, 0.6], "combined") == 1  # higher is better
    assert choose_restart([0.4, 0.7, 0.3], "loss") == 2  # lower is better
    assert choose_restart([math.nan, 0.1], "combined") == 1  # NaN never wins
    assert choose_restart([0.5, 0.5], "accuracy") == 0  # ties keep the first


def test_restarts_keep_the_best_on_validation(tmp_path, bag_factory) -> None:
    from napari_pathm3.model import PathM3Model

    tr, va = bag_factory(4, seed=0), bag_factory(4, seed=1)
    cfg = PathM3Config.tiny(feature_dim=16, optim=AdamWConfig(lr=3e-3, batch_size=4))
    res = train_with_restarts(
        cfg, tr, va, TrainConfig(epochs=1, device="cpu", seed=3), restarts=2, out_dir=tmp_path
    )
    record = json.loads((tmp_path / "restarts.json").read_text())
    assert record["seeds"] == [3, 3 + RESTART_SEED_STEP]
    assert record["chosen"] == choose_restart(record["best_metrics"], "combined")
    assert res.best_dir == tmp_path / "best" and res.verdict["restarts"] == record
    assert (tmp_path / "restart0" / "best").is_dir() and (tmp_path / "restart1" / "best").is_dir()
    PathM3Model.from_pretrained(tmp_path / "best")  # a whole checkpoint was copied
    with pytest.raises(ValueError, match="validation"):
        train_with_restarts(cfg, tr, None, TrainConfig(epochs=1), restarts=2, out_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="restarts"):
        train_with_restarts(cfg, tr, va, TrainConfig(epochs=1), restarts=0, out_dir=tmp_path / "y")
