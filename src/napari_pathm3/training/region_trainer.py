"""Labelled regions on slides -> a trained checkpoint (the Train widget, ``api.train`` and the demo model).

Features of every slide's patch grid are extracted (and cached), each region becomes a bag of the patches
inside it, the bags are augmented (:mod:`.augment`) and :func:`napari_pathm3.training.loop.train` runs. The
checkpoint's config records the tiling, so captioning later cuts the same patches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._types import CancelToken, PathLike, ProgressFn, report
from ..config import DEFAULT_ENCODER, PathM3Config, TilingConfig, TrainConfig
from ..errors import PathM3Error
from ..io.slide import Slide, as_slide
from .augment import mixed_bags as _mixed_bags
from .augment import sub_bags as _sub_bags
from .data import SlideBag
from .loop import MetricsFn, TrainResult, train
from .regions import Region, bags_from_regions

if TYPE_CHECKING:
    from ..features.encoders import FrozenEncoder

#: one slide with its labelled regions
SlideRegions = tuple["Slide | PathLike", Sequence[Region]]


def region_bags(
    regions: Sequence[SlideRegions],
    encoder: FrozenEncoder,
    *,
    class_names: tuple[str, ...],
    tiling: TilingConfig,
    cache_dir: PathLike | None = None,
    device: str = "auto",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[SlideBag]:
    """One bag per region that holds a tissue patch (features of each slide's whole grid, cached)."""
    from ..features.cache import cached_features
    from ..io.feature_store import FeatureBag
    from ..schemas import check_polygon
    from ..tiling import check_grid, detect_tissue, make_grid

    bags: list[SlideBag] = []
    for k, (slide_like, slide_regions) in enumerate(regions):
        with as_slide(slide_like) as slide:
            report(progress, k, len(regions), "regions", detail=slide.path.name)
            for i, r in enumerate(slide_regions):  # on this slide, before any tissue detection or encoding
                if getattr(r, "polygon", None) is not None:
                    check_polygon(
                        r.polygon,
                        name=f"{slide.path.name}: region {r.name or i}",
                        dimensions=slide.dimensions,
                    )
            check_grid(slide, tiling)
            grid = make_grid(slide, tiling, tissue=detect_tissue(slide))
            feats = cached_features(slide, grid, encoder, cache_dir=cache_dir, device=device, cancel=cancel)
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
    regions: Sequence[SlideRegions],
    *,
    output_dir: PathLike,
    class_names: Sequence[str] | None = None,
    encoder: str = DEFAULT_ENCODER,
    device: str = "auto",
    tiling: TilingConfig | None = None,
    cache_dir: PathLike | None = None,
    model_size: str = "tiny",
    epochs: int = 30,
    lr: float | None = None,
    batch_size: int | None = None,
    alpha: float | None = None,
    mode: str | None = None,
    sub_bags: int = 4,
    mixed_bags: int = 0,
    max_patches: int | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    metrics: MetricsFn | None = None,
    cancel: CancelToken | None = None,
) -> TrainResult:
    """Regions (polygons / masks with a class and optional caption) on slides -> a trained checkpoint.

    Args:
        regions: ``[(slide or path, [Region, ...]), ...]``.
        output_dir: the trainer's folder (``best/`` and ``last/`` checkpoints).
        class_names: class order (default: the sorted region labels).
        encoder: patch encoder name; tiling: patch grid (recorded in the checkpoint's config).
        cache_dir: feature cache folder (``None``: no cache).
        model_size: ``tiny`` | ``small`` | ``paper`` (:meth:`PathM3Config.preset`); lr: its optimiser's peak lr.
        sub_bags, mixed_bags: augmentation (:mod:`napari_pathm3.training.augment`).
        epochs, batch_size, alpha, mode, max_patches, seed: :class:`~napari_pathm3.config.TrainConfig`.
    """
    from ..device import resolve_device
    from ..features.encoders import cached_encoder, canonical_name

    tiling = tiling or TilingConfig()
    names = _class_names(regions, class_names)
    # the cached instance captioning uses too: a model trained here is captioned without reloading weights
    enc = cached_encoder(canonical_name(encoder), str(resolve_device(device)))
    bags = region_bags(
        regions,
        enc,
        class_names=names,
        tiling=tiling,
        cache_dir=cache_dir,
        device=device,
        progress=progress,
        cancel=cancel,
    )
    _check_bags(bags)
    train_bags = _sub_bags(bags, sub_bags, 0.6, seed) + _mixed_bags(bags, mixed_bags, seed)
    mcfg = PathM3Config.preset(model_size, feature_dim=enc.dim, encoder_name=enc.name, class_names=names)
    mcfg = dataclasses.replace(mcfg, tiling=tiling)
    if lr is not None:
        mcfg = dataclasses.replace(mcfg, optim=dataclasses.replace(mcfg.optim, lr=lr))
    bs = batch_size or min(mcfg.optim.batch_size, max(1, len(train_bags) // 4))
    tcfg = TrainConfig(
        epochs=epochs,
        batch_size=bs,
        alpha=alpha,
        mode=mode,
        device=str(device),
        seed=seed,  # type: ignore[arg-type]
        patience=None,
        log_every=1,
        max_patches=max_patches,
    )
    return train(
        mcfg,
        train_bags,
        None,
        tcfg,
        out_dir=output_dir,
        progress=progress,
        metrics_callback=metrics,
        cancel=cancel,
    )
