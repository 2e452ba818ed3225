"""A GPT-2 decoder in plain torch, for a scratch causal caption LM (``LanguageConfig(name=None, kind="causal")``).

Same module names as ``transformers``' ``GPT2LMHeadModel`` (``transformer.wte``, ``transformer.h.i.attn.c_attn``,
``transformer.h.i.mlp.c_proj``, ``lm_head``, ...) and GPT-2's Conv1D layout (weights stored (in, out)), so the
state-dict keys and shapes are the same in both directions. Built from a checkpoint's
``language_model/config.json`` without importing transformers. The forward follows transformers 5's SDPA
path (pre-LN blocks, learned absolute positions, tanh GELU, dropout in the same places), so logits match to
float rounding; tests/model/test_native_lm.py checks it.

Dimensions: b batch, t positions, h heads, d head width, D model width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .t5 import SavedConfig

__all__ = ["GPT2Settings", "NativeGPT2", "supports_gpt2"]


@dataclass(frozen=True)
class GPT2Settings:
    """The fields of an HF ``GPT2Config`` used here (a missing field takes GPT2Config's default)."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # None: 4 x n_embd
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True


def supports_gpt2(data: dict[str, Any]) -> bool:
    """True when an HF config dict describes a GPT-2 this module implements (plain GPT-2 attention)."""
    return (
        data.get("model_type") == "gpt2"
        and data.get("activation_function", "gelu_new") == "gelu_new"
        and data.get("scale_attn_weights", True)
        and not data.get("scale_attn_by_inverse_layer_idx", False)
        and not data.get("reorder_and_upcast_attn", False)
        and not data.get("add_cross_attention", False)
    )


class Conv1D(nn.Module):
    """GPT-2's linear layer: ``x @ weight + bias`` with ``weight`` stored (in, out)."""

    def __init__(self, out_features: int, in_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight).view(*x.shape[:-1], -1)


class _Attention(nn.Module):
    def __init__(self, s: GPT2Settings) -> None:
        super().__init__()
        self.heads, self.p = s.n_head, s.attn_pdrop
        self.c_attn = Conv1D(3 * s.n_embd, s.n_embd)
        self.c_proj = Conv1D(s.n_embd, s.n_embd)
        self.attn_dropout = nn.Dropout(s.attn_pdrop)
        self.resid_dropout = nn.Dropout(s.resid_pdrop)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, t, width = x.shape
        q, k, v = (
            z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.c_attn(x).split(width, dim=2)
        )  # (b, h, t, d) each
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0
        )
        return self.resid_dropout(self.c_proj(out.transpose(1, 2).reshape(b, t, width)))


class _MLP(nn.Module):
    def __init__(self, s: GPT2Settings) -> None:
        super().__init__()
        inner = s.n_inner or 4 * s.n_embd
        self.c_fc = Conv1D(inner, s.n_embd)
        self.c_proj = Conv1D(s.n_embd, inner)
        self.dropout = nn.Dropout(s.resid_pdrop)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class _Block(nn.Module):
    def __init__(self, s: GPT2Settings) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(s.n_embd, eps=s.layer_norm_epsilon)
        self.attn = _Attention(s)
        self.ln_2 = nn.LayerNorm(s.n_embd, eps=s.layer_norm_epsilon)
        self.mlp = _MLP(s)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    """``GPT2Model``'s parameters: token and position embeddings, blocks, final LayerNorm."""

    def __init__(self, s: GPT2Settings) -> None:
        super().__init__()
        self.wte = nn.Embedding(s.vocab_size, s.n_embd)
        self.wpe = nn.Embedding(s.n_positions, s.n_embd)
        self.drop = nn.Dropout(s.embd_pdrop)
        self.h = nn.ModuleList(_Block(s) for _ in range(s.n_layer))
        self.ln_f = nn.LayerNorm(s.n_embd, eps=s.layer_norm_epsilon)

    def forward(self, inputs_embeds: Tensor, mask: Tensor) -> Tensor:
        t = inputs_embeds.shape[1]
        h = self.drop(inputs_embeds + self.wpe(torch.arange(t, device=inputs_embeds.device))[None])
        for block in self.h:
            h = block(h, mask)
        return self.ln_f(h)


@dataclass
class CausalOutput:
    logits: Tensor  # (b, t, vocab)
    loss: Tensor | None = None


class NativeGPT2(nn.Module):
    """``GPT2LMHeadModel``'s parameters and forward on input embeddings (no KV cache)."""

    is_native = True
    kind = "causal"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        fields = GPT2Settings.__dataclass_fields__
        s = GPT2Settings(**{k: config[k] for k in fields if config.get(k) is not None})
        self.settings, self.config = s, SavedConfig(config)
        self.transformer = _Transformer(s)
        self.lm_head = nn.Linear(s.n_embd, s.vocab_size, bias=False)
        if s.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def logits(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(b, t, vocab) next-token logits at every position of ``inputs_embeds`` (b, t, D)."""
        b, t, _ = inputs_embeds.shape
        keep = torch.ones(t, t, dtype=torch.bool, device=inputs_embeds.device).tril()[
            None, None
        ]  # (1, 1, t, t)
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            keep = keep & attention_mask.bool()[:, None, None, :]
        dtype = inputs_embeds.dtype
        mask = torch.where(keep, 0.0, torch.finfo(dtype).min).to(dtype)
        return self.lm_head(self.transformer(inputs_embeds, mask))

    def forward(
        self, inputs_embeds: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None
    ) -> CausalOutput:
        """Logits and, with ``labels`` (b, t; -100 = ignored), the mean next-token cross-entropy."""
        logits = self.logits(inputs_embeds, attention_mask)
        loss = None
        if labels is not None:
            shifted = F.pad(labels.to(logits.device), (0, 1), value=-100)[..., 1:]
            loss = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), shifted.reshape(-1), ignore_index=-100
            )
        return CausalOutput(logits=logits, loss=loss)
