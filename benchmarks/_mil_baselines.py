"""Baselines of bench_mil: mean-pool + logistic regression, gated-attention ABMIL (Ilse et al. 2018, small,
torch), the constant most-frequent caption and the class-conditioned caption."""

from __future__ import annotations

from collections import Counter

import numpy as np


def mean_pool_logreg(train, val, test, train_y, val_y, test_y) -> float:
    """Test accuracy of a logistic regression on bag-mean features (C chosen on validation)."""
    from sklearn.linear_model import LogisticRegression

    def pool(bags):
        return np.stack([f.mean(0) for f in bags])

    xtr, xva, xte = pool(train), pool(val), pool(test)
    best, best_c = -1.0, 1.0
    for c in (0.1, 1.0, 10.0, 100.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(xtr, train_y)
        acc = float((clf.predict(xva) == val_y).mean())
        if acc > best:
            best, best_c = acc, c
    clf = LogisticRegression(C=best_c, max_iter=2000).fit(xtr, train_y)
    return float((clf.predict(xte) == test_y).mean())


def abmil(train, val, test, train_y, val_y, test_y, *, classes: int, seed: int, epochs: int = 60) -> float:
    """Test accuracy of gated-attention ABMIL (instance MLP 64->128->64, gated attention 64->32, linear
    classifier; Adam lr 5e-4, weight decay 1e-4, one bag per step as in Ilse et al.), epoch chosen on validation."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    d = train[0].shape[1]

    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
            self.v = nn.Sequential(nn.Linear(64, 32), nn.Tanh())
            self.u = nn.Sequential(nn.Linear(64, 32), nn.Sigmoid())
            self.w = nn.Linear(32, 1)
            self.cls = nn.Linear(64, classes)

        def forward(self, x):  # (n, d) -> (classes,)
            h = self.embed(x)
            a = torch.softmax(self.w(self.v(h) * self.u(h)).squeeze(-1), dim=0)
            return self.cls(a @ h)

    net = Gated()
    opt = torch.optim.Adam(net.parameters(), lr=5e-4, weight_decay=1e-4, betas=(0.9, 0.999))
    tr = [torch.from_numpy(f) for f in train]
    ytr = torch.as_tensor(train_y)
    rng = np.random.default_rng(seed)

    def acc(bags, ys) -> float:
        net.eval()
        with torch.no_grad():
            pred = [int(net(torch.from_numpy(f)).argmax()) for f in bags]
        net.train()
        return float((np.asarray(pred) == np.asarray(ys)).mean())

    best_val, best_state = -1.0, None
    for _ in range(epochs):
        for i in rng.permutation(len(tr)):
            loss = nn.functional.cross_entropy(net(tr[i])[None], ytr[i : i + 1])
            opt.zero_grad()
            loss.backward()
            opt.step()
        v = acc(val, val_y)
        if v > best_val:
            best_val, best_state = v, {k: t.clone() for k, t in net.state_dict().items()}
    net.load_state_dict(best_state)
    return acc(test, test_y)


def constant_caption(train_caps: list[str]) -> str:
    return Counter(train_caps).most_common(1)[0][0]


def class_captions(train_caps: list[str], train_labels: list[str]) -> dict[str, str]:
    """Most frequent training caption of each class."""
    by: dict[str, Counter] = {}
    for c, lab in zip(train_caps, train_labels, strict=True):
        by.setdefault(lab, Counter())[c] += 1
    return {lab: cnt.most_common(1)[0][0] for lab, cnt in by.items()}
