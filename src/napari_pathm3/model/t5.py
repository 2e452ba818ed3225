"""A T5 encoder-decoder in plain torch, for the scratch caption LM (``LanguageConfig(name=None)``).

Same module names as ``transformers``' ``T5ForConditionalGeneration`` (``shared``, ``encoder.block.i.layer.0
.SelfAttention.q``, ``decoder.block.i.layer.1.EncDecAttention.k``, ``lm_head``, ...), hence the same state-dict
keys: checkpoints written with the transformers model load here and the other way round. Built from the
``language_model/config.json`` a checkpoint stores, without importing transformers (about 2 s of start-up).
The forward follows transformers 5's SDPA path op for op (pre-LN RMS norms, relative position bias from the
first layer shared by the others, no 1/sqrt(d) scaling, tied-embedding output scaling), so logits match to
float rounding; tests/model/test_native_lm.py checks it.

Dimensions: b batch, s encoder positions, t decoder positions, h heads, d head width, D model width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NativeT5", "SavedConfig", "T5Settings", "supports_t5"]

_MIN = torch.finfo(torch.float32).min


@dataclass(frozen=True)
class T5Settings:
    """The fields of an HF ``T5Config`` this implementation uses (read from its config.json; a missing field
    takes T5Config's default)."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int | None = None  # None: num_layers
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    tie_word_embeddings: bool = True
    scale_decoder_outputs: bool = True  # tied embeddings: decoder output times d_model ** -0.5
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0


class SavedConfig:
    """Stands in for the HF config object: ``save_pretrained`` writes the config.json it was read from."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = dict(data)
        self.model_type = data.get("model_type")

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def save_pretrained(self, directory: str | Path) -> None:
        from ..jsonfile import write_json_atomic

        write_json_atomic(Path(directory) / "config.json", self._data, sort_keys=True)


def supports_t5(data: dict[str, Any]) -> bool:
    """True when an HF config dict describes a T5 this module implements (ReLU feed-forward, not gated)."""
    act = data.get("feed_forward_proj", "relu")
    return data.get("model_type") == "t5" and act == "relu" and not data.get("is_gated_act", False)


def _settings(data: dict[str, Any]) -> T5Settings:
    fields = T5Settings.__dataclass_fields__
    kw = {k: data[k] for k in fields if data.get(k) is not None}
    # as transformers 5 reads a saved T5 config: embeddings always tied; the decoder output scaled as the
    # file says, or (older files) unless it says tie_word_embeddings false (T5 v1.1)
    if "scale_decoder_outputs" not in data:
        kw["scale_decoder_outputs"] = data.get("tie_word_embeddings") is not False
    kw["tie_word_embeddings"] = True
    return T5Settings(**kw)


class _LayerNorm(nn.Module):
    """T5's RMS norm: scale only, no mean subtraction, no bias."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.variance_epsilon)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


def _bucket(relative: Tensor, *, bidirectional: bool, num_buckets: int, max_distance: int) -> Tensor:
    """Relative position -> bucket id (Mesh TensorFlow / T5): exact for small distances, log-spaced beyond."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative > 0).to(torch.long) * num_buckets
        relative = torch.abs(relative)
    else:
        relative = -torch.min(relative, torch.zeros_like(relative))
    max_exact = num_buckets // 2
    is_small = relative < max_exact
    large = max_exact + (
        torch.log(relative.float() / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(is_small, relative, large)


class _Attention(nn.Module):
    def __init__(self, s: T5Settings, *, relative_bias: bool, decoder: bool) -> None:
        super().__init__()
        self.s, self.decoder, self.heads = s, decoder, s.num_heads
        inner = s.num_heads * s.d_kv
        self.q = nn.Linear(s.d_model, inner, bias=False)
        self.k = nn.Linear(s.d_model, inner, bias=False)
        self.v = nn.Linear(s.d_model, inner, bias=False)
        self.o = nn.Linear(inner, s.d_model, bias=False)
        self.has_relative_attention_bias = relative_bias
        if relative_bias:
            self.relative_attention_bias = nn.Embedding(s.relative_attention_num_buckets, s.num_heads)

    def compute_bias(self, t: int, s_len: int, device: torch.device) -> Tensor:
        """(1, h, t, s) bias from the bucketed relative positions."""
        rel = torch.arange(s_len, device=device)[None, :] - torch.arange(t, device=device)[:, None]
        bucket = _bucket(
            rel,
            bidirectional=not self.decoder,
            num_buckets=self.s.relative_attention_num_buckets,
            max_distance=self.s.relative_attention_max_distance,
        )
        return self.relative_attention_bias(bucket).permute([2, 0, 1]).unsqueeze(0)

    def forward(
        self, x: Tensor, context: Tensor | None, mask: Tensor | None, bias: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """x (b, t, D) attends to context (b, s, D) (itself when None); mask bool (b|1, 1, t|1, s), True =
        attend, or None. The bias goes where the mask allows, float min elsewhere (as transformers' SDPA path
        builds it: the same values bit for bit, in training too)."""
        b, t, _ = x.shape
        src = x if context is None else context
        q = self.q(x).view(b, t, -1, self.s.d_kv).transpose(1, 2)  # (b, h, t, d)
        k = self.k(src).view(b, src.shape[1], -1, self.s.d_kv).transpose(1, 2)
        v = self.v(src).view(b, src.shape[1], -1, self.s.d_kv).transpose(1, 2)
        if bias is None:
            if self.has_relative_attention_bias:
                bias = self.compute_bias(t, k.shape[2], x.device)
            else:
                bias = torch.zeros(1, self.heads, t, k.shape[2], device=x.device, dtype=q.dtype)
        full = bias if mask is None else torch.where(mask, bias, _MIN)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=full.contiguous(),
            dropout_p=self.s.dropout_rate if self.training else 0.0,
            scale=1.0,
        )
        return self.o(out.transpose(1, 2).reshape(b, t, -1)), bias


class _SelfAttentionLayer(nn.Module):
    def __init__(self, s: T5Settings, *, relative_bias: bool, decoder: bool) -> None:
        super().__init__()
        self.SelfAttention = _Attention(s, relative_bias=relative_bias, decoder=decoder)  # noqa: N815 - HF name
        self.layer_norm = _LayerNorm(s.d_model, s.layer_norm_epsilon)
        self.dropout = nn.Dropout(s.dropout_rate)

    def forward(self, x: Tensor, mask: Tensor | None, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        out, bias = self.SelfAttention(self.layer_norm(x), None, mask, bias)
        return x + self.dropout(out), bias


class _CrossAttentionLayer(nn.Module):
    def __init__(self, s: T5Settings) -> None:
        super().__init__()
        self.EncDecAttention = _Attention(s, relative_bias=False, decoder=True)  # noqa: N815 - HF name
        self.layer_norm = _LayerNorm(s.d_model, s.layer_norm_epsilon)
        self.dropout = nn.Dropout(s.dropout_rate)

    def forward(
        self, x: Tensor, context: Tensor, mask: Tensor | None, bias: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        out, bias = self.EncDecAttention(self.layer_norm(x), context, mask, bias)
        return x + self.dropout(out), bias


class _DenseReluDense(nn.Module):
    def __init__(self, s: T5Settings) -> None:
        super().__init__()
        self.wi = nn.Linear(s.d_model, s.d_ff, bias=False)
        self.wo = nn.Linear(s.d_ff, s.d_model, bias=False)
        self.dropout = nn.Dropout(s.dropout_rate)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dropout(F.relu(self.wi(x)))
        return self.wo(h.to(self.wo.weight.dtype) if h.dtype != self.wo.weight.dtype else h)


class _FeedForwardLayer(nn.Module):
    def __init__(self, s: T5Settings) -> None:
        super().__init__()
        self.DenseReluDense = _DenseReluDense(s)  # noqa: N815 - HF name
        self.layer_norm = _LayerNorm(s.d_model, s.layer_norm_epsilon)
        self.dropout = nn.Dropout(s.dropout_rate)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.dropout(self.DenseReluDense(self.layer_norm(x)))


class _Block(nn.Module):
    def __init__(self, s: T5Settings, *, first: bool, decoder: bool) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_SelfAttentionLayer(s, relative_bias=first, decoder=decoder)])
        if decoder:
            self.layer.append(_CrossAttentionLayer(s))
        self.layer.append(_FeedForwardLayer(s))

    def forward(
        self,
        h: Tensor,
        mask: Tensor | None,
        bias: Tensor | None,
        context: Tensor | None,
        context_mask: Tensor | None,
        cross_bias: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Self-attention, cross-attention (decoder, with ``context``), feed-forward; the biases the first
        block computes are passed on to the others."""
        h, bias = self.layer[0](h, mask, bias)
        if len(self.layer) == 3 and context is not None:
            h, cross_bias = self.layer[1](h, context, context_mask, cross_bias)
        return self.layer[-1](h), bias, cross_bias


class _Stack(nn.Module):
    def __init__(self, s: T5Settings, shared: nn.Embedding, *, decoder: bool) -> None:
        super().__init__()
        self.embed_tokens = shared  # tied: stored once in the state dict (checkpoint aliases)
        self.decoder = decoder
        n = (s.num_decoder_layers or s.num_layers) if decoder else s.num_layers
        self.block = nn.ModuleList(_Block(s, first=i == 0, decoder=decoder) for i in range(n))
        self.final_layer_norm = _LayerNorm(s.d_model, s.layer_norm_epsilon)
        self.dropout = nn.Dropout(s.dropout_rate)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        """x (b, t, D) embeddings; mask/context_mask bool (b|1, 1, t|1, t|s), True = attend, or None."""
        h = self.dropout(x)
        bias = cross_bias = None
        for block in self.block:
            h, bias, cross_bias = block(h, mask, bias, context, context_mask, cross_bias)
        return self.dropout(self.final_layer_norm(h))


def _padding_mask(attention_mask: Tensor | None) -> Tensor | None:
    """(b, s) 1/0 -> bool (b, 1, 1, s); None when every position is real."""
    if attention_mask is None or bool(attention_mask.bool().all()):
        return None
    return attention_mask.bool()[:, None, None, :]


def _causal_mask(t: int, device: torch.device) -> Tensor:
    """(1, 1, t, t) bool, True on and below the diagonal."""
    return (torch.arange(t, device=device)[:, None] >= torch.arange(t, device=device)[None, :])[None, None]


@dataclass
class Seq2SeqOutput:
    logits: Tensor  # (b, t, vocab)
    loss: Tensor | None = None


class NativeT5(nn.Module):
    """``T5ForConditionalGeneration``'s parameters and forward (no KV cache, no gated activations)."""

    is_native = True
    kind = "seq2seq"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        s = _settings(config)
        self.settings, self.config = s, SavedConfig(config)
        self.shared = nn.Embedding(s.vocab_size, s.d_model)
        self.encoder = _Stack(s, self.shared, decoder=False)
        self.decoder = _Stack(s, self.shared, decoder=True)
        self.lm_head = nn.Linear(s.d_model, s.vocab_size, bias=False)
        if s.tie_word_embeddings:
            self.lm_head.weight = self.shared.weight

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def encode(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(b, s, D) encoder states."""
        return self.encoder(inputs_embeds, _padding_mask(attention_mask))

    def decode(self, decoder_ids: Tensor, encoded: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Logits (b, t, vocab) of every decoder position, causal over ``decoder_ids`` (b, t)."""
        x = self.shared(decoder_ids)
        h = self.decoder(x, _causal_mask(x.shape[1], x.device), encoded, _padding_mask(attention_mask))
        if self.settings.scale_decoder_outputs:
            h = h * (self.settings.d_model**-0.5)
        return self.lm_head(h)

    def shift_right(self, labels: Tensor) -> Tensor:
        """Decoder inputs for teacher forcing: start token, then the labels (-100 -> pad) minus the last."""
        ids = labels.new_zeros(labels.shape)
        ids[..., 1:] = labels[..., :-1].clone()
        ids[..., 0] = self.settings.decoder_start_token_id
        return ids.masked_fill_(ids == -100, self.settings.pad_token_id)

    def forward(
        self,
        inputs_embeds: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        decoder_input_ids: Tensor | None = None,
    ) -> Seq2SeqOutput:
        """Teacher-forced logits and, with ``labels`` (b, t; -100 = ignored), their mean cross-entropy."""
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("NativeT5: pass labels or decoder_input_ids")
            decoder_input_ids = self.shift_right(labels)
        logits = self.decode(decoder_input_ids, self.encode(inputs_embeds, attention_mask), attention_mask)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)), labels.to(logits.device).view(-1), ignore_index=-100
            )
        return Seq2SeqOutput(logits=logits, loss=loss)
