"""Zero-shot slide classification as a model of the Caption widget: a CLIP-style encoder
(``clip:<HF id or folder>``) is an entry of the model list; choosing one shows the class-name and prompt fields
(hidden for PathM3 models), and Run classifies the slide with
:func:`napari_pathm3.text_query.zero_shot_slide` (the same function as :func:`napari_pathm3.api.zero_shot_classify`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from magicgui.widgets import Container, LineEdit

from ..config import TilingConfig

log = logging.getLogger(__name__)

CLIP_PREFIX = "clip:"
#: the published model offered by default (weights from the HF hub, or the local HF cache offline)
PLIP_SOURCE = "clip:vinid/plip"
PLIP_NAME = f"zero-shot: PLIP ({PLIP_SOURCE})"
#: the FrozenEncoder defaults (the encoder's model card, if any, decides at run time)
CLIP_MPP, CLIP_SIZE = 0.5, 224


def is_clip_source(source: str) -> bool:
    return str(source).startswith(CLIP_PREFIX)


def clip_display_name(source: str) -> str:
    """``zero-shot: <folder or repo name> (clip:<spec>)``: the name its results carry."""
    from .. import api

    return api.zero_shot_name(source)


def is_clip_folder(folder: str | Path) -> bool:
    """A saved transformers ``CLIPModel`` (its ``config.json`` says ``model_type: clip``)."""
    try:
        raw = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and raw.get("model_type") == "clip"


def clip_tiling(source: str) -> TilingConfig:
    """The grid a CLIP entry will tile with, without loading its weights: the crop size of a local folder's
    ``preprocessor_config.json`` (224 px otherwise) at the encoders' default µm/px."""
    size = CLIP_SIZE
    path = Path(source[len(CLIP_PREFIX) :]).expanduser() / "preprocessor_config.json"
    try:
        crop = json.loads(path.read_text()).get("crop_size", CLIP_SIZE)
        size = int(crop["height"] if isinstance(crop, dict) else crop)
    except (OSError, ValueError, TypeError, KeyError) as err:
        log.debug("%s: no readable crop size (%s)", path, err)
    return TilingConfig(target_mpp=CLIP_MPP, patch_size=size)


class ZeroShotFields(Container):
    """Class names (comma-separated) and prompt templates (``;``-separated, ``{}`` = the class name)."""

    def __init__(self) -> None:
        from ..api import zero_shot_templates

        templates = zero_shot_templates()

        super().__init__(labels=True, label="")
        self.classes = LineEdit(
            label="classes", tooltip="zero-shot class names, comma-separated (at least two)"
        )
        self.prompts = LineEdit(
            label="prompts",
            value="; ".join(templates),
            tooltip="prompt templates, ';'-separated, {} = the class name (averaged: a prompt ensemble)",
        )
        self.extend([self.classes, self.prompts])

    def settings(self) -> tuple[list[str], list[str]]:
        """(class names, prompt templates) from the fields."""
        classes = [c.strip() for c in self.classes.value.split(",") if c.strip()]
        prompts = [p.strip() for p in self.prompts.value.split(";") if p.strip()]
        return classes, prompts

    def problem(self) -> str | None:
        """Why the fields cannot run (one line), or ``None``."""
        classes, _ = self.settings()
        if len(classes) < 2:
            return "zero-shot needs at least two class names, comma-separated (e.g. 'tumour, normal tissue')"
        if len(set(classes)) != len(classes):
            return f"zero-shot class names repeat: {', '.join(classes)}"
        return None
