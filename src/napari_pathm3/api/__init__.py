"""The public scripting API and the application layer: the same operations as the widgets and the CLI,
paths in, typed results out. Each verb builds a request (:mod:`napari_pathm3.jobs`) and hands it to one
entry point; the widgets and the CLI do the same.

>>> from napari_pathm3 import api
>>> with api.open_slide("case.svs") as slide:                            # doctest: +SKIP
...     result = api.caption_slide(slide, model="checkpoints/pathm3")
>>> result.label, result.probabilities, result.caption                  # doctest: +SKIP
>>> api.show(result, viewer)                                             # doctest: +SKIP

Importing this package loads neither Qt nor napari (nor torch): those come with the calls that need them.
"""

from __future__ import annotations

from ..jobs import DEMO, CaptionRequest, RegionTrainingRequest, RunContext
from ..result import SlideResult
from ..viewer import show, text_overlay
from .captioning import caption_slide, query_heatmap, run_caption, zero_shot_classify
from .features import extract_features
from .interchange import export_ome_zarr, export_qupath, export_spatialdata, read_regions, save_maps
from .models import load_model, open_slide, resolve_demo
from .training import train

__all__ = [
    "DEMO",
    "CaptionRequest",
    "RegionTrainingRequest",
    "RunContext",
    "SlideResult",
    "caption_slide",
    "export_ome_zarr",
    "export_qupath",
    "export_spatialdata",
    "extract_features",
    "load_model",
    "open_slide",
    "query_heatmap",
    "read_regions",
    "resolve_demo",
    "run_caption",
    "save_maps",
    "show",
    "text_overlay",
    "train",
    "zero_shot_classify",
]
