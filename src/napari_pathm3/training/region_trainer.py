"""Labelled regions on slides -> a trained checkpoint (the Train widget, ``api.train`` and the demo model).

Features of every slide's patch grid are extracted (and cached), each region becomes a bag of the patches
inside it, the bags are augmented (:mod:`.augment`) and :func:`napari_pathm3.training.loop.train` runs. The
checkpoint's config records the tiling, so captioning later cuts the same patches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .._types import PathLike
from ..config import PathM3Config, TilingConfig, TrainConfig
from ..errors import PathM3Error
from ..io.slide import Slide, as_slide
from ..jobs import RegionTrainingRequest, RunContext
from ..model.verdict import TrainingVerdict, write_verdict
from .augment import mixed_bags as _mixed_bags
from .augment import sub_bags as _sub_bags
from .data import SlideBag
from .loop import MetricsFn, TrainResult, train
from .regions import Region, bags_from_regions
from .validation import Plan, plan_validation, pooled_verdict

if TYPE_CHECKING:
    from ..features.encoders import FrozenEncoder

#: one slide with its labelled regions
SlideRegions = tuple["Slide | PathLike", Sequence[Region]]


def region_bags(
    regions: Sequence[SlideRegions],
    encoder: FrozenEncoder,
    request: RegionTrainingRequest,
    ctx: RunContext,
) -> list[SlideBag]:
    """One bag per region that holds a tissue patch (features of each slide's whole grid, cached)."""
    from ..features.cache import cached_features
    from ..io.feature_store import FeatureBag
    from ..schemas import check_polygon
    from ..tiling import check_grid, detect_tissue, make_grid

    tiling = request.tiling or TilingConfig()
    class_names = _class_names(regions, request.class_names)
    bags: list[SlideBag] = []
    for k, (slide_like, slide_regions) in enumerate(regions):
        with as_slide(slide_like) as slide:
            ctx.report(k, len(regions), "regions", detail=slide.path.name)
            for i, r in enumerate(slide_regions):  # on this slide, before any tissue detection or encoding
                if getattr(r, "polygon", None) is not None:
                    check_polygon(
                        r.polygon,
                        name=f"{slide.path.name}: region {r.name or i}",
                        dimensions=slide.dimensions,
                    )
            check_grid(slide, tiling)
            grid = make_grid(slide, tiling, tissue=detect_tissue(slide))
            feats = cached_features(
                slide, grid, encoder, cache_dir=request.cache_dir, device=request.device, cancel=ctx.cancel
            )
            fb = FeatureBag(feats, grid.coords, grid.patch_size, grid.mpp, encoder.name, slide.path.stem)
            bags += bags_from_regions(
                fb,
                list(slide_regions),
                class_names=class_names,
                slide_id=slide.path.stem,
                patch_size_level0=grid.size_level0,
            )
    return bags


def _class_names(regions: Sequence[SlideRegions], class_names: Sequence[str] | None) -> tuple[str, ...]:
    all_regions = [r for _, rs in regions for r in rs]
    if not all_regions:
        raise PathM3Error("no labelled regions: draw shapes and give each a 'class' in the layer's features")
    names = tuple(class_names) if class_names else tuple(sorted({str(r.label) for r in all_regions}))
    if len(names) < 2:
        raise PathM3Error(f"need regions of at least two classes to train, got {list(names)}")
    return names


def _check_bags(bags: list[SlideBag]) -> None:
    if not bags:
        raise PathM3Error(
            "no region holds a tissue patch: draw regions over tissue (or lower min_tissue_fraction)"
        )
    if len({b.label for b in bags}) < 2:
        raise PathM3Error(
            "regions of only one class hold tissue patches; label regions of at least two classes"
        )


def train_on_regions(
    regions: Sequence[SlideRegions], request: RegionTrainingRequest, context: RunContext | None = None
) -> TrainResult:
    """Regions (polygons / masks with a class and optional caption) on slides -> a trained checkpoint.

    Args:
        regions: ``[(slide or path, [Region, ...]), ...]``.
        request: output folder, encoder, grid and hyperparameters
            (:class:`~napari_pathm3.jobs.RegionTrainingRequest`).
        context: progress, cancel and the per-epoch ``metrics`` callback. With ``request.validation`` the
            model is judged on held-out regions, or by cross-validation when there are too few
            (:mod:`napari_pathm3.training.validation`); the verdict is in ``result.verdict``.
    """
    from ..device import resolve_device
    from ..features.encoders import cached_encoder, canonical_name

    ctx = context or RunContext()
    tiling = request.tiling or TilingConfig()
    names = _class_names(regions, request.class_names)
    request = request.replace(class_names=names)
    # the cached instance captioning uses too: a model trained here is captioned without reloading weights
    enc = cached_encoder(canonical_name(request.encoder), str(resolve_device(request.device)))
    bags = region_bags(regions, enc, request, ctx)
    _check_bags(bags)
    mcfg = PathM3Config.preset(
        request.model_size, feature_dim=enc.dim, encoder_name=enc.name, class_names=names
    )
    mcfg = dataclasses.replace(mcfg, tiling=tiling, demo=request.demo)
    if request.lr is not None:
        mcfg = dataclasses.replace(mcfg, optim=dataclasses.replace(mcfg.optim, lr=request.lr))
    tcfg = TrainConfig(
        epochs=request.epochs,
        batch_size=request.batch_size or 1,
        alpha=request.alpha,
        mode=request.mode,  # type: ignore[arg-type]
        device=str(request.device),
        seed=request.seed,
        patience=None,
        log_every=1,
        max_patches=request.max_patches,
    )
    seed = request.seed

    def fit(
        part: list[SlideBag], val: list[SlideBag] | None, out: PathLike, on_metrics: MetricsFn | None
    ) -> TrainResult:
        train_bags = _sub_bags(part, request.sub_bags, 0.6, seed) + _mixed_bags(
            part, request.mixed_bags, seed
        )
        bs = request.batch_size or min(mcfg.optim.batch_size, max(1, len(train_bags) // 4))
        cfg = dataclasses.replace(tcfg, batch_size=bs)
        return train(
            mcfg,
            train_bags,
            val,
            cfg,
            out_dir=out,
            progress=ctx.progress,
            metrics_callback=on_metrics,
            cancel=ctx.cancel,
        )

    plan = plan_validation(bags, seed=seed, class_names=names) if request.validation else None
    if plan is not None and plan.kind == "holdout":
        return fit(plan.train, plan.val, request.output_dir, ctx.metrics)
    if plan is not None and plan.kind == "cv":
        return _cross_validated(plan, bags, fit, request.output_dir, ctx)
    result = fit(list(bags), None, request.output_dir, ctx.metrics)
    reason = plan.reason if plan is not None else "validation turned off"
    return _with_verdict(result, {**result.verdict, "not_validated": reason})


def _cross_validated(
    plan: Plan,
    bags: list[SlideBag],
    fit: Callable[..., TrainResult],
    output_dir: PathLike,
    ctx: RunContext,
) -> TrainResult:
    """Train one model per fold (judged on its held-out fold), then the final model on every region; the
    final model carries the pooled cross-validated verdict (and its own caption verdict)."""
    import tempfile
    from pathlib import Path

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fold_verdicts = []
    for k, held in enumerate(plan.folds):
        ctx.report(
            k,
            len(plan.folds) + 1,
            "validate",
            detail=f"cross-validation fold {k + 1}/{len(plan.folds)}",
        )
        rest = [b for f in plan.folds if f is not held for b in f]
        with tempfile.TemporaryDirectory(prefix=".cv-", dir=out) as tmp:
            fold_verdicts.append(fit(rest, held, tmp, None).verdict)
    result = fit(list(bags), None, out, ctx.metrics)
    pooled = pooled_verdict(fold_verdicts, [b.label for b in bags])
    own = result.verdict  # judged on its training bags: keep its caption verdict, not its accuracy
    caption_warnings = [own["caption_warning"]] if own.get("caption_warning") else []
    keep = ("distinct_captions", "distinct_references", "learned_to_caption", "caption_warning")
    verdict = {
        **pooled,
        **{k: own[k] for k in keep if k in own},
        "training_accuracy": own.get("accuracy"),
        "warnings": pooled["warnings"] + caption_warnings,
    }
    return _with_verdict(result, verdict)


def _with_verdict(result: TrainResult, verdict: dict) -> TrainResult:
    """``result`` carrying ``verdict`` (also written beside its checkpoints, and on its in-memory model)."""
    write_verdict(verdict, [result.best_dir, result.last_dir])
    if result.model is not None:
        result.model.training_verdict = TrainingVerdict.from_dict(verdict)
    return dataclasses.replace(result, verdict=verdict, warnings=list(verdict.get("warnings", [])))
