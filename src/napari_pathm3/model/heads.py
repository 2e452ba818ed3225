"""Task heads on the Q-Former's query outputs."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["QueryClassifier", "classification_loss"]


class QueryClassifier(nn.Linear):
    """One linear classifier applied to every query output; the K per-query logits are averaged (paper §3).

    A plain ``nn.Linear`` subclass so the state-dict keys stay ``classifier.weight`` / ``classifier.bias``.
    """

    def __init__(self, hidden_size: int, num_classes: int) -> None:
        super().__init__(hidden_size, num_classes)

    def forward(self, query_output: Tensor) -> Tensor:
        """(b, q, H) query outputs -> (b, C) logits averaged over queries."""
        return super().forward(query_output).mean(dim=1)


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """L_C, eq. (3): cross-entropy of the query-averaged logits (b, C) against labels (b,)."""
    return F.cross_entropy(logits.float(), labels.long())
