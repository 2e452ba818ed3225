"""The trainer: it learns, checkpoints, resumes exactly, and reports progress/cancels."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from napari_pathm3._types import CancelFlag
from napari_pathm3.config import AdamWConfig, PathM3Config, TrainConfig
from napari_pathm3.errors import Cancelled
from napari_pathm3.training.loop import lr_at, train


def tiny(**kw):
    optim = AdamWConfig(lr=3e-3, warmup_lr=1e-4, warmup_steps=1000, batch_size=kw.pop("batch_size", 8))
    return PathM3Config.tiny(feature_dim=16, optim=optim, **kw)


def test_lr_schedule_warmup_then_cosine():
    kw = dict(lr=1e-4, warmup_lr=1e-5, warmup=10, total=110, min_lr=0.0)
    assert lr_at(0, **kw) == pytest.approx(1e-5)
    assert lr_at(5, **kw) == pytest.approx(5.5e-5)
    assert lr_at(10, **kw) == pytest.approx(1e-4)
    assert lr_at(60, **kw) == pytest.approx(5e-5)
    assert lr_at(110, **kw) == pytest.approx(0.0)


def test_learns_synthetic_task(tmp_path, bag_factory):
    train_bags, val_bags = bag_factory(24, seed=0), bag_factory(12, seed=1)
    seen = []
    cfg = TrainConfig(epochs=8, patience=None, device="cpu", alpha=1.0, val_metric="loss")
    res = train(
        tiny(),
        train_bags,
        val_bags,
        cfg,
        out_dir=tmp_path,
        metrics_callback=seen.append,
        progress=lambda *a: None,
    )
    first, best = res.history[0], min(h["val_loss"] for h in res.history)
    assert best < 0.6 * first["val_loss"]
    assert max(h["val_accuracy"] for h in res.history[-3:]) >= 0.9
    assert len(seen) == 8 and seen[0]["epoch"] == 1
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert len(rows) == 8 and "val_accuracy" in rows[0] and "train_loss" in rows[0]
    assert (tmp_path / "best" / "model.safetensors").is_file()
    assert res.best_epoch == int(np.argmin([h["val_loss"] for h in res.history])) + 1
    state = json.loads((tmp_path / "last" / "trainer_state.json").read_text())
    assert state["step"] == res.step == 3 * 8  # 24 bags / 8 per step x 8 epochs
    # warm-up capped at 10 % of 24 steps (2 steps), then cosine from lr
    assert res.history[0]["lr"] == pytest.approx(
        lr_at(2, lr=3e-3, warmup_lr=1e-4, warmup=2, total=24, min_lr=0)
    )


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_continues_exactly(tmp_path, bag_factory):
    """Cancelled after epoch 1 and resumed == uninterrupted (weights, optimiser state, step, history)."""
    tr, va = bag_factory(8, seed=0), bag_factory(2, seed=1)
    cfg = TrainConfig(epochs=2, patience=None, device="cpu", alpha=1.0, batch_size=4, grad_accum_steps=2)
    model_cfg = tiny(batch_size=4)
    full = train(model_cfg, tr, va, cfg, out_dir=tmp_path / "full")

    flag = CancelFlag()

    def stop_after_one(rec):
        if rec["epoch"] == 1:
            flag.set()

    with pytest.raises(Cancelled, match="resume"):
        train(model_cfg, tr, va, cfg, out_dir=tmp_path / "cut", metrics_callback=stop_after_one, cancel=flag)
    saved = json.loads((tmp_path / "cut" / "last" / "trainer_state.json").read_text())
    assert saved["epoch"] == 1 and saved["step"] == 2
    resumed = train(model_cfg, tr, va, cfg, out_dir=tmp_path / "cut", resume=True)
    assert resumed.step == full.step == 4
    assert [h["train_loss"] for h in resumed.history] == pytest.approx(
        [h["train_loss"] for h in full.history]
    )
    a, b = _weights(full.model), _weights(resumed.model)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    from safetensors.torch import load_file

    sa = load_file(str(tmp_path / "full" / "last" / "trainer_state.safetensors"))
    sb = load_file(str(tmp_path / "cut" / "last" / "trainer_state.safetensors"))
    assert sa.keys() == sb.keys()
    assert all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6) for k in sa if k.startswith("optim."))


@pytest.mark.parametrize("mode", ["image_text", "text"])
def test_text_modes_train_and_reload(tmp_path, bag_factory, mode):
    from napari_pathm3.model import PathM3Model

    tr = bag_factory(4, seed=0)
    res = train(tiny(), tr, tr, TrainConfig(epochs=1, device="cpu", mode=mode), out_dir=tmp_path)
    assert np.isfinite(res.history[0]["train_loss_caption"])
    m = PathM3Model.from_pretrained(res.best_dir)
    assert m.config.mode == mode


def test_bad_batch_geometry(tmp_path, bag_factory):
    with pytest.raises(ValueError, match="divisible"):
        train(
            tiny(),
            bag_factory(4, seed=0),
            None,
            TrainConfig(epochs=1, batch_size=3, grad_accum_steps=2, device="cpu"),
            out_dir=tmp_path,
        )
