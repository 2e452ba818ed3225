"""The training verbs: labelled regions on slides -> a checkpoint (the Train widget, ``api.train`` and the
demo model all hand a :class:`~napari_pathm3.jobs.RegionTrainingRequest` to :func:`train`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._types import CancelToken, PathLike, ProgressFn
from ..io.slide import Slide
from ..jobs import RegionTrainingRequest, RunContext
from .captioning import run_context

if TYPE_CHECKING:
    from ..training.loop import TrainResult


def train(
    regions: Sequence[tuple[Slide | PathLike, Sequence[Any]]],
    request: RegionTrainingRequest | None = None,
    *,
    context: RunContext | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    **options: Any,
) -> TrainResult:
    """Train a PathM3 model on annotated regions and save it to ``output_dir``.

    Args:
        regions: ``[(slide, [Region, ...]), ...]`` (``training.regions.Region``: polygon or mask in level-0
            pixels, class, optional caption).
        request: a :class:`~napari_pathm3.jobs.RegionTrainingRequest`; or its fields as keywords:
            ``output_dir`` (checkpoint folder to write), ``class_names`` (default: sorted region labels),
            ``encoder``, ``device``, ``tiling`` and the hyperparameters (``epochs``, ``lr``, ``batch_size``,
            ``alpha``, ``model_size`` "tiny" | "small" | "paper" ...; lr and alpha default to the size
            preset's, docs/training.md).
        context: progress, cancel and a ``metrics`` callback (one record per epoch); or ``progress`` and
            ``cancel`` as keywords.

    Returns:
        The trainer's result (``TrainResult``) with the checkpoint path; ``result.warnings`` says when the model
        has not learned to classify or to caption (also kept in ``best/training_verdict.json``).
    """
    from ..training.region_trainer import train_on_regions

    if request is None:
        request = RegionTrainingRequest(**options)
    elif options:
        request = request.replace(**options)
    return train_on_regions(regions, request, run_context(context, progress, cancel))
