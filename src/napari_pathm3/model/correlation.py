"""Correlation module, paper eq. (1): ``E = MSA(LN(E)) + E`` over the patches of a bag."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import CorrelationConfig
from .nystrom import NystromAttention

__all__ = ["CorrelationModule"]


class CorrelationModule(nn.Module):
    """Projects frozen-encoder patch features to ``hidden_size`` and lets the patches attend to each other.

    ``proj`` (Linear + ReLU, TransMIL's ``_fc1``) -> ``E + MSA(LN(E))`` with Nyström attention (eq. (1), (2))
    -> ``out_norm`` (TransMIL's final LayerNorm; BLIP-2's ``ln_vision`` before the Q-Former).

    ``use_attention=False`` (``PathM3Config.use_correlation=False``, the paper's "without correlation"
    ablation) keeps the projection and ``out_norm`` but drops the self-attention: every patch is embedded on
    its own. ``norm`` and ``attention`` are then not built, so such a checkpoint has no weights for them.
    """

    def __init__(self, feature_dim: int, config: CorrelationConfig, *, use_attention: bool = True) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Linear(feature_dim, config.hidden_size)
        self.norm: nn.LayerNorm | None = None
        self.attention: NystromAttention | None = None
        if use_attention:
            self.norm = nn.LayerNorm(config.hidden_size)
            self.attention = NystromAttention(
                config.hidden_size,
                heads=config.num_heads,
                num_landmarks=config.num_landmarks,
                pinv_iterations=config.pinv_iterations,
                mode=config.attention,
                dropout=config.dropout,
                chunk_size=config.chunk_size,
            )
        self.out_norm = nn.LayerNorm(config.hidden_size)

    def _project(self, features: Tensor) -> Tensor:
        """ReLU(W_p F + b_p). Without autograd chunk by chunk into one (b, n, D) tensor, so float16 features
        are never copied whole to float32 and no (n, d)-sized GEMM workspace is needed."""
        dtype = self.proj.weight.dtype
        if torch.is_grad_enabled():
            return torch.relu_(self.proj(features.to(dtype)))
        b, n, _ = features.shape
        e = torch.empty(b, n, self.config.hidden_size, dtype=dtype, device=features.device)
        c = self.config.chunk_size
        for s in range(0, n, c):
            e[:, s : s + c] = torch.relu_(self.proj(features[:, s : s + c].to(dtype)))
        return e

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """Correlated patch embeddings.

        Args:
            features: (b, n, feature_dim) patch features.
            mask: (b, n) bool, True for real patches (None: no padding).

        Returns:
            (b, n, hidden_size); padded rows carry no information and must stay masked downstream.
        """
        e = self._project(features)  # (b, n, D)
        if self.attention is not None:
            e = self.attention(e, mask, norm=self.norm, residual=True)  # eq. (1)
        if torch.is_grad_enabled():
            return self.out_norm(e)
        # inference: normalise in place, chunk by chunk, so a 100k-patch bag holds one (n, D) tensor
        c = self.config.chunk_size
        for s in range(0, e.shape[1], c):
            e[:, s : s + c] = self.out_norm(e[:, s : s + c])
        return e
