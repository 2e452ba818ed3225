"""Classification baselines trained on the same features and split as a PathM3 run: gated-attention ABMIL
(Ilse et al. 2018) and a mean-pool linear model. The verdict (:mod:`.verdict_baselines`) and the benchmark
suite (``benchmarks/bench_families.py``) measure the model against them.

Both take bags as ``(features (n, d) float32, class index)`` pairs and choose their free setting (ABMIL's
epoch, the linear model's weight decay) on the validation bags only; both are deterministic per seed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

Bags = Sequence[tuple[np.ndarray, int]]


@dataclass(frozen=True, kw_only=True)
class AbmilConfig:
    """Gated-attention ABMIL: instance MLP d -> ``hidden`` -> ``embed``, gated attention ``embed`` ->
    ``attention``, linear classifier; Adam, one bag per step (as in Ilse et al.)."""

    hidden: int = 128
    embed: int = 64
    attention: int = 32
    lr: float = 5e-4
    weight_decay: float = 1e-4
    epochs: int = 20
    seed: int = 0
    max_patches: int = 4096  # a bag's patches beyond this are subsampled (bounded cost on large slides)


@dataclass(frozen=True)
class BaselineFit:
    """A fitted baseline: its validation accuracy at the chosen setting and how to predict."""

    name: str
    val_accuracy: float
    chosen: str  # the setting picked on validation, in words
    seconds: float
    predict: object  # callable: bags' features -> predicted class indices (np.ndarray)


def _cap(x: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= limit else x[np.sort(rng.choice(len(x), limit, replace=False))]


@contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread while a baseline trains: its ops are tiny, and more threads only add overhead
    (on a loaded 2-core machine, many times so)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_abmil(train: Bags, val: Bags, *, num_classes: int, config: AbmilConfig | None = None) -> BaselineFit:
    """Train gated-attention ABMIL on ``train``; keep the epoch with the best ``val`` accuracy."""
    with _one_thread():
        return _fit_abmil(train, val, num_classes=num_classes, config=config)


def _fit_abmil(train: Bags, val: Bags, *, num_classes: int, config: AbmilConfig | None) -> BaselineFit:
    import torch
    from torch import nn

    cfg = config or AbmilConfig()
    if not train or not val:
        raise ValueError("ABMIL needs training and validation bags")
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    d = int(train[0][0].shape[1])

    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Sequential(
                nn.Linear(d, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.embed), nn.ReLU()
            )
            self.v = nn.Sequential(nn.Linear(cfg.embed, cfg.attention), nn.Tanh())
            self.u = nn.Sequential(nn.Linear(cfg.embed, cfg.attention), nn.Sigmoid())
            self.w = nn.Linear(cfg.attention, 1)
            self.cls = nn.Linear(cfg.embed, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, d) -> (classes,)
            h = self.embed(x)
            a = torch.softmax(self.w(self.v(h) * self.u(h)).squeeze(-1), dim=0)
            return self.cls(a @ h)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        net = Gated()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    tr = [(torch.from_numpy(_cap(np.asarray(f, np.float32), cfg.max_patches, rng)), y) for f, y in train]
    val_x = [np.asarray(f, np.float32) for f, _ in val]
    val_y = np.asarray([y for _, y in val])

    def predict(bags: Sequence[np.ndarray]) -> np.ndarray:
        net.eval()
        with torch.no_grad(), _one_thread():
            out = [
                int(net(torch.from_numpy(_cap(np.asarray(f, np.float32), cfg.max_patches, rng))).argmax())
                for f in bags
            ]
        net.train()
        return np.asarray(out, np.int64)

    best, best_epoch, best_state = -1.0, 0, None
    for epoch in range(1, cfg.epochs + 1):
        for i in rng.permutation(len(tr)):
            x, y = tr[i]
            loss = nn.functional.cross_entropy(net(x)[None], torch.tensor([y]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = float((predict(val_x) == val_y).mean())
        if acc > best:
            best, best_epoch = acc, epoch
            best_state = {k: t.clone() for k, t in net.state_dict().items()}
    if best_state is not None:  # None only when no epoch ran (epochs >= 1 is checked)
        net.load_state_dict(best_state)
    return BaselineFit(
        "abmil", best, f"epoch {best_epoch} of {cfg.epochs}", time.perf_counter() - t0, predict
    )


def _fit_linear(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, seed: int
) -> torch.nn.Linear:
    """Full-batch L-BFGS fit of a linear softmax classifier with an L2 penalty."""
    import torch

    torch.manual_seed(seed)
    lin = torch.nn.Linear(x.shape[1], num_classes, dtype=torch.float64)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(x), y) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def fit_mean_pool_linear(
    train: Bags,
    val: Bags,
    *,
    num_classes: int,
    seed: int = 0,
    weight_decays: Sequence[float] = (1e-4, 1e-2, 1.0),
) -> BaselineFit:
    """Multinomial logistic regression on standardised bag-mean features (full-batch L-BFGS); the weight
    decay with the best ``val`` accuracy is kept."""
    if not weight_decays or not train or not val:
        raise ValueError("the mean-pool linear model needs weight decays, training and validation bags")
    with _one_thread():
        return _fit_mean_pool_linear(
            train, val, num_classes=num_classes, seed=seed, weight_decays=weight_decays
        )


def _fit_mean_pool_linear(
    train: Bags, val: Bags, *, num_classes: int, seed: int, weight_decays: Sequence[float]
) -> BaselineFit:
    import torch

    t0 = time.perf_counter()
    xtr = np.stack([np.asarray(f, np.float64).mean(0) for f, _ in train])
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    ytr = torch.as_tensor([y for _, y in train])
    val_y = np.asarray([y for _, y in val])

    def pooled(bags: Sequence[np.ndarray]) -> torch.Tensor:
        x = np.stack([np.asarray(f, np.float64).mean(0) for f in bags])
        return torch.from_numpy((x - mu) / sd)

    xt = pooled([f for f, _ in train])
    xv = pooled([f for f, _ in val])
    best: tuple[float, float, torch.nn.Linear | None] = (-1.0, 0.0, None)
    for wd in weight_decays:
        lin = _fit_linear(xt, ytr, num_classes, wd, seed)
        with torch.no_grad():
            acc = float((lin(xv).argmax(1).numpy() == val_y).mean())
        if acc > best[0]:
            best = (acc, wd, lin)
    acc, wd, chosen = best
    if chosen is None:  # fit_mean_pool_linear refuses an empty weight_decays
        raise ValueError("no weight decay was tried")

    def predict(bags: Sequence[np.ndarray]) -> np.ndarray:
        with torch.no_grad(), _one_thread():
            return chosen(pooled(bags)).argmax(1).numpy().astype(np.int64)

    return BaselineFit("mean_pool_linear", acc, f"weight decay {wd:g}", time.perf_counter() - t0, predict)
