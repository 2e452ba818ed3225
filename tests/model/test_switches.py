"""Per-bag caption-loss masking, missing text in image_text mode, the use_correlation switch, the logged
attention choice and the chunked Q-Former cross-attention (issues 12 and 14)."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch

from napari_pathm3.config import CorrelationConfig, PathM3Config
from napari_pathm3.model import PathM3Model, build_model
from napari_pathm3.model.nystrom import NystromAttention
from napari_pathm3.model.qformer import Attending, cross_attend

CAPS = ["tubular glands in the mucosa", "poorly differentiated cells infiltrate", "atypical glands"]


def _model(cfg: PathM3Config, **kw) -> PathM3Model:
    torch.manual_seed(0)
    return build_model(dataclasses.replace(cfg, **kw)).eval()


def test_caption_less_bag_adds_no_caption_loss_and_alpha_stays(tiny_config, make_batch):
    model = _model(tiny_config, mode="image", alpha=0.3)
    x, mask = make_batch([5, 9, 7])
    labels = torch.tensor([0, 1, 2])
    out = model(x, mask, captions=[CAPS[0], None, CAPS[2]], labels=labels)
    # L_G of the batch = L_G of its captioned bags alone (bag 1 does not count, padding does not matter)
    keep = torch.tensor([0, 2])
    alone = model(x[keep], mask[keep], captions=[CAPS[0], CAPS[2]])
    torch.testing.assert_close(out.loss_caption, alone.loss_caption, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, 0.3 * out.loss_cls + 0.7 * out.loss_caption)
    # a batch without any caption keeps α on L_C (no switch to L_C alone), blank strings count as missing
    none = model(x, mask, captions=[None, " ", None], labels=labels)
    assert none.loss_caption is None
    torch.testing.assert_close(none.loss, 0.3 * none.loss_cls)
    torch.testing.assert_close(none.loss_cls, out.loss_cls)
    # captions without labels: (1 - α) L_G
    only = model(x, mask, captions=[CAPS[0], None, CAPS[2]])
    torch.testing.assert_close(only.loss, 0.7 * only.loss_caption)


def test_caption_loss_gradient_skips_the_caption_less_bag(tiny_config, make_batch):
    model = _model(tiny_config, mode="image")
    x, mask = make_batch([6, 6])
    x.requires_grad_(True)
    out = model(x, mask, captions=[CAPS[0], None])
    out.loss.backward()
    assert x.grad[0].abs().sum() > 0
    assert x.grad[1].abs().sum() == 0  # the correlation module is per bag: nothing leaks across bags


def test_image_text_bag_without_text_takes_the_image_only_path(tiny_config, make_batch):
    model = _model(tiny_config, mode="image_text")
    x, mask = make_batch([8, 11])
    with torch.no_grad():
        mixed = model(x, mask, text=[CAPS[0], None]).logits
        image = model(x, mask, text=None).logits
        first = model(x[:1, :8], mask[:1, :8], text=[CAPS[0]]).logits
        nothing = model(x, mask, text=[None, ""]).logits
    torch.testing.assert_close(mixed[1], image[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[0], first[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mixed[0], image[0], atol=1e-4)  # the text does reach bag 0
    torch.testing.assert_close(nothing, image)
    # training: no error with a missing caption; labels and the other bag's caption still train
    model.train()
    out = model(x, mask, captions=[CAPS[0], None], labels=torch.tensor([0, 1]), text=[CAPS[0], None])
    assert out.loss is not None and out.loss_caption is not None
    out.loss.backward()


def test_text_mode_still_needs_text_for_every_bag(tiny_config):
    model = _model(tiny_config, mode="text")
    with pytest.raises(ValueError, match="missing for bags \\[1\\]"):
        model(None, text=[CAPS[0], None])
    assert model(None, text=CAPS[:2]).logits.shape == (2, 3)


def test_image_only_loss_switch(tiny_config, make_batch):
    x, mask = make_batch([6, 9])
    labels = torch.tensor([0, 2])
    on = _model(tiny_config, mode="image_text", train_image_only_path=True)
    off = _model(tiny_config, mode="image_text", train_image_only_path=False)
    text = CAPS[:2]
    with torch.no_grad():
        l_on = on(x, mask, labels=labels, text=text).loss_cls
        l_off = off(x, mask, labels=labels, text=text).loss_cls
        l_img = off(x, mask, labels=labels).loss_cls  # text=None: the image-only CE
    torch.testing.assert_close(l_on, 0.5 * (l_off + l_img))


def test_use_correlation_off_builds_no_attention_and_embeds_each_patch_alone(tiny_config, tmp_path):
    model = _model(tiny_config, use_correlation=False)
    keys = model.state_dict().keys()
    assert not any(k.startswith(("correlation.attention.", "correlation.norm.")) for k in keys)
    assert "correlation.proj.weight" in keys and "correlation.out_norm.weight" in keys
    x = torch.randn(1, 40, tiny_config.feature_dim)
    with torch.no_grad():
        full = model.correlation(x)
        part = model.correlation(x[:, :5])
        with_attn = _model(tiny_config).correlation(x)
    torch.testing.assert_close(full[:, :5], part)  # no patch sees another one
    assert not torch.allclose(full, with_attn)
    loaded = PathM3Model.from_pretrained(model.save_pretrained(tmp_path / "nocorr"))
    assert loaded.config.use_correlation is False
    with torch.no_grad():
        torch.testing.assert_close(loaded.classify(x).logits, model.classify(x).logits)


def test_checkpoint_config_without_the_new_keys_loads_as_before(tiny_config, tmp_path):
    model = _model(tiny_config)
    folder = model.save_pretrained(tmp_path / "old")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["use_correlation"] is True and cfg["train_image_only_path"] is True
    del cfg["use_correlation"]  # as written before the switch existed
    (folder / "config.json").write_text(json.dumps(cfg))
    loaded = PathM3Model.from_pretrained(folder)
    assert loaded.config.use_correlation is True
    x = torch.randn(1, 30, tiny_config.feature_dim)
    torch.testing.assert_close(loaded.classify(x).logits, model.classify(x).logits)


def test_attention_choice_is_logged_and_explicit(caplog):
    x = torch.randn(1, 8, 16)
    big = torch.randn(1, 20, 16)
    caplog.set_level(logging.INFO, logger="napari_pathm3.model.nystrom")
    auto = NystromAttention(16, heads=2, num_landmarks=8, mode="auto").eval()
    with torch.no_grad():
        a_small, a_big = auto(x), auto(big)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("exact for 1 bag(s) of 8-8 patches" in m and "<= 8" in m for m in msgs)
    assert any("nystrom for 1 bag(s) of 20-20 patches" in m for m in msgs)
    exact = NystromAttention(16, heads=2, num_landmarks=8, mode="exact").eval()
    nys = NystromAttention(16, heads=2, num_landmarks=8, mode="nystrom").eval()
    for other in (exact, nys):
        other.load_state_dict(auto.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(nys(big), a_big)
        torch.testing.assert_close(exact(x), a_small)
        assert not torch.allclose(exact(big), a_big, atol=1e-4)  # "exact" really is exact on big bags
        assert not torch.allclose(nys(x), a_small, atol=1e-6)  # n == m: Nyström when asked for
    with pytest.raises(ValueError, match="mode"):
        NystromAttention(16, mode="fast")
    with pytest.raises(ValueError, match="attention"):
        CorrelationConfig(attention="fast")


def _reference_cross_attention(mha, hidden, patches, mask, heads):
    b, t, width = hidden.shape
    d = width // heads
    q = mha.query(hidden).view(b, t, heads, d).transpose(1, 2)
    k = mha.key(patches).view(b, -1, heads, d).transpose(1, 2)
    v = mha.value(patches).view(b, -1, heads, d).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) * d**-0.5
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    w = torch.softmax(scores, dim=-1)
    return (w @ v).transpose(1, 2).reshape(b, t, width), w.mean(dim=1)


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_chunked_cross_attention_equals_unchunked(tiny_model, chunk):
    torch.manual_seed(1)
    mha = tiny_model.qformer.encoder.layer[0].crossattention.attention
    hidden = torch.randn(2, 4, 32)
    patches = torch.randn(2, 13, 32)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[1, 6:] = False  # bag 1: 6 patches, padded (whole chunks of padding when chunk < 7)
    with torch.no_grad():
        ref_out, ref_w = _reference_cross_attention(mha, hidden, patches, mask, heads=4)
        out, w = cross_attend(mha, hidden, patches, mask, Attending(4, chunk_size=chunk))
        out2, none = cross_attend(
            mha, hidden, patches, mask, Attending(4, chunk_size=chunk), need_weights=False
        )
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out2, out)
    assert none is None and (w[1, :, 6:] == 0).all()


def test_qformer_chunk_size_does_not_change_the_model(tiny_config, make_batch):
    x, mask = make_batch([30, 17])
    small = _model(tiny_config, correlation=dataclasses.replace(tiny_config.correlation, chunk_size=4))
    big = _model(tiny_config)
    big.load_state_dict(small.state_dict())
    assert small.qformer.chunk_size == 4 and big.qformer.chunk_size == tiny_config.correlation.chunk_size
    with torch.no_grad():
        a, b = small(x, mask), big(x, mask)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.query_attention, b.query_attention, atol=1e-6, rtol=1e-5)
    # gradients flow through the chunked path
    small.train()
    small(x, mask, labels=torch.tensor([0, 1])).loss.backward()
    assert small.query_tokens.grad is not None and small.query_tokens.grad.abs().sum() > 0
