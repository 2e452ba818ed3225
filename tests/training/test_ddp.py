"""DDP smoke test: two CPU processes (gloo) train to the same losses and weights as one process."""

from __future__ import annotations

import os
import socket

import pytest
import torch

from napari_pathm3.config import AdamWConfig, PathM3Config, TrainConfig

from .conftest import make_bags

pytestmark = [
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable"),
    pytest.mark.slow,  # three model builds in three processes: ~20 s on 2 cores
]


def _model():
    from napari_pathm3.model import build_model

    torch.manual_seed(0)
    optim = AdamWConfig(lr=3e-3, warmup_lr=1e-4, warmup_steps=2, batch_size=4)
    model = build_model(PathM3Config.tiny(feature_dim=16, optim=optim, alpha=0.5))
    for m in model.modules():  # the scratch T5 has dropout: ranks would draw different masks
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "dropout", None), float):  # T5Attention: functional dropout
            m.dropout = 0.0
    return model


def _data():
    # equal bag sizes (no padding) and equal caption lengths: per-rank means average to the global mean
    return make_bags(8, seed=0, sizes=(6, 6)), make_bags(4, seed=1, sizes=(6, 6))


CFG = TrainConfig(epochs=1, patience=None, device="cpu", seed=3)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from napari_pathm3.training.loop import train

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    tr, va = _data()
    train(_model(), tr, va, CFG, out_dir=out_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path, monkeypatch):
    import json

    from napari_pathm3.model.checkpoint import load_tensors
    from napari_pathm3.training.loop import train

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    tr, va = _data()
    single = train(_model(), tr, va, CFG, out_dir=tmp_path / "one")
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two")), nprocs=2, join=True)

    state = json.loads((tmp_path / "two" / "last" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == single.step == 2
    two = state["history"]
    for a, b in zip(single.history, two, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        assert a["val_accuracy"] == b["val_accuracy"]
    w1, w2 = load_tensors(tmp_path / "one" / "last"), load_tensors(tmp_path / "two" / "last")
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)
    assert not (tmp_path / "two" / ".last.tmp").exists()
