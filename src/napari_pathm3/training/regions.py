"""Annotated regions -> training bags: the patches of a slide whose centre lies inside a region.

Pure numpy / scikit-image; no napari. Coordinates are level-0 ``(x, y)`` pixels. napari shapes are
``(row, col)`` = ``(y, x)`` in the layer's data space: the widget flips them (``polygon[:, ::-1]``) and
multiplies by the layer's scale to level 0 before building a :class:`Region`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import RegionError
from ..io.feature_store import BagMeta
from ..schemas import check_polygon
from .data import SlideBag, label_index


@dataclass(frozen=True, eq=False)
class Region:
    """One annotated region: a polygon or a mask, its class and an optional caption.

    Attributes:
        label: class name (or index) of the region.
        polygon: ``(k, 2)`` vertices ``(x, y)`` in level-0 pixels (closed implicitly).
        mask: 2-D mask; a pixel counts when non-zero (or equal to ``mask_value`` when given).
        downsample: level-0 pixels per mask pixel (a labels layer drawn on level ``l`` has that level's
            downsample).
        origin: level-0 ``(x, y)`` of the mask's pixel ``(0, 0)`` corner (a translated labels layer).
        mask_value: the label id this region stands for in a shared label image.
        caption: text describing the region (target and text input), or ``None``.
        name: identifies the bag (``"<slide>#<name>"``).
    """

    label: str | int
    polygon: np.ndarray | None = None
    mask: np.ndarray | None = None
    downsample: float = 1.0
    origin: tuple[float, float] = (0.0, 0.0)
    mask_value: int | None = None
    caption: str | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if (self.polygon is None) == (self.mask is None):
            raise ValueError("Region: give exactly one of polygon or mask")
        if self.polygon is not None:
            name = f"Region {self.name or self.label!s}".strip()
            object.__setattr__(self, "polygon", check_polygon(self.polygon, name=f"{name}: polygon"))
        if self.mask is not None and np.asarray(self.mask).ndim != 2:
            raise RegionError("Region.mask: must be 2-D")
        if not (
            isinstance(self.downsample, (int, float))
            and math.isfinite(self.downsample)
            and self.downsample > 0
        ):
            raise RegionError(f"Region.downsample: must be a finite number > 0, got {self.downsample!r}")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in self.origin):
            raise RegionError(f"Region.origin: must be two finite numbers, got {self.origin!r}")

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Boolean ``(n,)``: which level-0 ``(x, y)`` points are inside the region."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if self.polygon is not None:
            from skimage.measure import points_in_poly

            return np.asarray(points_in_poly(pts, self.polygon), dtype=bool)
        mask = np.asarray(self.mask)
        col = np.floor((pts[:, 0] - self.origin[0]) / self.downsample).astype(np.int64)
        row = np.floor((pts[:, 1] - self.origin[1]) / self.downsample).astype(np.int64)
        inside = (row >= 0) & (row < mask.shape[0]) & (col >= 0) & (col < mask.shape[1])
        hit = np.zeros(pts.shape[0], dtype=bool)
        values = mask[row[inside], col[inside]]
        hit[inside] = values == self.mask_value if self.mask_value is not None else values != 0
        return hit


def regions_from_labels(
    labels: np.ndarray,
    classes: Mapping[int, str | int | tuple[str | int, str | None]],
    *,
    downsample: float = 1.0,
    origin: tuple[float, float] = (0.0, 0.0),
) -> list[Region]:
    """One :class:`Region` per label id of a label image (a napari labels layer).

    Args:
        labels: 2-D integer label image; 0 is background.
        classes: label id -> class, or -> ``(class, caption)``. Ids missing here are ignored.
        downsample: level-0 pixels per label pixel.
        origin: level-0 ``(x, y)`` of label pixel ``(0, 0)``.
    """
    present = set(np.unique(labels).tolist()) - {0}
    out = []
    for value, spec in classes.items():
        if value not in present:
            continue
        cls, caption = spec if isinstance(spec, tuple) else (spec, None)
        out.append(
            Region(
                label=cls,
                mask=labels,
                mask_value=int(value),
                downsample=downsample,
                origin=origin,
                caption=caption,
                name=f"label{value}",
            )
        )
    return out


def _patch_size_level0(slide_features: Any) -> float:
    for name in ("size_level0", "patch_size_level0"):
        v = getattr(slide_features, name, None)
        if v is not None:
            return float(v)
    grid = getattr(slide_features, "grid", None)
    if grid is not None and getattr(grid, "size_level0", None) is not None:
        return float(grid.size_level0)
    # io.feature_store.FeatureBag records the grid (PatchGrid.params()), or TRIDENT's / a SpatialData tile
    # spec's patch_size_level0 (io.interop, io.spatialdata), in its meta
    meta = getattr(slide_features, "meta", None)
    if isinstance(meta, BagMeta) and meta.size_level0:
        return float(meta.size_level0)
    raise ValueError(
        "slide_features: no patch size in level-0 pixels (size_level0, a grid, or meta.grid); "
        "pass patch_size_level0=grid.size_level0"
    )


def bags_from_regions(
    slide_features: Any,
    regions: Sequence[Region],
    *,
    class_names: Sequence[str] = (),
    slide_id: str = "",
    patch_size_level0: float | None = None,
    min_patches: int = 1,
) -> list[SlideBag]:
    """One bag per region: the patches whose centre lies inside the region's polygon or mask.

    Args:
        slide_features: the slide's features; anything with ``features (n, d)``, ``coords (n, 2)`` level-0
            top-left ``(x, y)`` and ``size_level0`` (a ``FeatureBag``), or a ``(features, coords,
            size_level0)`` tuple.
        regions: the annotated regions.
        class_names: the model's classes; region labels are mapped to their index (``()``: labels must
            already be indices).
        slide_id: prefix of the bag ids.
        patch_size_level0: overrides the patch size found on ``slide_features``.
        min_patches: regions holding fewer patches are skipped (with no error: an annotation may miss the
            tissue grid).

    Returns:
        The bags, in region order, without the skipped ones.
    """
    if isinstance(slide_features, tuple):
        feats, coords, size0 = slide_features
    else:
        feats, coords = slide_features.features, slide_features.coords
        size0 = patch_size_level0 if patch_size_level0 is not None else _patch_size_level0(slide_features)
    if patch_size_level0 is not None:
        size0 = patch_size_level0
    feats = np.asarray(feats, dtype=np.float32)
    coords = np.asarray(coords)
    if coords.shape[0] != feats.shape[0]:
        raise ValueError(f"slide_features: {coords.shape[0]} coords for {feats.shape[0]} features")
    centres = coords.astype(np.float64) + float(size0) / 2
    bags = []
    for k, region in enumerate(regions):
        keep = region.contains(centres)
        if int(keep.sum()) < min_patches:
            continue
        label = label_index(region.label, class_names) if class_names else int(region.label)
        name = region.name or f"region{k}"
        bags.append(SlideBag(feats[keep], label, region.caption, f"{slide_id}#{name}", coords[keep]))
    return bags
