"""What each listed foundation-model encoder expects, as its model card states it: normalisation, input size,
the µm/px it was trained at and how its embedding is formed from the network's output.

:func:`apply_card` holds a loaded encoder to its card (``get_encoder`` calls it): the card's mean/std and input
size win over a hub config that disagrees (with a warning), the encoder records the card's µm/px (the feature
store and the patch grid read it), and a feature width other than the card's is an error (wrong weights).
:func:`cards_markdown` writes the table of docs/features.md (a test keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ..errors import EncoderError

log = logging.getLogger(__name__)

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
#: H-optimus-0's own statistics (its card's transform)
H_OPTIMUS = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))

#: output rules: ``cls`` the class token (timm's ``global_pool="token"``, transformers' ``last_hidden_state[:,
#: 0]``); ``cls+mean`` the class token concatenated with the mean of the patch tokens (tokens after
#: ``prefix_tokens``: the class token and any register tokens); ``pooled`` timm's pooled output
OUTPUT_RULES = ("cls", "cls+mean", "pooled")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EncoderCard:
    """One encoder's model card, as far as feature extraction needs it."""

    name: str  # registry name (features.encoders)
    title: str
    architecture: str
    dim: int  # width of the embedding the card's recipe produces
    input_size: int  # side in pixels
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mpp: float | None  # µm/px of the training patches; None: not a pathology model (no magnification)
    output: str  # one of OUTPUT_RULES
    prefix_tokens: int = 1  # class token + register tokens before the patch tokens
    gated: bool = False  # accept the licence on the hub page, then `huggingface-cli login`
    url: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.output not in OUTPUT_RULES:
            raise ValueError(f"output: {self.output!r} is not one of {OUTPUT_RULES}")
        if self.output == "cls+mean" and self.prefix_tokens < 1:
            raise ValueError("prefix_tokens: cls+mean needs at least the class token")


def _hub(repo: str) -> str:
    return f"https://huggingface.co/{repo}"


CARDS: tuple[EncoderCard, ...] = (
    EncoderCard(
        name="timm:hf-hub:MahmoodLab/UNI",
        title="UNI",
        architecture="ViT-L/16 (timm vit_large_patch16_224, DINOv2 on Mass-100K)",
        dim=1024,
        input_size=224,
        mean=IMAGENET[0],
        std=IMAGENET[1],
        mpp=0.5,
        output="cls",
        gated=True,
        url=_hub("MahmoodLab/UNI"),
        note="card: timm.create_model(..., init_values=1e-5, dynamic_img_size=True); 20x tiles",
    ),
    EncoderCard(
        name="timm:hf-hub:paige-ai/Virchow",
        title="Virchow",
        architecture="ViT-H/14 (SwiGLU MLP, SiLU)",
        dim=2560,
        input_size=224,
        mean=IMAGENET[0],
        std=IMAGENET[1],
        mpp=0.5,
        output="cls+mean",
        prefix_tokens=1,
        gated=True,
        url=_hub("paige-ai/Virchow"),
        note="embedding = [class token, mean of the 256 patch tokens] (1280 + 1280); 20x tiles",
    ),
    EncoderCard(
        name="timm:hf-hub:paige-ai/Virchow2",
        title="Virchow2",
        architecture="ViT-H/14 with 4 register tokens (SwiGLU MLP, SiLU)",
        dim=2560,
        input_size=224,
        mean=IMAGENET[0],
        std=IMAGENET[1],
        mpp=0.5,
        output="cls+mean",
        prefix_tokens=5,
        gated=True,
        url=_hub("paige-ai/Virchow2"),
        note="tokens 1-4 are registers: the mean is over tokens 5+; trained at 5x-40x, 20x used here",
    ),
    EncoderCard(
        name="timm:hf-hub:bioptimus/H-optimus-0",
        title="H-optimus-0",
        architecture="ViT-g/14 with 4 register tokens",
        dim=1536,
        input_size=224,
        mean=H_OPTIMUS[0],
        std=H_OPTIMUS[1],
        mpp=0.5,
        output="cls",
        prefix_tokens=5,
        url=_hub("bioptimus/H-optimus-0"),
        note="card: 224x224 images at 0.5 µm/px; its own mean/std (not ImageNet's)",
    ),
    EncoderCard(
        name="hf:owkin/phikon",
        title="Phikon",
        architecture="ViT-B/16 (iBOT, transformers ViTModel)",
        dim=768,
        input_size=224,
        mean=IMAGENET[0],
        std=IMAGENET[1],
        mpp=0.5,
        output="cls",
        url=_hub("owkin/phikon"),
        note="card: outputs.last_hidden_state[:, 0, :]; 20x tiles",
    ),
    EncoderCard(
        name="hf:owkin/phikon-v2",
        title="Phikon-v2",
        architecture="ViT-L/16 (DINOv2, transformers Dinov2Model)",
        dim=1024,
        input_size=224,
        mean=IMAGENET[0],
        std=IMAGENET[1],
        mpp=0.5,
        output="cls",
        url=_hub("owkin/phikon-v2"),
        note="card: outputs.last_hidden_state[:, 0, :]; 20x tiles",
    ),
    EncoderCard(
        name="hf:facebook/dinov2-base",
        title="DINOv2 (natural images)",
        architecture="ViT-B/14 (transformers Dinov2Model)",
        dim=768,
        input_size=224,
        mean=IMAGENET[0],
        std=IMAGENET[1],
        mpp=None,
        output="cls",
        url=_hub("facebook/dinov2-base"),
        note="not a pathology model; its processor's resize-256/crop-224 is for photos: patches are resized "
        "to 224 without a crop",
    ),
    EncoderCard(
        name="timm:eva_giant_patch14_224.clip_ft_in1k",
        title="EVA-CLIP ViT-g/14 (the paper's encoder)",
        architecture="ViT-g/14 (EVA), CLIP then ImageNet-1k fine-tuning",
        dim=1408,
        input_size=224,
        mean=OPENAI_CLIP[0],
        std=OPENAI_CLIP[1],
        mpp=None,
        output="pooled",
        url=_hub("timm/eva_giant_patch14_224.clip_ft_in1k"),
        note="natural images; timm's pooled output with num_classes=0",
    ),
    EncoderCard(
        name="clip:vinid/plip",
        title="PLIP (vision-language)",
        architecture="CLIP ViT-B/32 fine-tuned on OpenPath (Twitter pathology image-text pairs)",
        dim=512,
        input_size=224,
        mean=OPENAI_CLIP[0],
        std=OPENAI_CLIP[1],
        mpp=None,
        output="pooled",
        url=_hub("vinid/plip"),
        note="mixed, unrecorded magnifications (no µm/px to match); the projected image embedding "
        "(CLIPModel.get_image_features), whose text side gives phrase maps and zero-shot classes",
    ),
)


def card_for(name: str) -> EncoderCard | None:
    """The card of a registry name (``kind:spec``; hub ids compare case-insensitively), or ``None``."""
    key = name.strip().lower()
    return next((c for c in CARDS if c.name.lower() == key), None)


def pool_for(card: EncoderCard) -> Any:
    """The card's output rule as a function of the network's output, ``None`` when the network's own output is
    the embedding (``cls`` from timm with ``global_pool="token"``, ``pooled``)."""
    if card.output == "cls+mean":
        return cls_plus_mean(card.prefix_tokens)
    return None


def cls_plus_mean(prefix: int) -> Any:
    """Class token concatenated with the mean of the patch tokens (those after ``prefix`` tokens)."""

    def pool(tokens: Any) -> Any:  # (b, t, d) -> (b, 2d)
        import torch

        if tokens.ndim != 3 or tokens.shape[1] <= prefix:
            raise EncoderError(
                f"expected (batch, tokens, dim) with more than {prefix} tokens, got {tuple(tokens.shape)}"
            )
        return torch.cat([tokens[:, 0], tokens[:, prefix:].mean(1)], dim=-1)

    return pool


def _close(a: Any, b: Any, tol: float = 1e-4) -> bool:
    return len(a) == len(b) and all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b, strict=True))


def apply_card(encoder: Any, card: EncoderCard | None = None) -> Any:
    """Hold ``encoder`` (a FrozenEncoder) to its card (found by name when ``card`` is ``None``).

    The card's input size and normalisation replace a hub config's that disagree (logged as a warning), and
    the encoder records the card's µm/px. A different feature width means other weights than the card's:
    :class:`EncoderError`.
    """
    card = card or card_for(encoder.name)
    if card is None:
        return encoder
    if encoder.dim != card.dim:
        raise EncoderError(
            f"encoder {encoder.name!r} gives {encoder.dim}-d features, its model card {card.dim}-d "
            f"({card.url}): these are not the card's weights"
        )
    mean = tuple(float(v) for v in encoder.mean.flatten())
    std = tuple(float(v) for v in encoder.std.flatten())
    if encoder.input_size != card.input_size or not _close(mean, card.mean) or not _close(std, card.std):
        log.warning(
            "%s: its config says %s px, mean %s, std %s; using the model card's %s px, mean %s, std %s",
            encoder.name,
            encoder.input_size,
            mean,
            std,
            card.input_size,
            card.mean,
            card.std,
        )
        encoder.input_size = card.input_size
        encoder.mean.copy_(encoder.mean.new_tensor(card.mean).view(1, 3, 1, 1))
        encoder.std.copy_(encoder.std.new_tensor(card.std).view(1, 3, 1, 1))
        # other preprocessing, other features: part of the identity the feature cache checks
        encoder.revision = f"{encoder.revision}|card:{card.input_size}:{card.mean}:{card.std}"
        encoder._weights_hash = None
    if card.mpp is not None:
        encoder.mpp = float(card.mpp)
    return encoder


def cards_markdown() -> str:
    """The encoder table of docs/features.md."""
    rows = [
        "| encoder (`--encoder`) | architecture | input | mean / std | µm/px | embedding | dim | gated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rule = {
        "cls": "class token",
        "cls+mean": "class token ⊕ mean of patch tokens (after {n} prefix tokens)",
        "pooled": "timm's pooled output",
    }
    for c in CARDS:
        norm = "ImageNet" if (c.mean, c.std) == IMAGENET else f"{c.mean} / {c.std}"
        mpp = f"{c.mpp:g}" if c.mpp is not None else "– (natural images)"
        rows.append(
            f"| [{c.title}]({c.url}) `{c.name}` | {c.architecture} | {c.input_size} px | {norm} | {mpp} | "
            f"{rule[c.output].format(n=c.prefix_tokens)} | {c.dim} | {'yes' if c.gated else 'no'} |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m napari_pathm3.features.cards > table (docs/features.md)
    print(cards_markdown(), end="")
