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

from ..allocator import release_free_memory
from ..inference import is_feature_bag
from ..inference.stages import STAGES
from ..jobs import DEMO, CaptionRequest, RegionTrainingRequest, RunContext
from ..result import SlideResult
from ..text_query import zero_shot_name, zero_shot_templates
from ..viewer import show, text_overlay
from .captioning import caption_slide, query_heatmap, run_caption, zero_shot_classify
from .features import extract_features, slide_grid
from .interchange import (
    export_ome_zarr,
    export_qupath,
    export_result,
    export_spatialdata,
    read_regions,
    result_features,
    save_heatmap,
    save_maps,
)
from .models import (
    demo_regions_layer,
    encoder_id,
    encoder_names,
    load_model,
    model_tiling,
    open_slide,
    resolve_demo,
    run_demo,
    sample_slide,
    train_demo,
    verdict_text,
)
from .scoring import read_captions, score
from .training import train

__all__ = [
    "DEMO",
    "STAGES",
    "CaptionRequest",
    "RegionTrainingRequest",
    "RunContext",
    "SlideResult",
    "caption_slide",
    "export_ome_zarr",
    "export_qupath",
    "export_result",
    "export_spatialdata",
    "is_feature_bag",
    "result_features",
    "save_heatmap",
    "extract_features",
    "demo_regions_layer",
    "encoder_id",
    "encoder_names",
    "load_model",
    "model_tiling",
    "open_slide",
    "query_heatmap",
    "read_regions",
    "release_free_memory",
    "resolve_demo",
    "run_caption",
    "run_demo",
    "train_demo",
    "sample_slide",
    "save_maps",
    "score",
    "read_captions",
    "show",
    "slide_grid",
    "text_overlay",
    "train",
    "verdict_text",
    "zero_shot_classify",
    "zero_shot_name",
    "zero_shot_templates",
]
