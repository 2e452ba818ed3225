"""``caption_slide``: one slide (or a region of it) -> class, probabilities, caption and attention.

Stages, each reported as a :class:`~napari_pathm3._types.Progress` event and timed: ``TISSUE`` ->
``PATCHES`` -> ``FEATURES`` (read from / written to the feature cache) -> ``MODEL`` -> ``CAPTION``. ``cancel``
is polled between stages and inside feature extraction; a cancelled run raises
:class:`~napari_pathm3.errors.Cancelled` and leaves the cache as it was (the feature store commits atomically).

Also here: loading a model from a checkpoint folder and the encoder that goes with it. The demo model is
resolved above this module (:mod:`napari_pathm3.api`, the CLI, the widgets pass its checkpoint folder down).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._types import CancelToken, PathLike, ProgressFn, Stage, check_cancel, report, within
from .config import DEFAULT_ENCODER, TilingConfig, TissueConfig
from .errors import CheckpointError, NoTissueError, PathM3Error
from .heatmaps import top_k as _top_k
from .io.slide import Slide, as_slide
from .result import SlideResult
from .tiling import PatchGrid, TissueMask, check_grid, detect_tissue, make_grid

if TYPE_CHECKING:
    from .features.encoders import FrozenEncoder
    from .io.feature_store import FeatureBag
    from .model.pathm3 import PathM3Model

__all__ = ["STAGES", "SlideResult", "caption_feature_bag", "caption_slide", "load_encoder", "load_model"]

log = logging.getLogger(__name__)

#: The stages of :func:`caption_slide` in order (the widget's progress bar shows them).
STAGES = (Stage.TISSUE, Stage.PATCHES, Stage.FEATURES, Stage.MODEL, Stage.CAPTION)


# ------------------------------------------------------------------------------------------------ model


def load_model(
    model: PathM3Model | PathLike,
    *,
    device: str = "auto",
    text_side: bool = True,
    progress: ProgressFn | None = None,
) -> PathM3Model:
    """A ``PathM3Model`` (moved to ``device`` unless that is ``"auto"``) or a checkpoint folder -> the
    model in eval mode. ``"demo"`` is not resolved here: :func:`napari_pathm3.api.load_model` does that.
    ``text_side=False``: a folder is loaded without the Q-Former's text-only weights (image-only use).
    ``progress``: ``LOAD_MODEL`` events with the bytes of the weights read so far (a folder only)."""
    from .device import resolve_device
    from .model.pathm3 import PathM3Model

    if isinstance(model, PathM3Model):
        if device not in (None, "auto"):
            model = model.to(resolve_device(device))
        return model.eval()
    if not isinstance(model, (str, Path)):
        raise TypeError(f"model must be a PathM3Model or a checkpoint folder, got {type(model).__name__}")
    path = Path(model).expanduser()
    if not path.is_dir():
        hint = " (the demo model: napari_pathm3.api.load_model('demo'))" if str(model) == "demo" else ""
        raise CheckpointError(
            f"{path}: not a folder; pick a checkpoint folder written by save_pretrained{hint}"
        )
    try:
        return PathM3Model.from_pretrained(
            path, device=resolve_device(device), text_side=text_side, progress=progress
        )
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # corrupt files surface as many types
        raise CheckpointError(f"{path}: cannot load the checkpoint ({type(err).__name__}: {err})") from err


def load_encoder(
    encoder: FrozenEncoder | str | None, *, model: PathM3Model, device: str = "auto"
) -> FrozenEncoder:
    """The patch encoder: ``encoder`` (name or loaded), else the one recorded in the model's config."""
    from .device import resolve_device
    from .features.encoders import FrozenEncoder, cached_encoder, canonical_name

    if isinstance(encoder, FrozenEncoder):
        return encoder
    want = model.config.encoder_name
    name = encoder or want or DEFAULT_ENCODER
    if want and canonical_name(name) != canonical_name(want):
        raise CheckpointError(
            f"the model was trained on {want!r} features, not {name!r}; pick {want!r} as encoder "
            "(or leave the encoder on the model's own)"
        )
    return cached_encoder(canonical_name(name), str(resolve_device(device)))


def provenance_of(model: PathM3Model) -> dict[str, Any]:
    """What run made the model (:func:`napari_pathm3.model.provenance.provenance_of`)."""
    from .model.provenance import provenance_of as _of

    return _of(model)


def model_name(model: PathM3Model) -> str:
    """Display name: the demo's one name, else the checkpoint folder (``run/best`` for ``best``/``last``)."""
    from .result import DEMO_MODEL_NAME

    if getattr(model.config, "demo", False):
        return DEMO_MODEL_NAME
    source = getattr(model, "checkpoint_dir", None)
    if not source:
        return type(model).__name__
    p = Path(source)
    return f"{p.parent.name}/{p.name}" if p.name in ("best", "last") else p.name


def model_warnings(model: PathM3Model) -> tuple[str, ...]:
    """Warnings of the training verdict recorded with the model (loaded with it from its checkpoint, or the
    verdict of a model trained in this process)."""
    from .model.verdict import verdict_of

    verdict = verdict_of(model)
    return () if verdict is None else verdict.warnings


def _honesty(model: PathM3Model, features: np.ndarray, result: SlideResult) -> SlideResult:
    """``result`` with the out-of-distribution check (and its warning when the slide is far) and the
    model's recorded accuracy."""
    import dataclasses

    from .model.confidence import model_accuracy, ood_check

    check = ood_check(model, features)
    warnings = tuple(result.warnings)
    if check is not None and check.far:
        warnings += (check.warning(),)
    return dataclasses.replace(
        result,
        warnings=warnings,
        out_of_distribution=None if check is None else check.to_dict(),
        model_accuracy=model_accuracy(model),
    )


def _tensor(model: PathM3Model, features: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))[None].to(model.device)


def classify(
    model: PathM3Model, features: np.ndarray, *, text: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities (C,), query_attention (q, n))``; attention is uniform in text-only mode."""
    out = model.classify(_tensor(model, features), text=[text] if text else None)
    probs = out.probabilities[0].float().cpu().numpy()
    n = features.shape[0]
    if out.query_attention is None:
        q = int(model.config.qformer.num_query_tokens)
        return probs, np.full((q, n), 1.0 / n, np.float32)
    return probs, out.query_attention[0].float().cpu().numpy()


def generate_caption(
    model: PathM3Model,
    features: np.ndarray,
    *,
    max_new_tokens: int | None = None,
    progress: ProgressFn | None = None,
) -> str:
    """The caption of one bag; ``progress``: its decoding steps, as events within the ``CAPTION`` stage."""
    caps = model.generate_captions(
        _tensor(model, features), max_new_tokens=max_new_tokens, progress=within(progress, Stage.CAPTION)
    )
    return str(caps[0]).strip() if caps else ""


# ------------------------------------------------------------------------------------------------ helpers


@contextmanager
def _timed(timings: dict[str, float], stage: Stage) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage.value] = timings.get(stage.value, 0.0) + time.perf_counter() - t0


def patches_in_region(grid: PatchGrid, polygons: Sequence[np.ndarray]) -> np.ndarray:
    """Boolean ``(n,)``: patch centre inside any of ``polygons`` (``(k, 2)`` level-0 ``x, y``)."""
    from skimage.measure import points_in_poly

    centers = grid.centers()
    keep = np.zeros(len(grid), bool)
    for poly in polygons:
        poly = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(poly) >= 3:
            keep |= points_in_poly(centers, poly)
    return keep


def _region_polygons(region: Any, slide: Any) -> list[np.ndarray]:
    """The region's polygons, each a finite ``(k, 2)`` level-0 array on the slide (:class:`RegionError`)."""
    from .errors import RegionError
    from .schemas import check_polygon

    if isinstance(region, np.ndarray) and region.ndim == 2:  # one polygon passed bare
        region = [region]
    try:
        polys = list(region)
    except TypeError:
        raise RegionError(
            f"region: expected a list of (k, 2) polygons, got {type(region).__name__}"
        ) from None
    if not polys:
        raise RegionError("region: no polygons; draw a shape or pass region=None for the whole slide")
    dims = getattr(slide, "dimensions", None)
    return [check_polygon(p, name=f"region polygon {i}", dimensions=dims) for i, p in enumerate(polys)]


@dataclass(frozen=True)
class _Outputs:
    """What the model and caption stages produced for one bag of patches."""

    probabilities: dict[str, float]
    caption: str
    warnings: tuple[str, ...]
    caption_withheld: bool
    attention: np.ndarray
    query_attention: np.ndarray
    top_indices: np.ndarray
    top_scores: np.ndarray
    word_maps: Any = None  # grounding.WordMaps | None
    phrase_maps: tuple[Any, ...] = ()  # grounding.PhraseMap per asked phrase

    def result(self, **slide_fields: Any) -> SlideResult:
        """The :class:`SlideResult` of these outputs and ``slide_fields`` (path, grid, model name, ...)."""
        return SlideResult(
            label=max(self.probabilities, key=self.probabilities.__getitem__),
            probabilities=self.probabilities,
            caption=self.caption,
            attention=self.attention,
            query_attention=self.query_attention,
            top_indices=self.top_indices,
            top_scores=self.top_scores,
            warnings=self.warnings,
            caption_withheld=self.caption_withheld,
            word_maps=self.word_maps,
            phrase_maps=self.phrase_maps,
            **slide_fields,
        )


# ------------------------------------------------------------------------------------------------ main


def caption_slide(
    slide_or_path: Slide | PathLike,
    *,
    model: PathM3Model | PathLike,
    encoder: FrozenEncoder | str | None = None,
    device: str = "auto",
    region: Sequence[np.ndarray] | None = None,
    text: str | None = None,
    tiling: TilingConfig | None = None,
    tissue: TissueConfig | None = None,
    cache_dir: PathLike | None = None,
    top_k: int = 8,
    max_new_tokens: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    word_maps: bool = True,
    queries: Sequence[str] = (),
    phrase_method: str = "auto",
    word_method: str = "auto",
) -> SlideResult:
    """Classify and caption a slide (or the patches inside ``region``).

    Args:
        slide_or_path: an open :class:`~napari_pathm3.io.slide.Slide` or a path (opened and closed here).
        model: a loaded ``PathM3Model`` or a checkpoint folder.
        encoder: patch encoder (registry name or loaded encoder); ``None`` = the one the model was trained with.
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cuda"``, ``"mps"`` or ``"cpu"``.
        region: level-0 polygons ``(k, 2)`` of ``(x, y)``; only patches whose centre lies inside are used.
        text: optional text for text-conditioned classification (the model's image+text mode).
        tiling: patch grid settings; default: the model's (recorded in its config) / 224 px at 0.5 µm/px.
        tissue: tissue detection settings (threshold, resolution, ...); default ``TissueConfig()``.
        cache_dir: feature cache folder (features are reused across runs); ``None`` = no cache.
        top_k: number of highest-attention patches to report.
        progress: called with a :class:`~napari_pathm3._types.Progress` per stage (see :data:`STAGES`).
        cancel: token whose ``is_set()`` stops the run (raises ``Cancelled``).
        word_maps: also compute one patch map per caption word (``result.word_maps``; docs/method.md §8).
        queries: phrases to map over the patches (``result.phrase_maps``), e.g. ``("solid nests",)``.
        phrase_method: ``"auto"``, ``"singleton"``, ``"lm"``, ``"itc"`` or ``"joint"`` (see :func:`napari_pathm3.grounding.phrase_map`).
        word_method: ``"auto"``, ``"singleton"`` or ``"gradient x attention"`` (:func:`napari_pathm3.grounding.word_maps`).

    Returns:
        A :class:`SlideResult`.

    Raises:
        NoTissueError: no patch with enough tissue (inside the region).
        CheckpointError / EncoderError / SlideReadError: see their messages.
    """
    from .threads import apply_thread_policy

    apply_thread_policy()  # torch threads and reader workers from the free cores, re-read at every call
    ask: dict[str, Any] = {
        "text": text,
        "max_new_tokens": max_new_tokens,
        "top_k": top_k,
        "word_maps": word_maps,
        "queries": tuple(queries),
        "phrase_method": phrase_method,
        "word_method": word_method,
    }
    if is_feature_bag(slide_or_path):
        return caption_feature_bag(
            slide_or_path, model=model, device=device, progress=progress, cancel=cancel, **ask
        )
    timings: dict[str, float] = {}
    check_cancel(cancel)
    polygons = None if region is None else _region_polygons(region, None)  # shape and NaN: before any work
    # captions never feed text; the "itc"/"joint" phrase maps do
    pm = load_model(
        model, device=device, text_side=_needs_text_side(queries, phrase_method), progress=progress
    )
    enc = load_encoder(encoder, model=pm, device=device)
    tiling = tiling or pm.config.tiling or TilingConfig()
    with as_slide(slide_or_path) as slide:
        if region is not None:  # and on this slide
            polygons = _region_polygons(region, slide)
        grid, tissue_mask = _grid_stages(slide, tiling, tissue, polygons, timings, progress, cancel)
        feats = _feature_stage(slide, grid, enc, cache_dir, device, timings, progress, cancel)
        where = {"slide_path": str(slide.path), "slide_dimensions": slide.dimensions, "mpp_xy": slide.mpp_xy}
    out = _model_stages(pm, feats, len(grid), timings=timings, progress=progress, cancel=cancel, **ask)
    result = out.result(
        **where,
        grid=grid,
        tissue=tissue_mask,
        model_name=model_name(pm),
        demo=pm.config.demo,
        provenance=provenance_of(pm),
        encoder_name=enc.name,
        device=str(pm.device),
        text=text,
        region=polygons,
        timings=timings,
    )
    return _honesty(pm, feats, result)


def _feature_stage(
    slide: Slide,
    grid: PatchGrid,
    encoder: FrozenEncoder,
    cache_dir: PathLike | None,
    device: str,
    timings: dict[str, float],
    progress: ProgressFn | None,
    cancel: CancelToken | None,
) -> np.ndarray:
    """The "features" stage: the grid's patch features, through the feature cache when one is given."""
    from .features.cache import cached_features

    check_cancel(cancel)
    report(progress, 2, len(STAGES), Stage.FEATURES)
    with _timed(timings, Stage.FEATURES):
        return cached_features(
            slide,
            grid,
            encoder,
            cache_dir=cache_dir,
            device=device,
            progress=within(progress, Stage.FEATURES),
            cancel=cancel,
        )


def _grid_stages(
    slide: Slide,
    tiling: TilingConfig,
    tissue: TissueConfig | None,
    region: list[np.ndarray] | None,
    timings: dict[str, float],
    progress: ProgressFn | None,
    cancel: CancelToken | None,
) -> tuple[PatchGrid, TissueMask]:
    """The "tissue" and "patches" stages: the tissue mask and the patch grid (inside ``region``)."""
    # no mpp, an absurd grid, not brightfield RGB: one clear error now, before tissue detection
    check_grid(slide, tiling)
    report(progress, 0, len(STAGES), Stage.TISSUE)
    with _timed(timings, Stage.TISSUE):
        tissue_mask = detect_tissue(slide, tissue, progress=within(progress, Stage.TISSUE))
    if tissue_mask.empty:
        raise NoTissueError(
            f"{slide.path.name}: no tissue detected; lower the tissue threshold (--tissue-threshold, "
            "e.g. 0.03, or 'tissue threshold' in the widget) or check the slide"
        )
    check_cancel(cancel)
    report(progress, 1, len(STAGES), Stage.PATCHES)
    with _timed(timings, Stage.PATCHES):
        grid = make_grid(slide, tiling, tissue=tissue_mask)
        if region is not None:
            grid = grid.subset(patches_in_region(grid, region))
    if len(grid) == 0:
        where = "inside the selected region" if region is not None else "on the slide"
        raise NoTissueError(
            f"{slide.path.name}: no patch with at least {tiling.min_tissue_fraction:.0%} tissue {where}; "
            "draw a larger region or lower the minimum tissue fraction (--min-tissue, or the widget setting)"
        )
    return grid, tissue_mask


def _model_stages(
    pm: PathM3Model,
    features: np.ndarray,
    n_patches: int,
    *,
    text: str | None,
    max_new_tokens: int | None,
    top_k: int,
    timings: dict[str, float],
    progress: ProgressFn | None,
    cancel: CancelToken | None,
    word_maps: bool = True,
    queries: tuple[str, ...] = (),
    phrase_method: str = "auto",
    word_method: str = "auto",
) -> _Outputs:
    """The "model" and "caption" stages shared by slides and feature bags: class probabilities, the caption
    (replaced by the verdict when the model has not learned to caption), the verdict's warnings, mean and
    per-query attention over the ``n_patches`` patches, and the top-``top_k`` patches."""
    total = len(STAGES)
    check_cancel(cancel)
    report(progress, 3, total, Stage.MODEL)
    with _timed(timings, Stage.MODEL):
        probs, query_attention = classify(pm, features, text=text)
    check_cancel(cancel)
    report(progress, 4, total, Stage.CAPTION)
    with _timed(timings, Stage.CAPTION):
        caption = generate_caption(pm, features, max_new_tokens=max_new_tokens, progress=progress)
    report(progress, total, total, Stage.DONE)
    caption, warnings, withheld = _checked(pm, caption)
    names = tuple(pm.config.class_names)
    probabilities = {n: float(p) for n, p in zip(names, np.asarray(probs, dtype=float), strict=True)}
    if not probabilities:
        raise PathM3Error("the model returned no class probabilities")
    query_attention = np.asarray(query_attention, dtype=np.float32).reshape(-1, n_patches)
    attention = query_attention.mean(axis=0)
    idx, scores = _top_k(attention, top_k)
    words, phrases = _grounding_stage(
        pm, features, caption, withheld, word_maps, queries, (word_method, phrase_method), timings
    )
    return _Outputs(
        probabilities, caption, warnings, withheld, attention, query_attention, idx, scores, words, phrases
    )


def _needs_text_side(queries: Sequence[str], method: str) -> bool:
    return bool(queries) and method in ("itc", "joint")


def _grounding_stage(
    pm: PathM3Model,
    features: np.ndarray,
    caption: str,
    withheld: bool,
    word_maps: bool,
    queries: tuple[str, ...],
    methods: tuple[str, str],
    timings: dict[str, float],
) -> tuple[Any, tuple[Any, ...]]:
    """Word maps of the caption (not of a withheld one) and the phrase maps asked for; timed with the caption
    stage."""
    from . import grounding

    t0 = time.perf_counter()
    words = None
    if word_maps and caption and not withheld:
        words = grounding.word_maps(pm, features, caption, method=methods[0])
    phrases = tuple(grounding.phrase_map(pm, features, q, method=methods[1]) for q in queries if q.strip())
    if words is not None or phrases:  # part of the caption stage (the maps' own seconds are in the result)
        key = Stage.CAPTION.value
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
    return words, phrases


def _checked(pm: PathM3Model, caption: str) -> tuple[str, tuple[str, ...], bool]:
    """The training verdict's warnings and whether the caption is withheld: a model that has not learned to
    caption shows that instead of its (junk) caption."""
    from .model.verdict import NOT_CAPTIONING, verdict_of

    verdict = verdict_of(pm)
    withheld = verdict is not None and verdict.caption_withheld
    return (NOT_CAPTIONING if withheld else caption), model_warnings(pm), withheld


FEATURE_SUFFIXES = (".h5", ".hdf5", ".npy", ".pt", ".pth", ".safetensors", ".zarr")


def is_feature_bag(target: object) -> bool:
    """True for a path to a feature bag (``.h5``/``.zarr``/... as written by interop or the feature store)."""
    if not isinstance(target, (str, Path)):
        return False
    from .io.spatialdata import split_table_path

    # a SpatialData table path (store.zarr/tables/<key>) names one of a store's feature tables
    return Path(target).suffix.lower() in FEATURE_SUFFIXES or split_table_path(target)[1] is not None


def caption_feature_bag(
    path: PathLike,
    *,
    model: PathM3Model | PathLike,
    device: str = "auto",
    text: str | None = None,
    top_k: int = 8,
    max_new_tokens: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    word_maps: bool = True,
    queries: Sequence[str] = (),
    phrase_method: str = "auto",
    word_method: str = "auto",
) -> SlideResult:
    """Classify and caption precomputed patch features (a TRIDENT/CLAM ``.h5``, a ``.zarr`` feature store
    bag, ``.npy`` / ``.pt`` / ``.safetensors``): no slide is opened. ``slide_path`` is the bag's path;
    without coordinates the patches are laid out in a row."""
    from .io.interop import read_feature_file

    timings: dict[str, float] = {}
    pm = load_model(
        model, device=device, text_side=_needs_text_side(queries, phrase_method), progress=progress
    )
    report(progress, 2, len(STAGES), Stage.FEATURES)
    with _timed(timings, Stage.FEATURES):
        bag = read_feature_file(path)
    dim = int(pm.config.feature_dim)
    if bag.features.shape[1] != dim:
        raise CheckpointError(
            f"{path}: features of width {bag.features.shape[1]}, the model expects {dim}; caption bags made "
            f"with the model's encoder ({pm.config.encoder_name or 'unrecorded'})"
        )
    grid = _bag_grid(bag)
    out = _model_stages(
        pm,
        bag.features,
        len(grid),
        text=text,
        max_new_tokens=max_new_tokens,
        top_k=top_k,
        timings=timings,
        progress=progress,
        cancel=cancel,
        word_maps=word_maps,
        queries=tuple(queries),
        phrase_method=phrase_method,
        word_method=word_method,
    )
    tissue = TissueMask(np.ones((1, 1), bool), float(max(grid.slide_dimensions)), 0.0)
    result = out.result(
        slide_path=str(path),
        slide_dimensions=grid.slide_dimensions,
        mpp_xy=None,
        grid=grid,
        tissue=tissue,
        model_name=model_name(pm),
        demo=pm.config.demo,
        provenance=provenance_of(pm),
        encoder_name=bag.encoder_name,
        device=str(pm.device),
        text=text,
        timings=timings,
    )
    return _honesty(pm, bag.features, result)


def _bag_step(bag: FeatureBag, size0: float) -> float:
    """Level-0 stride of a bag's tiles: a SpatialData tile spec's ``stride_width * base_downsample``."""
    spec = bag.meta.tile_spec or {}
    stride, down = spec.get("stride_width"), spec.get("base_downsample", 1.0)
    if isinstance(stride, (int, float)) and stride > 0 and isinstance(down, (int, float)) and down > 0:
        return float(stride) * float(down)
    return size0


def _bag_grid(bag: FeatureBag) -> PatchGrid:
    n = len(bag.features)
    size = int(bag.patch_size or 1)
    # TRIDENT's patch_size_level0 / a SpatialData tile spec: patches read at another magnification
    size0 = float(bag.meta.patch_size_level0 or size)
    coords = bag.coords if bag.coords is not None else np.stack([np.arange(n) * size0, np.zeros(n)], 1)
    coords = np.asarray(coords, dtype=np.int64)
    dims = (int(coords[:, 0].max() + size0), int(coords[:, 1].max() + size0))
    known = bag.meta.slide_dimensions
    if known is not None and all(v > 0 for v in known):
        dims = (max(dims[0], int(known[0])), max(dims[1], int(known[1])))
    return PatchGrid(
        coords=coords,
        patch_size=size,
        mpp=bag.mpp,
        size_level0=size0,
        read_level=0,
        read_size=size,
        step_level0=_bag_step(bag, size0),
        slide_dimensions=dims,
        tissue_fraction=np.ones(n, np.float32),
    )


def save_heatmap_png(
    result: SlideResult, path: PathLike, *, max_size: int = 1024, alpha: float = 0.5
) -> Path:
    """Write the heatmap figure (attention on a fixed scale relative to uniform, colour bar, class,
    probabilities and caption); see :func:`napari_pathm3.heatmap_png.save_heatmap_png`."""
    from .heatmap_png import save_heatmap_png as write

    return write(result, path, max_size=max_size, alpha=alpha)
