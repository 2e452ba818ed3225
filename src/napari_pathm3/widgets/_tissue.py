"""The tissue fields of "Caption slide": detection threshold and resolution, and the minimum tissue fraction of
a patch (the grid field that starts from the chosen model's tiling)."""

from __future__ import annotations

from magicgui.widgets import FloatSpinBox

from ..config import TissueConfig


def tissue_fields() -> tuple[FloatSpinBox, FloatSpinBox, FloatSpinBox]:
    """``(threshold, tissue µm/px, min tissue)`` spin boxes."""
    threshold = FloatSpinBox(
        label="tissue threshold",
        value=0.0,
        min=0.0,
        max=1.0,
        step=0.01,
        tooltip="saturation above which a pixel is tissue; 0 = automatic (Otsu, at least 0.05). "
        "Lower it (e.g. 0.03) for faint stains when no tissue is detected",
    )
    mpp = FloatSpinBox(
        label="tissue µm/px",
        value=8.0,
        min=0.5,
        max=128.0,
        step=0.5,
        tooltip="resolution tissue is detected at (the pyramid level read follows from it)",
    )
    min_tissue = FloatSpinBox(
        label="min tissue",
        value=0.25,
        min=0.0,
        max=1.0,
        step=0.05,
        tooltip="keep a patch when at least this fraction of it is tissue",
    )
    return threshold, mpp, min_tissue


def tissue_config(threshold: FloatSpinBox, mpp: FloatSpinBox) -> TissueConfig:
    """The tissue detection settings of the fields (threshold 0 = automatic)."""
    value = float(threshold.value)
    return TissueConfig(target_mpp=float(mpp.value), threshold=value or None)
