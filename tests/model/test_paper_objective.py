"""The ``paper`` preset trains the paper's objective: eq. (4) with eq. (3)'s L_C from the text-conditioned pass
only and no contrastive term; Table 6's decay and warm-up as BLIP-2's trainer (LAVIS) applies them."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from napari_pathm3.config import PathM3Config, TrainConfig
from napari_pathm3.model.objectives import caption_objective
from napari_pathm3.model.pathm3 import PathM3Model
from napari_pathm3.training.loop import lavis_lr_at

CLASSES = ("tubular", "papillary", "poorly")
CAPTIONS = ["small glands are seen", "solid sheets of cells", "papillary fronds are seen"]


def _paper(feature_dim: int = 16) -> PathM3Config:
    return PathM3Config.preset("paper", feature_dim=feature_dim, encoder_name="x", class_names=CLASSES)


def _tiny_with_paper_objective() -> PathM3Config:
    """Tiny sizes, the paper preset's objective switches (the preset itself is 768 wide with FlanT5-XL)."""
    paper = _paper()
    tiny = PathM3Config.tiny(feature_dim=16, class_names=CLASSES)
    return dataclasses.replace(
        tiny,
        preset_name=paper.preset_name,
        mode=paper.mode,
        alpha=paper.alpha,
        itc_weight=paper.itc_weight,
        train_image_only_path=paper.train_image_only_path,
        optim=paper.optim,
    )


def test_paper_preset_switches():
    paper = _paper()
    assert (paper.preset_name, paper.mode, paper.itc_weight, paper.train_image_only_path) == (
        "paper",
        "image_text",
        0.0,
        False,
    )
    assert paper.optim.weight_decay_rule == "lavis" and paper.correlation.attention == "nystrom"
    t = TrainConfig.preset("paper")
    assert (t.lr_schedule, t.grad_clip) == ("lavis", None)
    for size in ("tiny", "small"):  # the scratch presets keep their (documented) deviations
        cfg = PathM3Config.preset(size, feature_dim=16, encoder_name="x", class_names=CLASSES)
        assert cfg.preset_name == size and cfg.train_image_only_path and cfg.qformer_init is None


def test_paper_loss_is_eq4_by_hand(make_batch):
    cfg = _tiny_with_paper_objective()
    torch.manual_seed(0)
    model = PathM3Model(cfg).eval()
    assert not hasattr(model, "vision_proj")  # no contrastive heads are even built
    with torch.no_grad():  # larger logits, so the text-conditioned and image-only CEs differ clearly
        model.classifier.weight.mul_(50.0)
    x, mask = make_batch([5, 3, 7])
    labels = torch.tensor([0, 2, 1])
    out = model(x, mask, captions=CAPTIONS, labels=labels, text=CAPTIONS)
    with torch.no_grad():
        patches = model.correlation(x, mask)
        ids, tmask = model._tokenize_text(CAPTIONS)
        q_text = model.qformer(patches, mask, ids, tmask).query_output  # queries that read the caption
        w, b = model.classifier.weight, model.classifier.bias
        logits = (q_text @ w.T + b).mean(dim=1)  # one linear per query output, K logits averaged (§3)
        l_c = -F.log_softmax(logits, dim=-1)[torch.arange(3), labels].mean()  # eq. (3)
        q_img = model.qformer(patches, mask).query_output  # the captioning pass sees no text
        l_g = caption_objective(model, q_img, CAPTIONS)
        expected = cfg.alpha * l_c + (1 - cfg.alpha) * l_g  # eq. (4)
        image_ce = F.cross_entropy(model.classifier(q_img), labels)
    assert out.loss_itc is None
    assert torch.allclose(out.loss_cls, l_c, atol=1e-6) and torch.allclose(out.loss, expected, atol=1e-6)
    # the extra image-only cross-entropy of the scratch presets is not in it
    assert abs(float(image_ce - l_c)) > 1e-3
    assert not torch.allclose(out.loss_cls, 0.5 * (l_c + image_ce), atol=1e-4)


def test_lavis_weight_decay_rule():
    def groups(rule):
        cfg = PathM3Config.tiny(feature_dim=16, class_names=CLASSES)
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, weight_decay_rule=rule))
        model = PathM3Model(cfg)
        decay, plain = model.optimizer_param_groups()
        ids = {id(p) for p in decay["params"]}
        return (
            {n: id(p) in ids for n, p in model.named_parameters()},
            decay["weight_decay"],
            plain["weight_decay"],
        )

    lavis, wd, zero = groups("lavis")
    assert (wd, zero) == (0.05, 0.0)
    # LAVIS Blip2Base.get_optimizer_params: decay everything but 1-D tensors and biases
    assert lavis["qformer.query_tokens"] and lavis["qformer.embeddings.word_embeddings.weight"]
    assert not lavis["qformer.layernorm.weight"] and not lavis["classifier.bias"]
    assert lavis["classifier.weight"]
    ours, _, _ = groups("norms_biases_embeddings")
    assert not ours["qformer.query_tokens"] and not ours["qformer.embeddings.word_embeddings.weight"]


def test_lavis_schedule():
    kw = dict(lr=1e-4, warmup_lr=1e-5, warmup_steps=1000, steps_per_epoch=10, epochs=5, min_lr=0.0)
    assert lavis_lr_at(0, **kw) == pytest.approx(1e-5)
    # a first epoch shorter than the warm-up ends it early, as in LAVIS
    assert lavis_lr_at(9, **kw) == pytest.approx(1e-5 + 9e-5 * 9 / 1000)
    # then one cosine value per epoch
    for step, epoch in ((10, 1), (19, 1), (20, 2), (49, 4)):
        assert lavis_lr_at(step, **kw) == pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi * epoch / 5)))
    assert lavis_lr_at(7, **{**kw, "warmup_steps": 5}) == pytest.approx(1e-4)  # capped at the peak
