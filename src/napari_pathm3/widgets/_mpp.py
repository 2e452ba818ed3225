"""µm/px in the widgets: the slide's µm/px field (prefilled from the file, editable), what the chosen model
expects, and the grid a run uses. Shared by "Caption slide" and "Train model" so both tile as the CLI and
:mod:`napari_pathm3.api` do for the same model and slide."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from magicgui.widgets import FloatSpinBox

from ..config import TilingConfig

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

#: 0 in the field = unknown (the spin box cannot hold None)
UNKNOWN = 0.0
MPP_TOOLTIP = (
    "µm per level-0 pixel of the slide: from the file when it has one, else 0 (unknown). Enter it for a slide "
    "without one (e.g. 0.25 at 40x, 0.5 at 20x): patches are then cut at the model's physical size"
)


def mpp_field(label: str = "slide µm/px") -> FloatSpinBox:
    field = FloatSpinBox(label=label, value=UNKNOWN, min=0.0, max=100.0, step=0.01, tooltip=MPP_TOOLTIP)
    field.native.setDecimals(4)
    field.native.setSpecialValueText("unknown")  # shown at the minimum (0)
    return field


def layer_mpp(layer: Any) -> float | None:
    """The µm/px recorded with a slide layer by our reader (``None``: unknown, or not our layer)."""
    meta = getattr(layer, "metadata", None) or {}
    mpp = meta.get("mpp")
    return float(mpp) if mpp else None


def field_mpp(field: FloatSpinBox) -> float | None:
    value = float(field.value)
    return value if value > UNKNOWN else None


def model_tiling(source: str) -> TilingConfig:
    """The grid a registry entry's model was trained with, without loading its weights: the demo model's
    tiling, or ``tiling`` in the checkpoint's ``config.json`` (default grid when unrecorded/unreadable)."""
    from .. import api
    from ..errors import PathM3Error

    if source.startswith("clip:"):  # a zero-shot CLIP encoder: its crop size, without loading weights
        from ._zero_shot import clip_tiling

        return clip_tiling(source)
    try:
        return api.model_tiling(source)[0]
    except (OSError, PathM3Error) as err:
        log.info("%s: no readable tiling (%s); showing the default grid", source, err)
        return TilingConfig()


def expectation(tiling: TilingConfig, slide_mpp: float | None) -> str:
    """One line: what the model expects and how a slide at ``slide_mpp`` will be tiled."""
    if tiling.target_mpp is None:
        return f"model: {tiling.patch_size}-px patches in the slide's own pixels (trained without µm/px)"
    um = tiling.patch_size * tiling.target_mpp
    model = f"model expects {tiling.target_mpp:g} µm/px: {tiling.patch_size}-px patches of {um:g} µm"
    if slide_mpp is None:
        return f"{model}. Slide µm/px unknown: enter it, or patches are cut in pixels at level 0"
    side = um / slide_mpp
    return f"{model} = {side:.0f} px of this slide at {slide_mpp:g} µm/px"
