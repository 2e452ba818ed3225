"""Grounding: which patches a caption word, or a typed phrase, is about (docs/method.md §11).

Word -> region map, for the tokens w_t of a word (or of a phrase teacher-forced after the prompt):

    r_t(k)  = ⟨∂ log p(w_t | prefix, w_<t) / ∂ z_k , z_k⟩      gradient x input at query output z_k (k = 1..q)
    ρ_w(k)  = max(0, Σ_{t ∈ w} r_t(k)) / Σ_k' max(0, Σ_{t ∈ w} r_t(k'))
    m_w(n)  = Σ_k ρ_w(k) · A(k, n)                              A: the Q-Former's cross-attention (heads and
                                                                cross-attention layers averaged; rows sum to 1)

so m_w is a distribution over patches (Σ_n m_w(n) = 1), on the same scale as the aggregate attention map
(1/N = uniform). One batched forward and backward of the LM (batch = number of tokens) gives every r_t; the
Q-Former and the correlation module are not run again (the classification pass's query outputs and A are
reused), so the cost does not grow with the number of patches beyond the (T, q) x (q, n) product.

Singleton evidence (:func:`singleton_log_probs`, the default up to 4096 patches): log p(w_t | patch n alone),
the model applied to each patch as a bag of one.

Phrase maps from a trained PathM3 model, besides singleton (compared in benchmarks/bench_grounding.py):

* ``"lm"``: the phrase teacher-forced as a caption; ρ from gradient x input of log p(phrase) as above.
* ``"itc"``: the contrastive head (``itc_weight`` > 0): ρ(k) = softmax_k(⟨v_k, t⟩ / τ) with v_k the projected,
  normalised image-only query outputs and t the phrase's text embedding; m = Σ_k ρ(k) A(k, ·).
* ``"joint"``: the Q-Former run with the phrase's tokens beside the queries (image-text mode); m = the mean
  over queries of their phrase-conditioned cross-attention.

Dimensions: q queries, n patches, H Q-Former width, T tokens, W words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PHRASE_METHODS",
    "TokenRelevance",
    "compose",
    "phrase_query_weights",
    "token_query_relevance",
    "word_spans",
]

PHRASE_METHODS = ("lm", "itc", "joint")


@dataclass
class TokenRelevance:
    """Gradient x input relevance of each query for each token of a text."""

    token_ids: list[int]  # (T,) the LM tokens of the text
    tokens: list[str]  # (T,) their strings
    relevance: Tensor  # (T, q) signed r_t(k)
    log_probs: Tensor  # (T,) log p(w_t | prefix, w_<t)
    offsets: list[tuple[int, int]] | None = None  # (T,) character spans in the text, where known


def _lm_parts(model: Any) -> tuple[Any, Any, str, str]:
    lang = model.config.language
    return model.language_model, model.lm_tokenizer, lang.kind, lang.prompt


def _encode_tokens(tok: Any, text: str) -> tuple[list[int], list[str], list[tuple[int, int]] | None]:
    """LM token ids of ``text`` (no special tokens), their strings and character spans (None where the
    tokenizer gives no offsets)."""
    core = getattr(tok, "_tok", None)  # our plain ``tokenizers`` wrapper (model/tokenizer.py)
    if core is not None:
        enc = core.encode(text, add_special_tokens=False)
        return list(enc.ids), list(enc.tokens), [tuple(o) for o in enc.offsets]
    try:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets: list[tuple[int, int]] | None = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    except (TypeError, ValueError, KeyError, NotImplementedError):  # slow tokenizers give no offsets
        enc, offsets = tok(text, add_special_tokens=False), None
    ids = [int(i) for i in enc["input_ids"]]
    return ids, [str(s) for s in tok.convert_ids_to_tokens(ids)], offsets


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the whitespace-separated words of ``text``."""
    spans, pos = [], 0
    for word in text.split():
        start = text.index(word, pos)
        spans.append((start, start + len(word)))
        pos = start + len(word)
    return spans


def token_words(text: str, offsets: list[tuple[int, int]] | None, num_tokens: int) -> list[int]:
    """Word index of every token: the whitespace word its first character lies in (without offsets: one word
    per token, which is exact for the word-level vocabulary of the scratch presets)."""
    spans = word_spans(text)
    if offsets is None or len(offsets) != num_tokens or not spans:
        return list(range(num_tokens))
    out: list[int] = []
    w = 0
    for start, end in offsets:
        if end <= start and out:  # a zero-width token (e.g. sentencepiece "▁"): with the next word
            out.append(min(w, len(spans) - 1))
            continue
        while w < len(spans) - 1 and start >= spans[w][1]:
            w += 1
        out.append(w)
    return out


def _token_log_probs(model: Any, prefix: Tensor, ids: Tensor) -> Tensor:
    """(T, L) log-probabilities of ``ids`` (L,) teacher-forced after ``prefix`` (T, q, D) and the prompt:
    every row of the batch scores the same text (row t is differentiated for token t)."""
    lm, tok, kind, prompt = _lm_parts(model)
    b, device = prefix.shape[0], prefix.device
    emb = lm.get_input_embeddings()
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    p_emb = emb(torch.tensor(p_ids, dtype=torch.long, device=device)).to(prefix.dtype)
    p_emb = p_emb[None].expand(b, -1, -1)
    rows = ids[None].expand(b, -1)
    if kind == "seq2seq":
        enc = torch.cat([prefix, p_emb], dim=1)
        settings = getattr(lm, "settings", None) or lm.config
        start = torch.full((b, 1), int(settings.decoder_start_token_id), dtype=torch.long, device=device)
        dec = torch.cat([start, rows[:, :-1]], dim=1)
        att = torch.ones(enc.shape[:2], dtype=torch.long, device=device)
        logits = lm(inputs_embeds=enc, attention_mask=att, decoder_input_ids=dec).logits  # (T, L, V)
    else:
        seq = torch.cat([prefix, p_emb, emb(rows).to(prefix.dtype)], dim=1)
        ctx = prefix.shape[1] + p_emb.shape[1]
        out = lm.logits(seq) if getattr(lm, "is_native", False) else lm(inputs_embeds=seq).logits
        logits = out[:, ctx - 1 : ctx - 1 + ids.shape[0]]  # position i predicts token i
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, rows[..., None]).squeeze(-1)


def _append_extra(prefix: Tensor, extra: Tensor | None) -> Tensor:
    """``prefix`` (T, q, W) followed by the ``caption_prefix`` tokens ``extra`` (1, k, W), held constant (the
    maps attribute through the queries; count and class tokens are not differentiated)."""
    if extra is None:
        return prefix
    return torch.cat([prefix, extra.detach().to(prefix.dtype).expand(prefix.shape[0], -1, -1)], dim=1)


@torch.no_grad()
def extra_prefix(model: Any, pass_: QueryPass) -> Tensor | None:
    """The bag's ``caption_prefix`` tokens (1, k, W) at inference, or None when the extension is off."""
    if not model.config.caption_prefix.extra_tokens:
        return None
    mask = pass_.mask if pass_.mask is not None else torch.ones(pass_.patches.shape[:2], dtype=torch.bool)
    mask = mask.to(pass_.patches.device)
    image_only = model.qformer(pass_.patches, mask, need_weights=False, need_lse=model._needs_lse)
    assert pass_.features is not None  # set by query_pass
    return model._extra_prefix(pass_.features, mask, image_only, None)


def token_query_relevance(
    model: Any, query_output: Tensor, text: str, *, extra: Tensor | None = None
) -> TokenRelevance:
    """Gradient x input relevance r_t(k) of every query k for every LM token t of ``text``.

    Args:
        model: a :class:`~napari_pathm3.model.pathm3.PathM3Model` (eval mode).
        query_output: (q, H) image-only query outputs of one bag (the caption prefix before projection).
        text: a caption (or phrase), scored as the LM's output after the query prefix and the prompt.
        extra: the bag's ``caption_prefix`` tokens (:func:`extra_prefix`), appended held constant.

    Returns:
        :class:`TokenRelevance`; empty (T = 0) for a text without tokens.
    """
    _, tok, _, _ = _lm_parts(model)
    ids, strings, offsets = _encode_tokens(tok, text)
    q = query_output.shape[0]
    if not ids:
        empty = torch.zeros(0, q)
        return TokenRelevance([], [], empty, torch.zeros(0))
    t = len(ids)
    device = query_output.device
    with torch.enable_grad():
        z = query_output.detach().float()[None].expand(t, -1, -1).clone().requires_grad_(True)  # (T, q, H)
        prefix = _append_extra(model.language_projection(z.to(model.language_projection.weight.dtype)), extra)
        logp = _token_log_probs(model, prefix, torch.tensor(ids, dtype=torch.long, device=device))
        own = logp[torch.arange(t, device=device), torch.arange(t, device=device)]  # row t: token t
        (grad,) = torch.autograd.grad(own.sum(), z)
    relevance = (grad * z).sum(dim=-1).detach()  # (T, q)
    return TokenRelevance(ids, strings, relevance.cpu(), own.detach().cpu(), offsets)


@dataclass
class QueryPass:
    """What one image-only Q-Former pass over a bag leaves for attribution (no autograd): per
    cross-attention layer the query states entering it and its context (the attention output before the
    dense + LayerNorm), the correlated patches, and the query outputs."""

    patches: Tensor  # (1, n, D) correlated patch features
    mask: Tensor | None  # (1, n) bool
    states: list[Tensor]  # per cross-attention layer: (1, q, H) query states (its attention's queries)
    contexts: list[Tensor]  # per cross-attention layer: (1, q, H) Σ_n A(k, n) V(E_n), heads concatenated
    query_output: Tensor  # (1, q, H)
    features: Tensor | None = (
        None  # (1, n, d) the patch features (the count gates of caption_prefix read them)
    )


def _query_path(qformer: Any, batch: int, contexts: list[Tensor] | None, pass_: QueryPass | None) -> Tensor:
    """The Q-Former's image-only query path (QFormer.forward without text, eval mode) with each
    cross-attention context taken from ``contexts`` (attention held constant) or, when ``pass_`` is given,
    computed over ``pass_.patches`` and recorded there."""
    from .qformer import Attending, _attend, cross_attend

    heads = qformer.config.num_attention_heads
    x = qformer.layernorm(qformer.query_tokens.expand(batch, -1, -1))
    i = 0
    for layer in qformer.encoder.layer:
        a = layer.attention.output(
            _attend(layer.attention.attention, x, x, None, heads=heads, dropout=0.0), x
        )
        if layer.has_cross_attention:
            if pass_ is not None:
                c, _ = cross_attend(
                    layer.crossattention.attention,
                    a,
                    pass_.patches,
                    pass_.mask,
                    Attending(heads, chunk_size=qformer.chunk_size),
                    need_weights=False,
                )
                pass_.states.append(a)
                pass_.contexts.append(c)
            else:
                assert contexts is not None
                c = contexts[i]
            i += 1
            a = layer.crossattention.output(c, a)
        x = layer.output_query(layer.intermediate_query(a), a)
    return x


@torch.no_grad()
def query_pass(model: Any, features: Tensor, mask: Tensor | None = None) -> QueryPass:
    """Correlation module + the Q-Former's image-only query path over one bag ``features`` (1, n, d)."""
    patches, mask = model._encode(features, mask, "image")
    out = QueryPass(
        patches=patches,
        mask=mask,
        states=[],
        contexts=[],
        query_output=features.new_zeros(0),
        features=features.to(patches.device),
    )
    out.query_output = _query_path(model.qformer, 1, None, out)
    return out


def _cross_layers(model: Any) -> list[Any]:
    return [layer for layer in model.qformer.encoder.layer if layer.has_cross_attention]


@torch.no_grad()
def patch_relevance(model: Any, pass_: QueryPass, grads: list[Tensor], *, chunk_size: int = 1024) -> Tensor:
    """R(t, n) = Σ_layers Σ_heads Σ_k A(k, n) ⟨g_t(k), V(E_n)⟩: gradient x attention over the patches (the
    gradient ``grads`` (T, q, H) at each cross-attention layer's context, attention held constant): (T, n).

    Σ_n R(t, n) = Σ_layers ⟨g_t, context⟩: it splits the query-level gradient x input between the patches
    by what each patch's value contributed. Patches are taken ``chunk_size`` at a time (two passes per
    layer: the softmax normaliser, then the relevance), so no (h, q, n) tensor is held."""
    heads = model.qformer.config.num_attention_heads
    patches, mask = pass_.patches[0], None if pass_.mask is None else pass_.mask[0]
    n, t = patches.shape[0], grads[0].shape[0] if grads else 0
    out = torch.zeros(t, n, dtype=torch.float32, device=patches.device)
    for layer, state, g in zip(_cross_layers(model), pass_.states, grads, strict=True):
        mha = layer.crossattention.attention
        width = state.shape[-1]
        d = width // heads
        q = (mha.query(state[0]).view(-1, heads, d).transpose(0, 1) * d**-0.5).float()  # (h, q, d)
        gh = g.view(t, -1, heads, d).float()  # (T, q, h, d)
        lse = torch.full((heads, q.shape[1], 1), -float("inf"), device=patches.device)
        for s in range(0, n, chunk_size):  # softmax normaliser over all patches
            logits = _chunk_logits(mha, q, patches, mask, slice(s, s + chunk_size))
            lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=-1, keepdim=True))
        for s in range(0, n, chunk_size):
            logits = _chunk_logits(mha, q, patches, mask, slice(s, s + chunk_size))
            attn = torch.exp(logits - lse)  # (h, q, c)
            v = mha.value(patches[s : s + chunk_size].to(mha.value.weight.dtype)).view(-1, heads, d).float()
            out[:, s : s + chunk_size] += torch.einsum("hqc,tqhd,chd->tc", attn, gh, v)
    return out


def _chunk_logits(mha: Any, q: Tensor, patches: Tensor, mask: Tensor | None, window: slice) -> Tensor:
    """Attention logits (h, q, c) of the queries ``q`` (h, q, d) over the patches in ``window``."""
    heads, d = q.shape[0], q.shape[-1]
    k = mha.key(patches[window].to(mha.key.weight.dtype)).view(-1, heads, d).transpose(0, 1).float()
    logits = q @ k.transpose(-1, -2)  # (h, q, c)
    if mask is not None:
        logits = logits.masked_fill(~mask[window].bool()[None, None], -float("inf"))
    return logits


def text_relevance(
    model: Any, pass_: QueryPass, text: str, *, steps: int = 1
) -> tuple[TokenRelevance, Tensor]:
    """Token-level relevance of ``text`` as the LM's output for this bag: the query-level gradient x input
    (:class:`TokenRelevance`) and the patch-level gradient x attention (T, n) (see :func:`patch_relevance`).

    ``steps`` > 1: integrated gradients (Sundararajan et al. 2017) along the cross-attention contexts scaled
    from 0 to 1 (midpoint rule): the gradient is averaged over ``steps`` scaled copies, which keeps
    Σ_n R = log p(text | contexts) − log p(text | no patch content) up to the quadrature error, where a single
    gradient can be near zero for a word the model is already sure of. Costs ``steps`` LM passes."""
    _, tok, _, _ = _lm_parts(model)
    ids, strings, offsets = _encode_tokens(tok, text)
    q = pass_.query_output.shape[1]
    n = pass_.patches.shape[1]
    if not ids:
        return TokenRelevance([], [], torch.zeros(0, q), torch.zeros(0), offsets), torch.zeros(0, n)
    t = len(ids)
    device = pass_.query_output.device
    extra = extra_prefix(model, pass_)
    alphas = [(i + 0.5) / steps for i in range(steps)] if steps > 1 else [1.0]
    grads = [torch.zeros(t, *c.shape[1:], device=device) for c in pass_.contexts]
    query_rel = torch.zeros(t, q)
    own_full = None
    eye = torch.arange(t, device=device)
    for a in alphas:
        with torch.enable_grad():
            probes = [(a * c.detach()).expand(t, -1, -1).clone().requires_grad_(True) for c in pass_.contexts]
            z = _query_path(model.qformer, t, probes, None)  # (T, q, H); at a = 1 equal to pass_.query_output
            prefix = _append_extra(model.language_projection(z), extra)
            logp = _token_log_probs(model, prefix, torch.tensor(ids, device=device))
            own = logp[eye, eye]  # row t: token t
            *gs, gz = torch.autograd.grad(own.sum(), [*probes, z])
        for acc, gr in zip(grads, gs, strict=True):
            acc += gr.detach() / len(alphas)
        if a == alphas[-1]:
            query_rel = (gz * z).sum(dim=-1).detach().float().cpu()
            own_full = own.detach().float().cpu()
    if steps > 1:  # the log-probabilities reported are those of the real bag
        with torch.no_grad():
            z = _query_path(model.qformer, 1, [c.detach() for c in pass_.contexts], None)
            prefix = _append_extra(model.language_projection(z), extra)
            lp = _token_log_probs(model, prefix, torch.tensor(ids, device=device))
            own_full = lp[0].float().cpu()
    rel = TokenRelevance(ids, strings, query_rel, own_full, offsets)  # type: ignore[arg-type]
    return rel, patch_relevance(model, pass_, grads).cpu()


def positive_weights(relevance: Tensor) -> tuple[Tensor, Tensor]:
    """ρ = max(0, r) normalised per row (W, q), and which rows had no positive relevance (they get uniform
    weights: the aggregate attention map)."""
    pos = relevance.clamp(min=0)
    total = pos.sum(dim=-1, keepdim=True)
    empty = total.squeeze(-1) <= 0
    q = relevance.shape[-1]
    weights = torch.where(total > 0, pos / total.clamp(min=1e-30), torch.full_like(pos, 1.0 / max(q, 1)))
    return weights, empty


def compose(weights: Tensor, attention: Tensor) -> Tensor:
    """m = ρ A: (W, q) query weights x (q, n) cross-attention -> (W, n) patch maps."""
    return weights.to(attention.dtype) @ attention


@torch.no_grad()
def phrase_query_weights(model: Any, query_output: Tensor, phrase: str) -> Tensor:
    """ρ(k) = softmax_k(⟨v_k, t⟩ / τ) from the contrastive head (method ``"itc"``); (q,)."""
    if getattr(model, "vision_proj", None) is None:
        raise ValueError(
            "this model has no contrastive head (trained with itc_weight 0): use the 'lm' phrase method"
        )
    ids, tmask = model._tokenize_text([phrase])
    text = model.qformer(None, None, ids, tmask, need_weights=False).query_output.mean(dim=1)  # (1, H)
    v = F.normalize(model.vision_proj(query_output.to(model.device)), dim=-1)  # (q, e)
    t = F.normalize(model.text_proj(text), dim=-1)[0]  # (e,)
    return torch.softmax((v @ t) / model.temp.clamp(min=1e-3), dim=0).float()


@torch.no_grad()
def joint_attention(model: Any, features: Tensor, phrase: str, mask: Tensor | None = None) -> Tensor:
    """The queries' cross-attention over patches with ``phrase`` beside them (method ``"joint"``): (q, n).

    Needs the Q-Former's text side (load with ``text_side=True``)."""
    patches, mask = model._encode(features, mask, "image_text")
    ids, tmask = model._tokenize_text([phrase])
    out = model.qformer(patches, mask, ids, tmask, need_weights=True)
    return out.cross_attention[0].float()


def words_of(text: str, rel: TokenRelevance) -> tuple[list[str], Tensor]:
    """Whitespace words of ``text`` and their summed token relevance (W, q). Without token offsets every
    token is its own word (its token string)."""
    index = token_words(text, rel.offsets, len(rel.token_ids))
    exact = rel.offsets is not None and len(rel.offsets) == len(rel.token_ids) and bool(word_spans(text))
    words = text.split() if exact else list(rel.tokens)
    count = max(index, default=-1) + 1
    out = torch.zeros(count, rel.relevance.shape[-1])
    for t, wi in enumerate(index):
        out[wi] += rel.relevance[t]
    return words[:count], out


@torch.no_grad()
def singleton_log_probs(
    model: Any, features: Tensor, text: str, *, batch: int = 256
) -> tuple[list[int], Tensor]:
    """log p(w_t | patch n alone, w_<t) for every LM token t of ``text`` and every patch n: the trained model
    applied to each patch as a bag of one (instance-level scoring of a MIL model). (T, n).

    With one patch, each query's cross-attention is 1 on it, so the Q-Former's contexts are that patch's
    values: the map asks what the caption model would say about the patch if it saw nothing else. Cost: n
    correlation + query-path + LM passes, ``batch`` patches at a time."""
    _, tok, _, _ = _lm_parts(model)
    ids, _, _ = _encode_tokens(tok, text)
    n = features.shape[1]
    out = torch.zeros(len(ids), n)
    if not ids:
        return ids, out
    token_ids = torch.tensor(ids, device=model.device)
    for s in range(0, n, batch):
        x = features[0, s : s + batch].to(model.device)[:, None, :]  # (b, 1, d): bags of one patch
        mask = torch.ones(x.shape[0], 1, dtype=torch.bool, device=model.device)
        patches = model.correlation(x, mask)
        image_only = model.qformer(patches, mask, need_weights=False, need_lse=model._needs_lse)
        prefix = model.caption_prefix_embeddings(x, mask, image_only)  # + caption_prefix tokens when on
        out[:, s : s + batch] = _token_log_probs(model, prefix, token_ids).T.float().cpu()
    return ids, out
