"""Diagnostics of a trained PathM3 model on bench_mil bags: what the captions get right phrase by phrase,
whether the image-only query outputs encode each caption fact (linear probes), and whether the LM reads the
prefix (caption loss with each bag's own prefix against another bag's).

Used by ``bench_mil_ablation.py``; every figure is computed from the model, nothing is assumed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: caption facts of ``_mil_data.caption_of``: name -> function of the digits
FACTS = {
    "threes": lambda d: min(d.count(3), 2),  # 0 / one / several
    "sevens": lambda d: min(d.count(7), 2),
    "zeros": lambda d: int(0 in d),
}


def phrase_accuracy(refs: list[str], gens: list[str]) -> dict[str, float]:
    """Share of bags whose generated caption has the reference's phrase for each fact (split on " . ")."""
    out = {}
    for i, name in enumerate(FACTS):
        hits = []
        for r, g in zip(refs, gens, strict=True):
            rp, gp = r.split(" . "), g.split(" . ")
            hits.append(len(gp) > i and gp[i].strip(" .") == rp[i].strip(" ."))
        out[name] = float(np.mean(hits))
    return out


def _queries(model: Any, bags: list[Any]) -> np.ndarray:
    """Image-only query outputs, (bags, q * H), one bag at a time (eval mode)."""
    import torch

    rows = []
    model.eval()
    with torch.no_grad():
        for b in bags:
            x = torch.from_numpy(b.features)[None]
            mask = torch.ones(1, len(b), dtype=torch.bool)
            patches = model.correlation(x, mask)
            rows.append(model.qformer(patches, mask, need_weights=False).query_output.reshape(-1).numpy())
    return np.stack(rows)


def probes(model: Any, train: list[Any], test: list[Any], train_digits: list, test_digits: list) -> dict:
    """Logistic-regression probe accuracy (fit on training bags, scored on test bags) for each caption fact
    from the image-only query outputs, with the test base rate (most frequent value) beside it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xtr, xte = _queries(model, train), _queries(model, test)
    scaler = StandardScaler().fit(xtr)
    xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    out = {}
    for name, fact in FACTS.items():
        ytr = np.asarray([fact(d) for d in train_digits])
        yte = np.asarray([fact(d) for d in test_digits])
        clf = LogisticRegression(C=1.0, max_iter=3000).fit(xtr, ytr)
        base = float(np.bincount(yte).max() / len(yte))
        out[name] = {"probe": float((clf.predict(xte) == yte).mean()), "base_rate": base}
    return out


def prefix_use(model: Any, bags: list[Any], *, batch: int = 16, seed: int = 0) -> dict[str, float]:
    """Caption loss (nats/token) with each bag's own query prefix and with a shuffled bag's prefix, and the
    prefix's spread across bags (per-dimension std over bags / mean absolute value)."""
    import torch

    from napari_pathm3.model.language import caption_loss
    from napari_pathm3.training.data import collate_bags

    rng = np.random.default_rng(seed)
    lang = model.config.language
    own, shuf, prefixes = [], [], []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(bags), batch):
            bt = collate_bags(bags[s : s + batch])
            patches = model.correlation(bt.features, bt.mask)
            prefix = model.language_projection(
                model.qformer(patches, bt.mask, need_weights=False).query_output
            )
            caps = [str(c) for c in bt.captions]
            prefixes.append(prefix.reshape(len(caps), -1))
            perm = torch.as_tensor(rng.permutation(len(caps)))
            for store, p in ((own, prefix), (shuf, prefix[perm])):
                store.append(
                    float(
                        caption_loss(
                            model.language_model,
                            model.lm_tokenizer,
                            lang.kind,
                            p,
                            caps,
                            prompt=lang.prompt,
                            max_tokens=lang.max_caption_tokens,
                        )
                    )
                )
    p = torch.cat(prefixes)  # (bags, q * H)
    spread = float(p.std(dim=0).mean() / p.abs().mean())  # how much the prefix differs between bags
    return {
        "own_prefix": float(np.mean(own)),
        "shuffled_prefix": float(np.mean(shuf)),
        "prefix_spread": spread,
    }


def grad_norms(model: Any, bags: list[Any]) -> dict[str, dict[str, float]]:
    """Gradient norm per module of the classification loss and of the caption loss, on one batch of
    ``bags`` in training mode (each loss on its own; the weights are not changed)."""
    from napari_pathm3.training.data import collate_bags
    from napari_pathm3.training.evaluate import model_inputs

    modules = {
        "query_tokens": lambda n: n.endswith("query_tokens"),
        "crossattention": lambda n: ".crossattention." in n,
        "qformer_other": lambda n: (
            n.startswith("qformer.") and ".crossattention." not in n and "query_tokens" not in n
        ),
        "correlation": lambda n: n.startswith("correlation."),
        "language_projection": lambda n: n.startswith("language_projection."),
        "classifier": lambda n: n.startswith("classifier."),
    }
    batch = collate_bags(bags)
    model.train()
    out: dict[str, dict[str, float]] = {}
    for key in ("loss_cls", "loss_caption", "loss_itc"):
        model.zero_grad(set_to_none=True)
        outp = model(**model_inputs(batch, model.config.mode, model.config.alpha, device="cpu"))
        if getattr(outp, key, None) is None:
            continue
        getattr(outp, key).backward()
        norms = {}
        for mod, match in modules.items():
            sq = [
                float(p.grad.pow(2).sum())
                for n, p in model.named_parameters()
                if match(n) and p.grad is not None
            ]
            norms[mod] = float(np.sqrt(sum(sq))) if sq else 0.0
        out[key] = norms
    model.zero_grad(set_to_none=True)
    model.eval()
    return out
