"""Extra caption-LM prefix tokens (not in the paper; ``PathM3Config.caption_prefix``, docs/method.md §5a).

The LM reads the q projected query outputs (BLIP-2). Two switchable additions, appended after them:

* **Count tokens** (``count_tokens`` = K > 0). Softmax cross-attention returns a weighted *average* over
  patches, so a bag with one key instance and a bag with four give nearly the same query outputs: how many
  instances a bag holds is lost. K gated sum-pooling heads keep it (gated attention scores, Ilse et al. 2018,
  without the softmax):

      s_kn = w_kᵀ (tanh(V x_n) ⊙ σ(U x_n)) + b_k        x_n: patch n's own feature (b, n, d)
      c_k  = Σ_n σ(s_kn)                                  soft count of the patches head k fires on
      u_k  = log(1 + c_k)
      token_k = W_out GELU(a_k u_k + β_k) + p_k           a_k, β_k ∈ R^h per head; p_k a per-head embedding

  (a per-head MLP of one scalar: its GELU units act as learned count thresholds). c_k is unnormalised, so it
  grows with the number of instances the head detects, independent of how many distractors surround them.
  With ``count_classifier`` the log-counts also classify the bag on their own, an auxiliary cross-entropy
  ``CE(W_c u + b_c, y)`` added to L_C (the model's prediction stays eq. (3)'s), so the bag labels train the
  gates as instance detectors (sum-pooling MIL); through the count words alone, or as a term added to the
  query logits, they did not learn within a default run (docs/method.md §5a).
  With ``count_source="attention"`` the tokens read the Q-Former queries' own cross-attention instead: the
  log-normaliser of query j's softmax in cross-attention layer l, head h,

      λ_jlh = log Σ_n exp(q_jlh · k_lh(e_n) / √d)         (log of the unnormalised attention mass)
      tokens = reshape(W_2 GELU(W_1 λ + b_1) + b_2, (K, W)) + p         λ ∈ R^{q·L·h} flattened

  If a query's logits are high on key instances (which classification already trains) λ ≈ s_key + log n_key.
* **Class token** (``class_token``): ``Embedding(C, LM width)`` of a class: the true class in training
  (teacher forcing; the predicted class for a bag without a label) and the classifier's predicted class at
  inference, so the caption is decoded for the class the head reports. The reference caption is never fed
  back: only a class index.

Dimensions: b bags, n patches, d patch feature width, K count heads, h hidden, W LM width, C classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import CaptionPrefixConfig

__all__ = ["AttentionCountTokens", "CaptionPrefix", "CountTokens", "conditioning_classes"]

#: initial gate bias: σ(−2) ≈ 0.12, so an untrained head does not start by counting every patch
_GATE_BIAS = -2.0


class CountTokens(nn.Module):
    """K gated sum-pooling heads over patches -> K prefix tokens (b, K, W) and the soft counts (b, K)."""

    def __init__(self, width: int, lm_width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.gate_v = nn.Linear(width, hidden)
        self.gate_u = nn.Linear(width, hidden)
        self.score = nn.Linear(hidden, heads)
        nn.init.constant_(self.score.bias, _GATE_BIAS)
        self.slope = nn.Parameter(torch.randn(heads, hidden))  # a_k
        self.offset = nn.Parameter(torch.randn(heads, hidden))  # β_k
        self.out = nn.Linear(hidden, lm_width)
        self.head_embedding = nn.Parameter(torch.randn(heads, lm_width) * 0.02)  # p_k

    def log_counts(self, patches: Tensor, mask: Tensor) -> Tensor:
        """u = log(1 + c) (b, K)."""
        return torch.log1p(self.counts(patches, mask))

    def counts(self, patches: Tensor, mask: Tensor) -> Tensor:
        """Soft counts c (b, K) of the valid patches (padding counts 0)."""
        gated = torch.tanh(self.gate_v(patches)) * torch.sigmoid(self.gate_u(patches))  # (b, n, h)
        fire = torch.sigmoid(self.score(gated))  # (b, n, K)
        return (fire * mask[..., None].to(fire.dtype)).sum(dim=1)

    def forward(self, patches: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        c = self.counts(patches, mask)
        u = torch.log1p(c)[..., None]  # (b, K, 1)
        hidden = nn.functional.gelu(u * self.slope + self.offset)  # (b, K, h)
        return self.out(hidden) + self.head_embedding, c


class AttentionCountTokens(nn.Module):
    """K prefix tokens (b, K, W) from the queries' cross-attention log-normalisers (b, q, L·h)."""

    def __init__(self, features: int, lm_width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads, self.lm_width = heads, lm_width
        self.encode = nn.Sequential(
            nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, heads * lm_width)
        )
        self.head_embedding = nn.Parameter(torch.randn(heads, lm_width) * 0.02)

    def forward(self, log_normaliser: Tensor) -> Tensor:
        b = log_normaliser.shape[0]
        out = self.encode(log_normaliser.reshape(b, -1).float()).view(b, self.heads, self.lm_width)
        return out + self.head_embedding


class CaptionPrefix(nn.Module):
    """The extra prefix tokens of ``config`` (count tokens, then the class token)."""

    def __init__(
        self, config: CaptionPrefixConfig, *, width: int, lm_width: int, num_classes: int, lse_features: int
    ) -> None:
        """``width``: patch feature width d; ``lse_features``: q·L·h log-normalisers per bag."""
        super().__init__()
        self.config = config
        self.count: CountTokens | AttentionCountTokens
        self.count_logits: nn.Module
        if config.count_tokens > 0 and config.count_source == "attention":
            self.count = AttentionCountTokens(
                lse_features, lm_width, config.count_tokens, config.count_hidden
            )
        elif config.count_tokens > 0:
            self.count = CountTokens(width, lm_width, config.count_tokens, config.count_hidden)
        if config.count_tokens > 0 and config.count_source == "gate" and config.count_classifier:
            self.count_logits = nn.Linear(config.count_tokens, num_classes)  # an auxiliary classifier
        if config.class_token:
            self.class_embedding = nn.Embedding(num_classes, lm_width)
            nn.init.normal_(self.class_embedding.weight, std=0.02)

    def class_logits(self, patches: Tensor, mask: Tensor) -> Tensor | None:
        """The count heads' own class logits (b, C): ``W_c u + b_c`` (None without ``count_classifier``)."""
        if not hasattr(self, "count_logits") or not isinstance(self.count, CountTokens):
            return None  # the auxiliary classifier exists only beside the gated count heads
        return self.count_logits(self.count.log_counts(patches, mask))

    @property
    def needs_log_normaliser(self) -> bool:
        return self.config.count_tokens > 0 and self.config.count_source == "attention"

    def forward(
        self, patches: Tensor, mask: Tensor, classes: Tensor | None, log_normaliser: Tensor | None = None
    ) -> Tensor:
        """(b, extra_tokens, W). ``classes`` (b,) class indices, required with the class token;
        ``log_normaliser`` (b, q, L·h) the image-only pass's, required with ``count_source="attention"``."""
        parts = []
        if self.needs_log_normaliser:
            if log_normaliser is None:
                raise ValueError("caption_prefix.count_source='attention' needs the queries' log-normalisers")
            parts.append(self.count(log_normaliser).to(patches.dtype))
        elif self.config.count_tokens > 0:
            parts.append(self.count(patches, mask)[0])
        if self.config.class_token:
            if classes is None:
                raise ValueError("caption_prefix.class_token needs a class index per bag")
            parts.append(self.class_embedding(classes.to(patches.device))[:, None])
        return torch.cat(parts, dim=1)


def conditioning_classes(labels: Tensor | None, logits: Tensor) -> Tensor:
    """Class per bag for the class token: the label where known (teacher forcing in training), else the
    classifier's prediction (argmax of ``logits`` (b, C), e.g. image-only logits; no gradient)."""
    predicted = logits.detach().argmax(dim=-1)
    if labels is None:
        return predicted
    labels = labels.to(predicted.device)
    return torch.where(labels >= 0, labels, predicted)
