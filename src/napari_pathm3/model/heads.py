"""Task heads on the Q-Former's query outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CONTRAST_DIM", "QueryClassifier", "classification_loss", "contrastive_loss"]


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


#: width of the shared image-text embedding of the contrastive objective (BLIP-2's ``embed_dim``)
CONTRAST_DIM = 256
#: initial and allowed temperature of the contrastive logits (BLIP-2: 0.07, clamped to [0.001, 0.5])
TEMP_INIT, TEMP_RANGE = 0.07, (0.001, 0.5)


def contrastive_loss(image_embeds: Tensor, text_embeds: Tensor, groups: Tensor, temp: Tensor) -> Tensor:
    """Image-text contrastive loss (BLIP-2's ITC) between query outputs and caption embeddings.

    Args:
        image_embeds: (b, q, e) L2-normalised projected query outputs of the image-only pass.
        text_embeds: (b, e) L2-normalised projected caption embeddings.
        groups: (b,) caption ids: bags with the same caption are all positives of each other (a small
            grammar repeats captions inside a batch; BLIP-2's one-hot targets would call them negatives).
        temp: the temperature (scalar tensor).

    Returns:
        Mean of the image->text and text->image cross-entropies against the uniform distribution over each
        row's positives. As in BLIP-2 the similarity of a bag and a caption is the best-matching query's.
    """
    sim = torch.einsum("bqe,ce->bcq", image_embeds.float(), text_embeds.float()).amax(dim=-1) / temp  # (b, b)
    pos = (groups[:, None] == groups[None, :]).float()
    targets = pos / pos.sum(dim=1, keepdim=True)
    i2t = -(targets * F.log_softmax(sim, dim=1)).sum(dim=1).mean()
    t2i = -(targets * F.log_softmax(sim.t(), dim=1)).sum(dim=1).mean()
    return 0.5 * (i2t + t2i)
