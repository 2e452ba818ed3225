"""Patch encoder registry: a name resolves to a :class:`FrozenEncoder` (frozen model + its preprocessing).

Names (``kind:spec``)::

    builtin:colorstats                  handcrafted colour/stain/texture descriptor, no download (fallback)
    timm:<name>                         timm model, pretrained weights from the HF cache, e.g.
                                        timm:hf-hub:MahmoodLab/UNI, timm:hf-hub:paige-ai/Virchow,
                                        timm:hf-hub:bioptimus/H-optimus-0, timm:eva_giant_patch14_224.clip_ft_in1k
    hf:<id or folder>                   transformers AutoModel + AutoImageProcessor (Phikon, DINOv2, ...); CLS output
    local:<folder>                      a saved timm folder (config.json with "architecture") or an HF folder
    torchvision:<name>                  torchvision classification model with its head removed
    clip:<id or folder>                 transformers CLIPModel (PLIP vinid/plip, ...): projected image
                                        embeddings + text side for phrase maps and zero-shot (features/clip.py)

A bare ``hf-hub:org/name`` or timm architecture name (``eva_giant_patch14_224``) means ``timm:``.
Weights are never downloaded when ``HF_HUB_OFFLINE=1``; gated or missing weights raise
:class:`~napari_pathm3.errors.EncoderError` saying how to get them.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

from ..config import DEFAULT_ENCODER
from ..errors import EncoderError
from .cards import apply_card
from .frozen import IMAGENET_MEAN, IMAGENET_STD, FrozenEncoder, state_dict_hash

__all__ = [
    "DEFAULT_ENCODER",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KNOWN_ENCODERS",
    "FrozenEncoder",
    "cached_encoder",
    "canonical_name",
    "get_encoder",
    "list_encoders",
    "state_dict_hash",
]

log = logging.getLogger(__name__)

#: Offered in the GUI dropdown even when not cached; the first is the only one that always works offline.
KNOWN_ENCODERS: tuple[str, ...] = (
    DEFAULT_ENCODER,
    "timm:eva_giant_patch14_224.clip_ft_in1k",  # the paper's ViT-g/14 (EVA-CLIP), 1408-d
    "timm:hf-hub:MahmoodLab/UNI",  # gated: accept the licence on its HF page
    "timm:hf-hub:paige-ai/Virchow",  # gated
    "timm:hf-hub:bioptimus/H-optimus-0",
    "hf:owkin/phikon",
    "hf:owkin/phikon-v2",
    "timm:hf-hub:paige-ai/Virchow2",  # gated
    "hf:facebook/dinov2-base",
    "clip:vinid/plip",  # vision-language (PLIP): phrase maps and zero-shot classification
)


def canonical_name(name: str) -> str:
    """Normalise a user-given encoder name to ``kind:spec`` (paths made absolute)."""
    name = name.strip()
    if not name:
        raise EncoderError(
            "empty encoder name; e.g. 'builtin:colorstats', 'hf:owkin/phikon', 'timm:hf-hub:MahmoodLab/UNI'"
        )
    kind, sep, spec = name.partition(":")
    if sep and kind in ("builtin", "timm", "hf", "torchvision", "clip"):
        return f"{kind}:{spec}"
    if sep and kind == "local":
        return f"local:{Path(spec).expanduser().resolve()}"
    if sep and kind in ("hf-hub", "local-dir"):
        return f"timm:{name}"
    if Path(name).expanduser().is_dir():
        return f"local:{Path(name).expanduser().resolve()}"
    if not sep and "/" not in name:
        return f"timm:{name}"  # bare timm architecture, e.g. eva_giant_patch14_224
    raise EncoderError(
        f"unknown encoder {name!r}; use builtin:colorstats, timm:<name>, hf:<id or folder>, local:<folder> "
        "or torchvision:<name>"
    )


def get_encoder(name: str, *, device: Any = None) -> FrozenEncoder:
    """Resolve ``name`` to a frozen encoder.

    Args:
        name: registry name (see the module docstring).
        device: move it there ("auto", "cuda", "cpu", ...); ``None`` leaves it on the CPU.

    Raises:
        EncoderError: unknown name, missing package (timm/torchvision), gated or uncached weights.
    """
    from . import _loaders

    canon = canonical_name(name)
    kind, _, spec = canon.partition(":")
    if kind == "builtin":
        enc = _loaders.load_builtin(spec)
    elif kind == "timm":
        enc = _loaders.load_timm(spec, name=canon)
    elif kind == "hf":
        enc = _loaders.load_hf(spec, name=canon)
    elif kind == "clip":
        from .clip import load_clip

        enc = load_clip(spec, name=canon)
    elif kind == "local":
        enc = _loaders.load_local(Path(spec), name=canon)
    else:
        enc = _loaders.load_torchvision(spec, name=canon)
    enc = apply_card(enc)  # the model card's normalisation, input size and µm/px (features.cards)
    return enc.prepare(device) if device is not None else enc


@functools.lru_cache(maxsize=4)
def cached_encoder(name: str, device: str = "auto") -> FrozenEncoder:
    """:func:`get_encoder` memoised per process (one copy per dask worker process, shared by its threads)."""
    return get_encoder(name, device=device)


def list_encoders(*, include_cached: bool = True) -> list[str]:
    """Encoder names for the GUI dropdown: :data:`KNOWN_ENCODERS` plus image models in the HF cache."""
    names = list(KNOWN_ENCODERS)
    if include_cached:
        for n in _cached_hub_encoders():
            if n not in names:
                names.append(n)
    return names


def _cached_hub_encoders() -> list[str]:
    """timm / transformers image models found in the local Hugging Face cache (no network)."""
    import json

    try:
        from huggingface_hub import constants

        root = Path(os.environ.get("HF_HUB_CACHE", constants.HF_HUB_CACHE))
    except Exception:  # huggingface_hub missing or misconfigured: nothing cached to offer
        return []
    found = []
    for repo in sorted(root.glob("models--*")):
        repo_id = repo.name[len("models--") :].replace("--", "/")
        for cfg_path in sorted(repo.glob("snapshots/*/config.json"))[-1:]:
            try:
                cfg = json.loads(cfg_path.read_text())
            except (OSError, ValueError):
                continue
            if "architecture" in cfg:
                found.append(f"timm:hf-hub:{repo_id}")
            elif "model_type" in cfg and (cfg_path.parent / "preprocessor_config.json").exists():
                found.append(f"hf:{repo_id}")
    return found
