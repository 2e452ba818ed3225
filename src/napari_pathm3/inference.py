"""``caption_slide``: one slide (or a region of it) -> class, probabilities, caption and attention.

Stages, each reported through ``progress(done, total, stage)`` and timed: ``tissue`` -> ``patches`` ->
``features`` (read from / written to the feature cache) -> ``model`` -> ``caption``. ``cancel`` is polled
between stages and inside feature extraction; a cancelled run raises :class:`~napari_pathm3.errors.Cancelled`
and leaves the cache as it was (the feature store commits atomically).
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._types import CancelToken, PathLike, ProgressFn, check_cancel, report
from .config import TilingConfig, TissueConfig
from .errors import NoTissueError, PathM3Error
from .heatmaps import patch_boxes
from .heatmaps import top_k as _top_k
from .io.geojson import polygons_to_geojson, write_json_atomic
from .io.slide import Slide, open_slide
from .tiling import PatchGrid, TissueMask, check_grid, detect_tissue, make_grid

log = logging.getLogger(__name__)

#: Stage names in order (the widget's progress bar shows them).
STAGES = ("tissue", "patches", "features", "model", "caption")


@dataclass(eq=False)
class SlideResult:
    """Everything one captioning run produced.

    Attributes:
        label: predicted class name; ``probabilities`` maps every class name to its probability.
        caption: generated caption ("" when the model has no language head).
        attention: ``(n,)`` attention per patch: mean over queries of ``query_attention``.
        query_attention: ``(q, n)`` cross-attention of each learned query over the patches, averaged over
            heads and over all cross-attention layers (6 of 12 at the paper's sizes).
        grid: the patches (level-0 coords; ``grid.coords[i]`` is patch ``i``).
        tissue: the tissue mask the grid was cut from.
        top_indices, top_scores: the ``top_k`` patches by attention, highest first.
        timings: seconds per stage.
    """

    slide_path: str
    slide_dimensions: tuple[int, int]
    mpp_xy: tuple[float, float] | None
    label: str
    probabilities: dict[str, float]
    caption: str
    attention: np.ndarray
    query_attention: np.ndarray
    grid: PatchGrid
    tissue: TissueMask
    top_indices: np.ndarray
    top_scores: np.ndarray
    model_name: str = ""
    encoder_name: str = ""
    device: str = ""
    text: str | None = None
    region: list[np.ndarray] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: human-readable problems with this result (e.g. "this model has not learned to caption"): show them
    warnings: tuple[str, ...] = ()

    @property
    def coords(self) -> np.ndarray:
        """``(n, 2)`` level-0 ``(x, y)`` top-left corners of the patches."""
        return self.grid.coords

    @property
    def num_patches(self) -> int:
        return len(self.grid)

    @property
    def slide_name(self) -> str:
        return Path(self.slide_path).stem

    @property
    def slide_scale(self) -> tuple[float, float]:
        """napari ``scale`` of the slide layer: (µm/px y, µm/px x), or (1, 1) in pixel units."""
        return (1.0, 1.0) if self.mpp_xy is None else (float(self.mpp_xy[1]), float(self.mpp_xy[0]))

    def top_patches(self) -> list[dict[str, Any]]:
        """The top-k patches: rank, index, attention, level-0 ``x``/``y`` and side ``size``."""
        size = float(self.grid.size_level0)
        return [
            {"rank": r + 1, "index": int(i), "attention": float(s), "x": int(self.coords[i, 0]),
             "y": int(self.coords[i, 1]), "size": size}
            for r, (i, s) in enumerate(zip(self.top_indices, self.top_scores, strict=True))
        ]  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (no per-patch arrays): what the CLI writes and layer metadata holds."""
        return {
            "slide": self.slide_path,
            "slide_dimensions": list(self.slide_dimensions),
            "mpp": None if self.mpp_xy is None else list(self.mpp_xy),
            "label": self.label,
            "probabilities": {k: float(v) for k, v in self.probabilities.items()},
            "caption": self.caption,
            "text": self.text,
            # say which classifier produced `label`: text-conditioned results are never silently the headline
            "classified_from": "image" if not self.text else "image and the given text (text-conditioned)",
            "num_patches": self.num_patches,
            "patch_size_level0": float(self.grid.size_level0),
            "patch_mpp": self.grid.mpp,
            "top_patches": self.top_patches(),
            "model": self.model_name,
            "encoder": self.encoder_name,
            "device": self.device,
            "region": None if self.region is None else [np.asarray(p).tolist() for p in self.region],
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
        }

    def to_dict(self, *, per_patch: bool = True) -> dict[str, Any]:
        """:meth:`summary` plus, with ``per_patch``, every patch's coordinates and attention."""
        out = self.summary()
        if per_patch:
            out["patches"] = {
                "x": self.coords[:, 0].tolist(), "y": self.coords[:, 1].tolist(),
                "attention": [float(a) for a in self.attention],
                "query_attention": np.asarray(self.query_attention, dtype=float).round(7).tolist(),
            }  # fmt: skip
        return out

    def save_json(self, path: PathLike, *, per_patch: bool = True) -> Path:
        return write_json_atomic(path, self.to_dict(per_patch=per_patch))

    def save_csv(self, path: PathLike) -> Path:
        """One row per patch: index, x, y, size (level 0), tissue fraction, attention, top-k rank."""
        path = Path(path)
        rank = {int(i): r + 1 for r, i in enumerate(self.top_indices)}
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["index", "x", "y", "size_level0", "tissue_fraction", "attention", "top_rank"])
            for i in range(self.num_patches):
                w.writerow([
                    i, int(self.coords[i, 0]), int(self.coords[i, 1]), self.grid.size_level0,
                    float(self.grid.tissue_fraction[i]), float(self.attention[i]), rank.get(i, ""),
                ])  # fmt: skip
        return path

    def top_patches_geojson(self) -> dict[str, Any]:
        """Top-k patches as GeoJSON polygons in level-0 pixels (QuPath: File > Import objects)."""
        boxes = patch_boxes(self.grid, self.top_indices)[:, :, ::-1] + 0.5  # (y, x) centres -> (x, y) edges
        props = [
            {"name": f"top {p['rank']}", "class": "PathM3 attention", "rank": p["rank"],
             "attention": p["attention"], "index": p["index"]}
            for p in self.top_patches()
        ]  # fmt: skip
        return polygons_to_geojson(list(boxes), props)

    def save_geojson(self, path: PathLike) -> Path:
        return write_json_atomic(path, self.top_patches_geojson())


# ------------------------------------------------------------------------------------------------ helpers


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


@contextmanager
def _as_slide(slide_or_path: Slide | PathLike) -> Iterator[Slide]:
    if isinstance(slide_or_path, Slide):
        yield slide_or_path
        return
    slide = open_slide(slide_or_path)
    try:
        yield slide
    finally:
        slide.close()


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


def _stage_progress(progress: ProgressFn | None, stage: str) -> ProgressFn | None:
    """Feature extraction reports its own stage text (e.g. "cached"): keep it as a detail after ours."""
    if progress is None:
        return None

    def fn(done: int, total: int, detail: str = "") -> None:
        progress(done, total, stage if not detail or detail == stage else f"{stage} ({detail})")

    return fn


# ------------------------------------------------------------------------------------------------ main


def caption_slide(
    slide_or_path: Slide | PathLike,
    *,
    model: Any,
    encoder: Any = None,
    device: Any = "auto",
    region: Sequence[np.ndarray] | None = None,
    text: str | None = None,
    tiling: TilingConfig | None = None,
    tissue: TissueConfig | None = None,
    cache_dir: PathLike | None = None,
    top_k: int = 8,
    max_new_tokens: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> SlideResult:
    """Classify and caption a slide (or the patches inside ``region``).

    Args:
        slide_or_path: an open :class:`~napari_pathm3.io.slide.Slide` or a path (opened and closed here).
        model: a loaded ``PathM3Model``, a checkpoint folder, or ``"demo"`` (the offline demo model).
        encoder: patch encoder (registry name or loaded encoder); ``None`` = the one the model was trained with.
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cuda"``, ``"mps"`` or ``"cpu"``.
        region: level-0 polygons ``(k, 2)`` of ``(x, y)``; only patches whose centre lies inside are used.
        text: optional text for text-conditioned classification (the model's image+text mode).
        tiling: patch grid settings; default: the model's / 224 px at 0.5 µm/px.
        tissue: tissue detection settings (threshold, resolution, ...); default ``TissueConfig()``.
        cache_dir: feature cache folder (features are reused across runs); ``None`` = no cache.
        top_k: number of highest-attention patches to report.
        progress: ``progress(done, total, stage)`` with stage in :data:`STAGES`.
        cancel: token whose ``is_set()`` stops the run (raises ``Cancelled``).

    Returns:
        A :class:`SlideResult`.

    Raises:
        NoTissueError: no patch with enough tissue (inside the region).
        CheckpointError / EncoderError / SlideReadError: see their messages.
    """
    from . import _backend
    from .threads import apply_thread_policy

    apply_thread_policy()  # torch threads and reader workers from the free cores, re-read at every call
    if is_feature_bag(slide_or_path):
        return caption_feature_bag(slide_or_path, model=model, device=device, text=text, top_k=top_k,  # type: ignore[arg-type]
                                   max_new_tokens=max_new_tokens, progress=progress, cancel=cancel)  # fmt: skip
    timings: dict[str, float] = {}
    total = len(STAGES)
    check_cancel(cancel)
    pm = _backend.load_model(model, device=device)
    enc = _backend.load_encoder(encoder, model=pm, device=device)
    tiling = tiling or _backend.model_tiling(pm) or TilingConfig()
    with _as_slide(slide_or_path) as slide:
        # no mpp, an absurd grid, not brightfield RGB: one clear error now, before tissue detection
        check_grid(slide, tiling)
        report(progress, 0, total, "tissue")
        with _timed(timings, "tissue"):
            tissue_mask = detect_tissue(slide, tissue)
        if tissue_mask.empty:
            raise NoTissueError(
                f"{slide.path.name}: no tissue detected; lower the tissue threshold (--tissue-threshold, "
                "e.g. 0.03, or 'tissue threshold' in the widget) or check the slide"
            )
        check_cancel(cancel)
        report(progress, 1, total, "patches")
        with _timed(timings, "patches"):
            grid = make_grid(slide, tiling, tissue=tissue_mask)
            if region is not None:
                region = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in region]
                grid = grid.subset(patches_in_region(grid, region))
        if len(grid) == 0:
            where = "inside the selected region" if region is not None else "on the slide"
            raise NoTissueError(
                f"{slide.path.name}: no patch with at least {tiling.min_tissue_fraction:.0%} tissue {where}; "
                "draw a larger region or lower the minimum tissue fraction (--min-tissue, or the widget setting)"
            )
        check_cancel(cancel)
        report(progress, 2, total, "features")
        with _timed(timings, "features"):
            feats = _backend.features_for(
                slide, grid, enc, cache_dir=cache_dir, device=device,
                progress=_stage_progress(progress, "features"), cancel=cancel,
            )  # fmt: skip
        slide_path, dims, mpp_xy = str(slide.path), tuple(slide.dimensions), slide.mpp_xy
    out = _model_stages(pm, feats, len(grid), text=text, max_new_tokens=max_new_tokens, top_k=top_k,
                        timings=timings, progress=progress, cancel=cancel)  # fmt: skip
    probabilities, caption, warnings, attention, query_attention, idx, scores = out
    return SlideResult(
        slide_path=slide_path, slide_dimensions=(int(dims[0]), int(dims[1])), mpp_xy=mpp_xy,
        label=max(probabilities, key=probabilities.__getitem__), probabilities=probabilities, caption=caption,
        attention=attention, query_attention=query_attention, grid=grid, tissue=tissue_mask,
        top_indices=idx, top_scores=scores, model_name=_backend.model_name(pm),
        encoder_name=_backend.encoder_name(enc), device=str(_backend.model_device(pm)), text=text,
        region=None if region is None else list(region), timings=timings, warnings=warnings,
    )  # fmt: skip


def _model_stages(
    pm: Any,
    features: np.ndarray,
    n_patches: int,
    *,
    text: str | None,
    max_new_tokens: int | None,
    top_k: int,
    timings: dict[str, float],
    progress: ProgressFn | None,
    cancel: CancelToken | None,
) -> tuple[dict[str, float], str, tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The "model" and "caption" stages shared by slides and feature bags: class probabilities, the caption
    (replaced by the verdict when the model has not learned to caption), the verdict's warnings, mean and
    per-query attention over the ``n_patches`` patches, and the top-``top_k`` patches."""
    from . import _backend

    total = len(STAGES)
    check_cancel(cancel)
    report(progress, 3, total, "model")
    with _timed(timings, "model"):
        probs, query_attention = _backend.classify(pm, features, text=text)
    check_cancel(cancel)
    report(progress, 4, total, "caption")
    with _timed(timings, "caption"):
        caption = _backend.generate_caption(pm, features, max_new_tokens=max_new_tokens)
    report(progress, total, total, "done")
    caption, warnings = _checked(pm, caption)
    names = _backend.class_names(pm)
    probabilities = {n: float(p) for n, p in zip(names, np.asarray(probs, dtype=float), strict=True)}
    if not probabilities:
        raise PathM3Error("the model returned no class probabilities")
    query_attention = np.asarray(query_attention, dtype=np.float32).reshape(-1, n_patches)
    attention = query_attention.mean(axis=0)
    idx, scores = _top_k(attention, top_k)
    return probabilities, caption, warnings, attention, query_attention, idx, scores


def _checked(pm: Any, caption: str) -> tuple[str, tuple[str, ...]]:
    """The training verdict's warnings; a model that has not learned to caption shows that instead of its
    (junk) caption."""
    from . import _backend
    from .training.verdict import NOT_CAPTIONING

    warnings = _backend.model_warnings(pm)
    if any(w.startswith(NOT_CAPTIONING) for w in warnings):
        caption = NOT_CAPTIONING
    return caption, warnings


FEATURE_SUFFIXES = (".h5", ".hdf5", ".npy", ".pt", ".pth", ".safetensors", ".zarr")


def is_feature_bag(target: Any) -> bool:
    """True for a path to a feature bag (``.h5``/``.zarr``/... as written by interop or the feature store)."""
    return isinstance(target, (str, Path)) and Path(target).suffix.lower() in FEATURE_SUFFIXES


def caption_feature_bag(
    path: PathLike,
    *,
    model: Any,
    device: Any = "auto",
    text: str | None = None,
    top_k: int = 8,
    max_new_tokens: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> SlideResult:
    """Classify and caption precomputed patch features (a TRIDENT/CLAM ``.h5``, a ``.zarr`` feature store
    bag, ``.npy`` / ``.pt`` / ``.safetensors``): no slide is opened. ``slide_path`` is the bag's path;
    without coordinates the patches are laid out in a row."""
    from . import _backend
    from .errors import CheckpointError
    from .io.interop import read_feature_file

    timings: dict[str, float] = {}
    total = len(STAGES)
    pm = _backend.load_model(model, device=device)
    report(progress, 2, total, "features")
    with _timed(timings, "features"):
        bag = read_feature_file(path)
    dim = int(pm.config.feature_dim)
    if bag.features.shape[1] != dim:
        raise CheckpointError(
            f"{path}: features of width {bag.features.shape[1]}, the model expects {dim}; caption bags made "
            f"with the model's encoder ({pm.config.encoder_name or 'unrecorded'})"
        )
    grid = _bag_grid(bag)
    out = _model_stages(pm, bag.features, len(grid), text=text, max_new_tokens=max_new_tokens, top_k=top_k,
                        timings=timings, progress=progress, cancel=cancel)  # fmt: skip
    probabilities, caption, warnings, attention, query_attention, idx, scores = out
    tissue = TissueMask(np.ones((1, 1), bool), float(max(grid.slide_dimensions)), 0.0)
    return SlideResult(
        slide_path=str(path), slide_dimensions=grid.slide_dimensions, mpp_xy=None,
        label=max(probabilities, key=probabilities.__getitem__), probabilities=probabilities, caption=caption,
        attention=attention, query_attention=query_attention, grid=grid, tissue=tissue, top_indices=idx,
        top_scores=scores, model_name=_backend.model_name(pm), encoder_name=bag.encoder_name,
        device=str(_backend.model_device(pm)), text=text, timings=timings, warnings=warnings,
    )  # fmt: skip


def _bag_grid(bag: Any) -> PatchGrid:
    n = len(bag.features)
    size = int(bag.patch_size or 1)
    coords = bag.coords if bag.coords is not None else np.stack([np.arange(n) * size, np.zeros(n)], 1)
    coords = np.asarray(coords, dtype=np.int64)
    dims = (int(coords[:, 0].max()) + size, int(coords[:, 1].max()) + size)
    return PatchGrid(coords=coords, patch_size=size, mpp=bag.mpp, size_level0=float(size), read_level=0,
                     read_size=size, step_level0=float(size), slide_dimensions=dims,
                     tissue_fraction=np.ones(n, np.float32))  # fmt: skip


def save_heatmap_png(
    result: SlideResult, path: PathLike, *, max_size: int = 1024, alpha: float = 0.5
) -> Path:
    """Write the heatmap figure (attention on a fixed scale relative to uniform, colour bar, class,
    probabilities and caption); see :func:`napari_pathm3.heatmap_png.save_heatmap_png`."""
    from .heatmap_png import save_heatmap_png as write

    return write(result, path, max_size=max_size, alpha=alpha)
