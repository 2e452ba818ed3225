"""CLIP-style vision-language patch encoders (PLIP ``vinid/plip`` and other transformers ``CLIPModel``
checkpoints): patch embeddings in the joint image-text space, text embeddings with prompt ensembles,
phrase maps by patch-text similarity and zero-shot slide classification.

Registry name ``clip:<HF id or folder>``; preprocessing is the checkpoint's own ``preprocessor_config.json``
(CLIP: resize the short side and centre-crop to ``crop_size``, CLIP mean/std). open_clip checkpoints
(QuiltNet, CONCH) are not loaded: open_clip needs torchvision, which does not import beside this torch
build (docs/features.md); a transformers conversion of them loads here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import EncoderError
from .frozen import FrozenEncoder

__all__ = ["DEFAULT_TEMPLATES", "ClipEncoder", "load_clip", "phrase_values", "text_embedding", "zero_shot"]

#: prompt templates of the ensemble (CONCH / PLIP zero-shot style); "{}" is the phrase or class name
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "{}.",
    "an H&E image of {}.",
    "a histopathology image of {}.",
    "a photomicrograph showing {}.",
    "{}, H&E stained tissue.",
)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _ImageTower(nn.Module):
    """The image half of a ``CLIPModel``: pixels -> projected image embedding (the joint space)."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.vision_model = clip.get_submodule("vision_model")
        self.visual_projection = clip.get_submodule("visual_projection")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return self.visual_projection(pooled)


class ClipEncoder(FrozenEncoder):
    """A :class:`FrozenEncoder` whose features live in a CLIP joint space, with its text side."""

    def __init__(self, clip: nn.Module, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(_ImageTower(clip), **kwargs)
        self.text_model = clip.get_submodule("text_model")
        self.text_projection = clip.get_submodule("text_projection")
        self.logit_scale = float(clip.get_parameter("logit_scale").exp().clamp(max=100.0))
        self.tokenizer = tokenizer
        self.text_model.requires_grad_(False)
        self.text_model.eval()

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """(p, e) L2-normalised text embeddings."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        pooled = self.text_model(**enc).pooler_output
        return torch.nn.functional.normalize(self.text_projection(pooled).float(), dim=-1)


def load_clip(spec: str, *, name: str) -> ClipEncoder:
    """``CLIPModel`` + tokenizer + image processor settings from an HF id or folder."""
    from pathlib import Path

    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    local = Path(spec).expanduser()
    source = str(local) if local.exists() else spec  # a saved folder, else an HF id
    try:
        clip = CLIPModel.from_pretrained(source, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as err:
        if not local.exists():  # an HF id: uncached offline, gated or unknown -> one line naming the download
            from ._loaders import _hub_error

            hint = "or give a saved transformers CLIPModel folder as clip:/path/to/folder"
            raise _hub_error(name, spec, err, local_hint=hint) from err
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise EncoderError(
            f"{name}: cannot load a transformers CLIPModel from the folder {spec!r} ({type(err).__name__}: "
            f"{first}); save one with CLIPModel.save_pretrained + its tokenizer, or give an HF id (vinid/plip)"
        ) from err
    try:
        proc = CLIPImageProcessor.from_pretrained(source)
        crop = proc.crop_size
        size = int(crop["height"] if isinstance(crop, dict) else crop)
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    except (OSError, ValueError, KeyError, TypeError):  # no preprocessor file: CLIP's published values
        size, mean, std = int(clip.config.vision_config.image_size), CLIP_MEAN, CLIP_STD  # type: ignore[union-attr,arg-type]
    return ClipEncoder(clip, tokenizer, name=name, input_size=size, mean=mean, std=std)


def text_embedding(
    encoder: ClipEncoder, phrase: str, templates: Sequence[str] = DEFAULT_TEMPLATES
) -> torch.Tensor:
    """Prompt ensemble: the normalised mean of the normalised embeddings of every template filled with
    ``phrase`` (CLIP's zero-shot recipe). (e,)"""
    prompts = [t.format(phrase) if "{}" in t else f"{t} {phrase}" for t in templates] or [phrase]
    emb = encoder.encode_text(prompts).mean(dim=0)
    return torch.nn.functional.normalize(emb, dim=0)


def _similarity(encoder: ClipEncoder, features: np.ndarray, texts: torch.Tensor) -> torch.Tensor:
    """(n, c) logit-scaled cosine similarity of patch features and text embeddings (c, e)."""
    if features.shape[1] != texts.shape[1]:
        raise EncoderError(
            f"features of width {features.shape[1]} are not {encoder.name} embeddings (width {texts.shape[1]}); "
            f"extract them with encoder {encoder.name!r}"
        )
    img = torch.nn.functional.normalize(torch.from_numpy(np.asarray(features, np.float32)), dim=-1)
    return encoder.logit_scale * img @ texts.cpu().T


def phrase_values(
    encoder: ClipEncoder, features: np.ndarray, phrase: str, templates: Sequence[str] = DEFAULT_TEMPLATES
) -> tuple[np.ndarray, list[str]]:
    """Phrase map: CLIP's text-to-image softmax over the patches, softmax_n(s · cos(x_n, t)) (a distribution
    over patches, as the other maps), and the prompts of the ensemble."""
    prompts = [t.format(phrase) if "{}" in t else f"{t} {phrase}" for t in templates]
    sim = _similarity(encoder, features, text_embedding(encoder, phrase, templates)[None])[:, 0]
    return torch.softmax(sim, dim=0).numpy().astype(np.float32), prompts


def zero_shot(
    encoder: ClipEncoder,
    features: np.ndarray,
    class_names: Sequence[str],
    *,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    top_fraction: float = 0.05,
) -> tuple[dict[str, float], np.ndarray]:
    """Zero-shot slide classification (MI-Zero style top-k pooling): each patch's class logits
    s · cos(x_n, t_c) from prompt ensembles; a class's slide logit is the mean of its top ``top_fraction``
    of patch logits (at least one patch); softmax over classes.

    Returns:
        (probabilities per class, (c, n) per-class distribution over patches: softmax_n of the logits).
    """
    names = [str(c).strip() for c in class_names if str(c).strip()]
    if len(names) < 2:
        raise ValueError("zero-shot classes: give at least two class names")
    texts = torch.stack([text_embedding(encoder, c, templates) for c in names])
    logits = _similarity(encoder, features, texts)  # (n, c)
    k = max(1, math.ceil(top_fraction * logits.shape[0]))
    slide = logits.topk(k, dim=0).values.mean(dim=0)
    probs = torch.softmax(slide, dim=0).numpy()
    return {c: float(p) for c, p in zip(names, probs, strict=True)}, torch.softmax(logits.T, dim=1).numpy()
