"""One request per job, one run context per run: what the API, the CLI and the widgets hand to the pipeline.

A :class:`CaptionRequest` holds everything a captioning (or phrase-map, or zero-shot) run needs besides the
slide, and owns the one patch-grid rule (:meth:`CaptionRequest.tiling_for`): the model's tiling, then the
explicit overrides, then the µm/px policy. The faces only build requests; they never assemble a grid.
A :class:`RunContext` carries progress, cancellation and stage timings through a run as one object.

Torch-free and napari-free (configs and callables only), so every face can build one cheaply.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from ._types import CancelToken, PathLike, ProgressFn, Stage, check_cancel, report, within
from .config import DEFAULT_ENCODER, MODEL_SIZES, TilingConfig, TissueConfig

__all__ = ["DEMO", "CaptionRequest", "MissingMpp", "RegionTrainingRequest", "RunContext"]

#: the ``model`` value that names the offline demo model (trained on first use; see :mod:`napari_pathm3.demo`)
DEMO = "demo"

#: a slide without µm/px under a grid in µm: ``"refuse"`` (a clear error naming ``mpp=`` / ``--mpp``) or
#: ``"level0"`` (tile level 0 in the slide's own pixels; the widgets do this and say so in the result)
MissingMpp = Literal["refuse", "level0"]


@dataclass(frozen=True, kw_only=True)
class CaptionRequest:
    """A captioning run of one slide (or feature bag), except the slide itself.

    Attributes:
        model: checkpoint folder, ``"demo"``, a loaded ``PathM3Model``, or ``"clip:<id or folder>"`` for
            phrase maps and zero-shot classification with a CLIP-style encoder.
        encoder: patch encoder name (or a loaded encoder); ``None`` = the model's own.
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cuda"``, ``"mps"`` or ``"cpu"``.
        region: level-0 polygons ``(k, 2)`` of ``(x, y)``; ``None`` = the whole slide.
        text: optional text for text-conditioned classification.
        tissue: tissue detection settings (``None`` = Otsu defaults).
        cache_dir: feature cache folder (``None`` = no cache).
        top_k: number of highest-attention patches to report.
        max_new_tokens: caption length limit (``None`` = the model's).
        word_maps: one patch map per caption word; queries: phrases to map (``phrase_method``,
            ``word_method``: see :mod:`napari_pathm3.grounding`).
        tiling: a whole grid that replaces the model's; min_tissue_fraction, level: overrides of single
            fields (``level`` tiles that pyramid level in its own pixels).
        mpp: µm/px at level 0 for a slide whose file lacks it (or to correct it).
        missing_mpp: what a µm grid does on a slide without µm/px (:data:`MissingMpp`).
    """

    model: Any = DEMO
    encoder: Any = None
    device: str = "auto"
    region: Sequence[Any] | None = None
    text: str | None = None
    tissue: TissueConfig | None = None
    cache_dir: PathLike | None = None
    top_k: int = 8
    max_new_tokens: int | None = None
    word_maps: bool = True
    queries: tuple[str, ...] = ()
    phrase_method: str = "auto"
    word_method: str = "auto"
    tiling: TilingConfig | None = None
    min_tissue_fraction: float | None = None
    level: int | None = None
    mpp: float | None = None
    missing_mpp: MissingMpp = "refuse"

    def __post_init__(self) -> None:
        object.__setattr__(self, "queries", tuple(str(q) for q in self.queries if str(q).strip()))
        if isinstance(self.text, str) and not self.text.strip():
            object.__setattr__(self, "text", None)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k: must be a whole number >= 1, got {self.top_k!r}")
        if self.missing_mpp not in ("refuse", "level0"):
            raise ValueError(f"missing_mpp: 'refuse' or 'level0', got {self.missing_mpp!r}")
        if self.min_tissue_fraction is not None and not 0.0 <= float(self.min_tissue_fraction) <= 1.0:
            raise ValueError(f"min_tissue_fraction: must be in [0, 1], got {self.min_tissue_fraction!r}")
        if self.mpp is not None and not float(self.mpp) > 0:
            raise ValueError(f"mpp: must be > 0 µm/px, got {self.mpp!r}")
        if self.tiling is not None and not isinstance(self.tiling, TilingConfig):
            raise TypeError(f"tiling: a TilingConfig or None, got {type(self.tiling).__name__}")

    @property
    def is_demo(self) -> bool:
        return isinstance(self.model, str) and self.model == DEMO

    @property
    def is_clip(self) -> bool:
        """The model is a CLIP-style encoder (``"clip:..."``): phrase maps and zero-shot, no captions."""
        return isinstance(self.model, str) and self.model.startswith("clip:")

    @property
    def needs_text_side(self) -> bool:
        """The model's text-only weights are needed (the ``itc``/``joint`` phrase maps; captions never)."""
        return bool(self.queries) and self.phrase_method in ("itc", "joint")

    def tiling_for(self, model_tiling: TilingConfig | None, slide_mpp: float | None) -> TilingConfig:
        """THE patch-grid rule: the model's tiling (default grid when it records none), then the explicit
        overrides (``tiling``, ``min_tissue_fraction``, ``level``), then the µm/px policy for a slide whose
        µm/px is unknown (``missing_mpp``)."""
        tiling = self.tiling or model_tiling or TilingConfig()
        if self.min_tissue_fraction is not None:
            tiling = dataclasses.replace(tiling, min_tissue_fraction=float(self.min_tissue_fraction))
        if self.level is not None:
            tiling = dataclasses.replace(tiling, target_mpp=None, level=int(self.level))
        if slide_mpp is None and tiling.target_mpp is not None and self.missing_mpp == "level0":
            tiling = dataclasses.replace(tiling, target_mpp=None, level=0)
        return tiling

    def replace(self, **changes: Any) -> CaptionRequest:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class RegionTrainingRequest:
    """Training a model on labelled regions of slides (the slides and regions themselves aside).

    Attributes:
        output_dir: the trainer's folder (``best/`` and ``last/`` checkpoints).
        class_names: class order (default: the sorted region labels).
        encoder: patch encoder name; tiling: patch grid (recorded in the checkpoint's config).
        cache_dir: feature cache folder (``None``: no cache).
        model_size: ``tiny`` | ``small`` | ``paper`` (``PathM3Config.preset``); lr: its optimiser's peak lr.
        sub_bags, mixed_bags: augmentation (:mod:`napari_pathm3.training.augment`).
        epochs, batch_size, alpha, mode, max_patches, seed: ``TrainConfig``.
        validation: judge the model on held-out regions, or by cross-validation when there are too few.
        demo: the checkpoint is the offline demo model (recorded in its ``config.json``).
    """

    output_dir: PathLike
    class_names: Sequence[str] | None = None
    encoder: str = DEFAULT_ENCODER
    device: str = "auto"
    tiling: TilingConfig | None = None
    cache_dir: PathLike | None = None
    model_size: str = "tiny"
    epochs: int = 30
    lr: float | None = None
    batch_size: int | None = None
    alpha: float | None = None
    mode: str | None = None
    sub_bags: int = 4
    mixed_bags: int = 0
    max_patches: int | None = None
    seed: int = 0
    validation: bool = True
    demo: bool = False

    def __post_init__(self) -> None:
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if self.model_size not in MODEL_SIZES:  # the rest is checked by TrainConfig / PathM3Config
            raise ValueError(f"model size: unknown {self.model_size!r} (use one of {MODEL_SIZES})")
        if self.tiling is not None and not isinstance(self.tiling, TilingConfig):
            raise TypeError(f"tiling: a TilingConfig or None, got {type(self.tiling).__name__}")

    def replace(self, **changes: Any) -> RegionTrainingRequest:
        return dataclasses.replace(self, **changes)


@dataclass(eq=False)
class RunContext:
    """Progress, cancellation and stage timings of one run, passed down as one object.

    ``progress`` receives :class:`~napari_pathm3._types.Progress` events; ``cancel.is_set()`` stops the run
    (raises :class:`~napari_pathm3.errors.Cancelled`) at the next check; ``timings`` collects seconds per stage;
    ``metrics`` receives a training run's per-epoch records.
    """

    progress: ProgressFn | None = None
    cancel: CancelToken | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: training only: called with one metrics record per epoch (the Train widget's plot, the CLI's table)
    metrics: Callable[[dict[str, Any]], None] | None = None

    def check(self) -> None:
        """Raise ``Cancelled`` when the run was cancelled."""
        check_cancel(self.cancel)

    def report(self, done: int, total: int, stage: Stage | str, **kw: Any) -> None:
        report(self.progress, done, total, stage, **kw)

    def within(self, stage: Stage) -> ProgressFn | None:
        """The progress callback for a callee whose events belong to ``stage``."""
        return within(self.progress, stage)

    @contextmanager
    def timed(self, key: Stage | str) -> Iterator[None]:
        """Add the seconds of the block to ``timings[key]``."""
        name = key.value if isinstance(key, Stage) else str(key)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
