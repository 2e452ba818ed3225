"""What the model returns: :class:`PathM3Output` (forward) and :class:`Classification` (classify)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["Classification", "PathM3Output"]


@dataclass
class PathM3Output:
    """Result of :meth:`PathM3Model.forward`. Losses are None when their targets were not given."""

    logits: Tensor | None  # (b, C), averaged over queries
    loss: Tensor | None  # eq. (4): alpha * loss_cls + (1 - alpha) * loss_caption; absent terms left out
    loss_cls: Tensor | None  # eq. (3)
    loss_caption: Tensor | None  # L_G: LM token cross-entropy over the bags that have a caption
    query_attention: Tensor | None  # (b, q, n): cross-attention over patches (heads and layers averaged)
    query_output: Tensor | None = None  # (b, q, H) query outputs of the classification pass
    loss_itc: Tensor | None = (
        None  # image-text contrastive loss (``config.itc_weight`` > 0; not in the paper)
    )


@dataclass
class Classification:
    """Result of :meth:`PathM3Model.classify`."""

    probabilities: Tensor  # (b, C) softmax of the query-averaged logits
    logits: Tensor  # (b, C)
    query_attention: Tensor | None  # (b, q, n); None in text mode
    class_names: tuple[str, ...]
