"""AdamW parameter groups: which tensors get weight decay."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def weight_decay_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float, *, rule: str
) -> list[dict[str, object]]:
    """Two AdamW groups of the trainable parameters: ``weight_decay`` except on biases and norms (rule
    ``"lavis"``, BLIP-2's trainer: every tensor with one dimension or named ``*.bias``), and also embeddings and
    query tokens (rule ``"norms_biases_embeddings"``)."""
    lavis = rule == "lavis"
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in named_parameters:
        if not p.requires_grad:
            continue
        if lavis:  # LAVIS Blip2Base.get_optimizer_params, verbatim
            plain = p.ndim == 1 or name.endswith(".bias")
        else:
            plain = (
                p.ndim < 2 or "norm" in name.lower() or "embeddings" in name or name.endswith("query_tokens")
            )
        (no_decay if plain else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
