"""napari sample data contribution."""

from __future__ import annotations

from typing import Any

from ..io.samples import sample_slide_path
from ..io.slide import open_slide
from .reader import slide_layer_data


def cmu1_small_region() -> list[tuple[Any, dict[str, Any], str]]:
    """CMU-1 small region (H&E, Aperio SVS, OpenSlide test data, CC0)."""
    return [slide_layer_data(open_slide(sample_slide_path()), name="CMU-1-Small-Region")]
