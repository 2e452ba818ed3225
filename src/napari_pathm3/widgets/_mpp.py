"""µm/px in the widgets: the slide's µm/px field (prefilled from the file, editable), what the chosen model
expects, and the grid a run uses. Shared by "Caption slide" and "Train model" so both tile as the CLI and
:mod:`napari_pathm3.api` do for the same model and slide."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import FloatSpinBox

from ..config import TilingConfig

if TYPE_CHECKING:
    from ..io.slide import Slide

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

    if source == api.DEMO:
        from ..demo import DEMO_TILING

        return DEMO_TILING
    if source.startswith("clip:"):  # a zero-shot CLIP encoder: its crop size, without loading weights
        from ._zero_shot import clip_tiling

        return clip_tiling(source)
    path = Path(source) / "config.json"
    try:
        raw = json.loads(path.read_text()).get("tiling")
        return TilingConfig.from_dict(raw) if isinstance(raw, dict) else TilingConfig()
    except (OSError, ValueError, TypeError) as err:
        log.info("%s: no readable tiling (%s); showing the default grid", path, err)
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


def run_tiling(tiling: TilingConfig, slide_mpp: float | None, *, min_tissue: float) -> TilingConfig:
    """The grid of a run: the model's tiling with the widget's minimum tissue fraction; a slide whose µm/px
    is still unknown is tiled at level 0 in its own pixels (the result says so)."""
    tiling = dataclasses.replace(tiling, min_tissue_fraction=min_tissue)
    if slide_mpp is None and tiling.target_mpp is not None:
        tiling = dataclasses.replace(tiling, target_mpp=None, level=0)
    return tiling


@contextmanager
def slide_at(slide: Slide, mpp: float | None) -> Iterator[Slide]:
    """``slide`` itself when ``mpp`` is unknown or what it already has; else the same file opened again with
    ``mpp`` (closed on exit), so the layer's own slide handle is left as it was."""
    from ..io.slide import open_slide

    if mpp is None or (slide.mpp is not None and abs(slide.mpp - mpp) <= 1e-9 * mpp):
        yield slide
        return
    other = open_slide(slide.path, backend=slide.backend, mpp=mpp)
    try:
        yield other
    finally:
        other.close()
