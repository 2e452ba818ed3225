"""Training objectives of PathM3 on top of the query outputs: L_G (caption), L_ITC (image-text contrastive,
not in the paper) and their weighted sum with L_C (eq. (4)); plus the per-bag text masking they share.

Functions take the :class:`~napari_pathm3.model.pathm3.PathM3Model` whose parts they use, so the model module
stays a composition of parts. Dimensions: b bags, q queries, H Q-Former width, e contrastive width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import PathM3Config
from .heads import TEMP_RANGE, contrastive_loss
from .language import caption_loss

__all__ = ["caption_objective", "classification_text", "contrastive_objective", "present", "total_loss"]


def present(items: Sequence[str | None]) -> list[bool]:
    """Which entries hold text (None and blank strings are missing)."""
    return [s is not None and str(s).strip() != "" for s in items]


def caption_objective(
    model: Any, query_output: Tensor, captions: Sequence[str | None], *, extra: Tensor | None = None
) -> Tensor | None:
    """L_G over the bags that have a caption (None when none has): per-bag masking.

    ``query_output`` (b, q, H) must come from the image-only query pass: the prefix the LM gets at inference.
    ``extra`` (b, k, W): prefix tokens appended after the projected queries (``config.caption_prefix``).
    """
    keep = [i for i, p in enumerate(present(captions)) if p]
    if not keep:
        return None
    whole = len(keep) == len(captions)
    rows = query_output if whole else query_output[keep]
    prefix = model.language_projection(rows)
    if extra is not None:
        prefix = torch.cat([prefix, (extra if whole else extra[keep]).to(prefix.dtype)], dim=1)
    lang = model.config.language
    return caption_loss(
        model.language_model,
        model.lm_tokenizer,
        lang.kind,
        prefix,
        [str(captions[i]) for i in keep],
        prompt=lang.prompt,
        max_tokens=lang.max_caption_tokens,
    )


def contrastive_objective(model: Any, query_output: Tensor, captions: Sequence[str | None]) -> Tensor | None:
    """L_ITC between image-only query outputs (b, q, H) and the captions read by the Q-Former's text side.

    The text side runs the queries with the caption tokens and no patches (as ``mode="text"``); the mean of
    its query outputs is the caption's embedding. None when ``config.itc_weight`` is 0 or the batch holds
    fewer than two different captions (nothing to contrast).
    """
    if model.config.itc_weight <= 0:
        return None
    keep = [i for i, p in enumerate(present(captions)) if p]
    texts = [str(captions[i]).strip() for i in keep]
    if len(set(texts)) < 2:
        return None
    ids, tmask = model._tokenize_text(texts)
    text_out = model.qformer(None, None, ids, tmask, need_weights=False).query_output.mean(dim=1)  # (b, H)
    image = F.normalize(model.vision_proj(query_output[keep]), dim=-1)  # (b, q, e)
    txt = F.normalize(model.text_proj(text_out), dim=-1)  # (b, e)
    groups = torch.as_tensor([texts.index(t) for t in texts], device=query_output.device)
    with torch.no_grad():
        model.temp.clamp_(*TEMP_RANGE)  # BLIP-2
    return contrastive_loss(image, txt, groups, model.temp)


def total_loss(
    config: PathM3Config, loss_cls: Tensor | None, loss_caption: Tensor | None, loss_itc: Tensor | None
) -> Tensor | None:
    """eq. (4) ``α·L_C + (1 − α)·L_G``, plus ``itc_weight·L_ITC``: fixed weights whatever targets the batch
    holds (a term whose targets are all absent is left out, the others keep their weights)."""
    a = config.alpha
    weighted = ((a, loss_cls), (1 - a, loss_caption), (config.itc_weight, loss_itc))
    terms = [w * t for w, t in weighted if t is not None]
    return sum(terms[1:], terms[0]) if terms else None


def classification_text(
    mode: str, text: Sequence[str | None] | None, captions: Sequence[str | None] | None, b: int | None
) -> Sequence[str | None] | None:
    """Check lengths against the batch (``b`` bags; None: no features) and return the Q-Former text of the
    classification pass (None: image only)."""
    if mode == "text" and text is None:
        raise ValueError("text is required in mode 'text' (text-only classification)")
    b = b if b is not None else len(text or [])
    for name, items in (("captions", captions), ("text", text if mode != "image" else None)):
        if items is not None and len(items) != b:
            raise ValueError(f"{name}: got {len(items)} for a batch of {b} bags")
    if mode == "text":
        missing = [i for i, p in enumerate(present(text or [])) if not p]
        if missing:
            raise ValueError(
                f"mode 'text' classifies from text alone: every bag needs one (missing for bags {missing}); "
                "use mode 'image_text' or 'image' for bags without captions"
            )
        return text
    return text if mode == "image_text" and text is not None and any(present(text)) else None
