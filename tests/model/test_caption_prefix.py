"""Caption-prefix extension (docs/method.md §5a): count tokens and the class token.

Off (every preset's default and ``paper``) it builds no weights and the model is the same bit for bit; on it
adds exactly its tokens to the LM prefix; the class token decodes with the classifier's predicted class.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from napari_pathm3.config import CaptionPrefixConfig, PathM3Config
from napari_pathm3.model import build_model
from napari_pathm3.model.caption_prefix import CountTokens, conditioning_classes

CAPTIONS = ["two alpha cells . grade a .", "one beta cell . grade b .", "no key cells . grade c ."]


def _with_prefix(config: PathM3Config, **kw) -> PathM3Config:
    return dataclasses.replace(config, caption_prefix=CaptionPrefixConfig(**kw))


def test_off_is_paper_default() -> None:
    cfg = PathM3Config.preset("paper", feature_dim=16, encoder_name="x", class_names=("a", "b"))
    assert cfg.caption_prefix == CaptionPrefixConfig()
    assert cfg.caption_prefix.extra_tokens == 0
    with pytest.raises(ValueError, match="count_tokens"):
        CaptionPrefixConfig(count_tokens=-1)
    with pytest.raises(ValueError, match="class_token"):
        CaptionPrefixConfig(class_token=1)  # type: ignore[arg-type]


def test_off_changes_nothing(tiny_config, make_batch) -> None:
    """The default config (extension off) builds the same weights and loss as a config without the field
    written out: no extra parameter, no extra random draw."""
    x, mask = make_batch([5, 3, 4])
    labels = torch.tensor([0, 1, 2])
    torch.manual_seed(0)
    a = build_model(tiny_config).eval()
    torch.manual_seed(0)
    b = build_model(_with_prefix(tiny_config)).eval()
    assert not any(k.startswith("caption_prefix") for k in a.state_dict())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    la = a(x, mask, captions=CAPTIONS, labels=labels).loss
    lb = b(x, mask, captions=CAPTIONS, labels=labels).loss
    assert torch.equal(la, lb)


@pytest.mark.parametrize(
    ("count", "cls", "source", "extra"),
    [(2, False, "gate", 2), (0, True, "gate", 1), (3, True, "gate", 4), (2, True, "attention", 3)],
)
def test_prefix_shape_when_on(tiny_config, make_batch, count, cls, source, extra) -> None:
    x, mask = make_batch([5, 3])
    torch.manual_seed(0)
    cfg = _with_prefix(tiny_config, count_tokens=count, class_token=cls, count_source=source)
    model = build_model(cfg).eval()
    patches = model.correlation(x, mask)
    image_only = model.qformer(patches, mask, need_weights=False, need_lse=model._needs_lse)
    z = image_only.query_output
    prefix = model.caption_prefix_embeddings(x, mask, image_only)
    q = tiny_config.qformer.num_query_tokens
    assert prefix.shape[:2] == (2, q + extra)
    assert torch.equal(prefix[:, :q], model.language_projection(z))
    out = model(x, mask, captions=CAPTIONS[:2], labels=torch.tensor([0, 1]))
    assert out.loss_caption is not None and torch.isfinite(out.loss_caption)
    out.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("caption_prefix")]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    caps = model.generate_captions(x, mask, max_new_tokens=3)
    assert len(caps) == 2


def test_counts_grow_with_instances_and_ignore_padding() -> None:
    torch.manual_seed(0)
    heads = CountTokens(width=4, lm_width=8, heads=1, hidden=4)
    key = torch.tensor([1.0, 0.0, 0.0, 0.0])
    bag = key.repeat(6, 1)[None]  # (1, 6, 4)
    mask = torch.tensor([[True, True, False, False, False, False]])
    two = heads.counts(bag, mask)
    four = heads.counts(bag, torch.tensor([[True] * 4 + [False] * 2]))
    assert torch.allclose(four, 2 * two)  # unnormalised: twice the instances, twice the count
    tokens, counts = heads(bag, mask)
    assert tokens.shape == (1, 1, 8) and torch.equal(counts, two)


def test_class_token_teacher_forced_in_training_predicted_at_inference(tiny_config, make_batch) -> None:
    x, mask = make_batch([4, 4])
    logits = torch.tensor([[0.0, 5.0, 0.0], [3.0, 0.0, 0.0]])
    assert conditioning_classes(None, logits).tolist() == [1, 0]
    assert conditioning_classes(torch.tensor([2, -100]), logits).tolist() == [2, 0]  # label where known
    torch.manual_seed(0)
    model = build_model(_with_prefix(tiny_config, class_token=True)).eval()
    # training: the true class's embedding is what the LM reads, whatever the classifier says
    seen = []
    hook = model.caption_prefix.class_embedding.register_forward_hook(
        lambda m, i, o: seen.append(i[0].tolist())
    )
    model(x, mask, captions=CAPTIONS[:2], labels=torch.tensor([2, 1]))
    assert seen[-1] == [2, 1]
    # inference: the classifier's predicted class (image-only), and decoding follows it
    predicted = model.classify(x, mask).probabilities.argmax(-1).tolist()
    model.generate_captions(x, mask, max_new_tokens=2)
    assert seen[-1] == predicted
    hook.remove()
    with torch.no_grad():  # force another prediction: the prefix's class row follows the classifier
        model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 1e4]))
    model.generate_captions(x, mask, max_new_tokens=2)
    patches = model.correlation(x, mask)
    image_only = model.qformer(patches, mask, need_weights=False, need_lse=model._needs_lse)
    prefix = model.caption_prefix_embeddings(x, mask, image_only)
    assert torch.equal(prefix[:, -1], model.caption_prefix.class_embedding.weight[[2, 2]])


def test_checkpoint_round_trip(tiny_config, make_batch, tmp_path) -> None:
    from napari_pathm3.model.pathm3 import PathM3Model

    x, mask = make_batch([4, 2])
    torch.manual_seed(0)
    model = build_model(_with_prefix(tiny_config, count_tokens=2, class_token=True)).eval()
    model.save_pretrained(tmp_path / "ck")
    back = PathM3Model.from_pretrained(tmp_path / "ck")
    assert back.config.caption_prefix == model.config.caption_prefix
    assert model.generate_captions(x, mask, max_new_tokens=4) == back.generate_captions(
        x, mask, max_new_tokens=4
    )


@pytest.mark.parametrize("source", ["gate", "attention"])
def test_word_maps_with_prefix_tokens(tiny_config, make_batch, source) -> None:
    """Word maps read the same prefix as decoding: the extra tokens are appended (held constant)."""
    from napari_pathm3.model import grounding as g

    x, mask = make_batch([6])
    torch.manual_seed(0)
    model = build_model(
        _with_prefix(tiny_config, count_tokens=1, class_token=True, count_source=source)
    ).eval()
    pass_ = g.query_pass(model, x, mask)
    extra = g.extra_prefix(model, pass_)
    assert extra is not None and extra.shape[1] == 2
    rel, maps = g.text_relevance(model, pass_, CAPTIONS[0])
    assert maps.shape[-1] == 6 and torch.isfinite(maps).all()
    ids, logp = g.singleton_log_probs(model, x, CAPTIONS[0])
    assert logp.shape == (len(ids), 6)
    plain = g.token_query_relevance(model, pass_.query_output[0], CAPTIONS[0], extra=extra)
    assert torch.allclose(plain.log_probs, rel.log_probs, atol=1e-5)  # same prefix, same probabilities


def test_log_normaliser_is_the_softmax_denominator(make_batch) -> None:
    """λ = log Σ_n exp(logit) over the valid patches, whatever the chunking; it grows by log 2 when every
    patch is doubled (softmax weights, and so the query outputs, do not change)."""
    from napari_pathm3.model.qformer import Attending, _MultiHeadAttention, cross_attend

    torch.manual_seed(0)
    mha = _MultiHeadAttention(8, 6)
    hidden, (patches, mask) = torch.randn(2, 3, 8), make_batch([5, 3], dim=6)
    lse: list[torch.Tensor] = []
    out, _ = cross_attend(mha, hidden, patches, mask, Attending(2, chunk_size=2), log_normalisers=lse)
    q = mha.query(hidden).view(2, 3, 2, 4).transpose(1, 2) / 2.0
    k = mha.key(patches).view(2, 5, 2, 4).transpose(1, 2)
    logits = (q @ k.transpose(-1, -2)).masked_fill(~mask[:, None, None], float("-inf"))
    assert torch.allclose(lse[0], torch.logsumexp(logits, dim=-1), atol=1e-5)
    double: list[torch.Tensor] = []
    out2, _ = cross_attend(
        mha,
        hidden,
        torch.cat([patches, patches], 1),
        torch.cat([mask, mask], 1),
        Attending(2),
        log_normalisers=double,
    )
    assert torch.allclose(double[0], lse[0] + torch.log(torch.tensor(2.0)), atol=1e-5)
    assert torch.allclose(out, out2, atol=1e-5)


def test_cli_flags_set_the_prefix() -> None:
    import argparse

    from napari_pathm3._cli.train import _caption_prefix

    cfg = PathM3Config.tiny()
    ns = argparse.Namespace(count_tokens=3, count_source="attention", class_token="on")
    got = _caption_prefix(cfg, ns).caption_prefix
    assert got == CaptionPrefixConfig(count_tokens=3, count_source="attention", class_token=True)
    unset = argparse.Namespace(count_tokens=None, count_source=None, class_token=None)
    assert _caption_prefix(cfg, unset) is cfg
    with pytest.raises(ValueError, match="count_tokens"):
        _caption_prefix(cfg, argparse.Namespace(count_tokens=65, count_source=None, class_token=None))


def test_count_heads_learn_from_the_labels(tiny_config, make_batch) -> None:
    """count_classifier: the heads' own cross-entropy joins L_C and reaches the gates; the model's logits stay
    the query classifier's."""
    x, mask = make_batch([5, 3])
    labels = torch.tensor([0, 1])
    torch.manual_seed(0)
    on = build_model(_with_prefix(tiny_config, count_tokens=2)).eval()
    torch.manual_seed(0)
    off = build_model(_with_prefix(tiny_config, count_tokens=2, count_classifier=False)).eval()
    assert not hasattr(off.caption_prefix, "count_logits")
    assert torch.equal(on.classify(x, mask).logits, off.classify(x, mask).logits)
    out_on, out_off = on(x, mask, labels=labels), off(x, mask, labels=labels)
    from napari_pathm3.model.heads import classification_loss

    aux = classification_loss(on.caption_prefix.class_logits(x, mask), labels)  # each patch's own feature
    assert torch.allclose(out_on.loss_cls, out_off.loss_cls + aux, atol=1e-6)
    out_on.loss.backward()
    assert on.caption_prefix.count.gate_v.weight.grad.abs().sum() > 0  # L_C reaches the gates
