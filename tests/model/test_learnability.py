"""Learnability on a synthetic multiple-instance task (about a CPU-minute).

Each bag holds 40-120 distractor patches (N(0, 1) features) and a few key patches: 4 of its class prototype
(the bag label) and, in half the bags, 3 of a "mucin" prototype. The caption is templated from that content,
so the model must find the key patches to classify and to caption. The Q-Former runs in ``mode="image"``:
in this toy task the caption names the class, so feeding captions as Q-Former text (``"image_text"``)
would let training shortcut through the text.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from napari_pathm3.config import PathM3Config
from napari_pathm3.model import build_model

CLASSES = ("well", "moderately", "poorly")
PHRASES = (
    "well differentiated tubular adenocarcinoma with regular glands",
    "moderately differentiated tubular adenocarcinoma with fused glands",
    "poorly differentiated adenocarcinoma with solid sheets of cells",
)
DIM = 16


def make_bags(num: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    protos = torch.eye(DIM)[:4] * 4.0  # classes 0-2 and "mucin"
    feats, labels, captions = [], [], []
    for _ in range(num):
        label = int(torch.randint(3, (1,), generator=g))
        mucin = bool(torch.rand(1, generator=g) < 0.5)
        n = int(torch.randint(40, 121, (1,), generator=g))
        x = torch.randn(n, DIM, generator=g)
        keys = [protos[label]] * 4 + ([protos[3]] * 3 if mucin else [])
        pos = torch.randperm(n, generator=g)[: len(keys)]
        x[pos] = torch.stack(keys) + 0.3 * torch.randn(len(keys), DIM, generator=g)
        feats.append(x)
        labels.append(label)
        captions.append(f"{PHRASES[label]} {'and extracellular mucin' if mucin else 'without mucin'}")
    return feats, torch.tensor(labels), captions


def collate(feats: list[torch.Tensor]):
    n = max(len(f) for f in feats)
    x = torch.zeros(len(feats), n, DIM)
    mask = torch.zeros(len(feats), n, dtype=torch.bool)
    for i, f in enumerate(feats):
        x[i, : len(f)] = f
        mask[i, : len(f)] = True
    return x, mask


def bleu4(references: list[str], hypotheses: list[str]) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    refs = [[r.lower().split()] for r in references]
    hyps = [h.lower().split() for h in hypotheses]
    return corpus_bleu(refs, hyps, smoothing_function=SmoothingFunction().method1)


@pytest.mark.slow
def test_learns_synthetic_mil_classification_and_captioning():
    pytest.importorskip("nltk")
    torch.manual_seed(0)
    cfg = PathM3Config.tiny(feature_dim=DIM, class_names=CLASSES, mode="image", alpha=0.5)
    cfg = dataclasses.replace(cfg, language=dataclasses.replace(cfg.language, max_caption_tokens=20))
    model = build_model(cfg)
    train_x, train_y, train_c = make_bags(192, seed=1)
    test_x, test_y, test_c = make_bags(60, seed=2)
    opt = torch.optim.AdamW(model.optimizer_param_groups(), lr=5e-3, betas=cfg.optim.betas)
    batch, steps, step = 8, 160, 0  # ~0.35 s/step on 2 free CPU cores: about a CPU-minute
    model.train()
    while step < steps:
        order = torch.randperm(len(train_x))
        for s in range(0, len(order), batch):
            idx = order[s : s + batch].tolist()
            x, mask = collate([train_x[i] for i in idx])
            out = model(x, mask, captions=[train_c[i] for i in idx], labels=train_y[idx])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            step += 1
    model.eval()
    x, mask = collate(test_x)
    accuracy = (model.classify(x, mask).probabilities.argmax(-1) == test_y).float().mean().item()
    captions = model.generate_captions(x, mask)
    most_common = max(set(train_c), key=train_c.count)
    model_bleu, constant_bleu = bleu4(test_c, captions), bleu4(test_c, [most_common] * len(test_c))
    print(f"steps={step} acc={accuracy:.3f} bleu4={model_bleu:.3f} constant={constant_bleu:.3f}")
    assert accuracy >= 0.8  # chance: 1/3
    assert model_bleu >= constant_bleu + 0.25
