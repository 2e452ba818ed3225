"""Tissue detection on a low-resolution image of the slide (numpy / scikit-image, no I/O in the math)."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .._types import ProgressFn, Stage, report
from ..config import TissueConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TissueMask:
    """Boolean mask of tissue on a grid of ``downsample`` level-0 pixels per mask pixel.

    ``mask[r, c]`` covers level-0 pixels ``[c*downsample, (c+1)*downsample) x [r*downsample, (r+1)*downsample)``.
    (napari puts pixel centres at ``i * scale + translate``, so a layer of this mask needs
    ``translate = (downsample - 1) / 2`` level-0 pixels to sit on the slide: see :mod:`napari_pathm3.layers`.)
    """

    mask: np.ndarray
    downsample: float
    threshold: float

    @property
    def empty(self) -> bool:
        return not bool(self.mask.any())

    @property
    def tissue_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1]; white and grey background are ~0, stained tissue is high."""
    rgb = rgb[..., :3]
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)  # in uint8: a quarter of the memory traffic of float32
    return (mx - mn).astype(np.float32) / np.maximum(mx, 1).astype(np.float32)  # 0 on black (mx = 0)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Mean optical density -log10(I/255) over channels; 0 on white."""
    od = -np.log10(np.clip(rgb.astype(np.float32), 1.0, 255.0) / 255.0)
    return od.mean(axis=2)


def threshold_otsu(values: np.ndarray, nbins: int = 256) -> float:
    """Otsu's threshold of ``values`` on a ``nbins`` histogram over their range: the same rule and result as
    ``skimage.filters.threshold_otsu``, in numpy alone (importing scikit-image's filters costs more than
    the whole detection on a 20k x 20k slide)."""
    hist, edges = np.histogram(values, bins=nbins, range=(float(values.min()), float(values.max())))
    centers = (edges[:-1] + edges[1:]) / 2
    hist = hist.astype(np.float64)
    w1 = np.cumsum(hist)  # pixels at or under each bin (class 1) and at or above it (class 2)
    w2 = np.cumsum(hist[::-1])[::-1]
    m1 = np.cumsum(hist * centers) / np.maximum(w1, 1e-12)
    m2 = (np.cumsum((hist * centers)[::-1]) / np.maximum(w2[::-1], 1e-12))[::-1]
    between = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2  # between-class variance of each split
    return float(centers[int(np.argmax(between))])


def detect_tissue_array(
    rgb: np.ndarray, *, um_per_px: float, config: TissueConfig
) -> tuple[np.ndarray, float]:
    """Tissue mask of an RGB image whose pixels are ``um_per_px`` µm wide. Returns ``(mask, threshold)``."""
    from scipy import ndimage

    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.size == 0:
        raise ValueError(f"expected an RGB image (h, w, 3), got shape {rgb.shape}")
    signal = saturation(rgb) if config.method == "otsu_saturation" else optical_density(rgb)
    floor = config.min_saturation if config.method == "otsu_saturation" else 0.05
    if float(signal.max() - signal.min()) < 1e-6:
        return np.zeros(signal.shape, bool), float("inf")  # uniform image: Otsu is undefined, no tissue
    if config.threshold is not None:  # the user's threshold, e.g. for faint stains Otsu splits badly
        threshold = float(config.threshold)
    else:
        threshold = max(threshold_otsu(signal), floor)
    mask = signal > threshold

    def radius(um: float) -> int:
        return max(0, round(um / um_per_px))

    if (r := radius(config.closing_radius_um)) > 0:
        mask = _erode(_dilate(np.pad(mask, r), r), r)[r:-r, r:-r]
    if (r := radius(config.opening_radius_um)) > 0:
        mask = _dilate(_erode(mask, r), r)
    px_area = um_per_px**2
    min_hole = int(config.min_hole_area_um2 / px_area)
    if min_hole > 0:
        holes = ndimage.binary_fill_holes(mask) & ~mask
        labels, n = ndimage.label(holes)
        if n:
            sizes = np.bincount(labels.ravel())
            small = sizes < min_hole
            small[0] = False
            mask = mask | small[labels]
    min_obj = int(config.min_area_um2 / px_area)
    if min_obj > 0 and mask.any():
        labels, n = ndimage.label(mask)
        sizes = np.bincount(labels.ravel())
        keep = sizes >= min_obj
        keep[0] = False
        mask = keep[labels]
    return mask, threshold


#: above this radius (mask pixels) a disk is applied through the distance transform: one O(n) pass whatever
#: the radius, where a structuring element costs O(n·r²) (a 1.3-Mpx image with a radius-32 disk took 4 s
#: that way, 0.1 s this way); below it the structuring element is the faster of the two
EDT_RADIUS = 4


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a disk of radius ``r`` (``skimage.morphology.disk(r)``: x² + y² ≤ r²)."""
    from scipy import ndimage

    if not mask.any():
        return mask.copy()
    if r <= EDT_RADIUS:
        return ndimage.binary_dilation(mask, _disk(r))
    return ndimage.distance_transform_edt(~mask) <= r


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary erosion by a disk of radius ``r``; pixels outside the image count as background (as in
    ``scipy.ndimage.binary_erosion``)."""
    from scipy import ndimage

    if r <= EDT_RADIUS:
        return ndimage.binary_erosion(mask, _disk(r))
    padded = np.pad(mask, 1)  # the zero border makes the image edge background
    return (ndimage.distance_transform_edt(padded) > r)[1:-1, 1:-1]


def _disk(r: int) -> np.ndarray:
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r


_CACHE: OrderedDict[tuple, TissueMask] = OrderedDict()
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


def detect_tissue(
    slide: object,
    config: TissueConfig | None = None,
    *,
    use_cache: bool = True,
    progress: ProgressFn | None = None,
) -> TissueMask:
    """Tissue mask of ``slide`` computed at about ``config.target_mpp`` µm/px.

    An empty mask is a valid result (blank slide); callers that need tissue check ``.empty`` and raise
    :class:`~napari_pathm3.errors.NoTissueError` with their own context. Masks of the last few slides are
    kept (keyed by slide content, mpp and config), so captioning several regions of one slide reads it once.
    ``progress``: ``TISSUE`` events, the blocks of the low-resolution read and then the mask as the last step
    (nothing when the mask comes from the cache).
    """
    config = config or TissueConfig()
    key = (getattr(slide, "fingerprint", None), getattr(slide, "mpp", None), config)
    if use_cache and key[0] is not None:
        with _CACHE_LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _CACHE[key]
    result = _detect(slide, config, progress)
    result.mask.setflags(write=False)  # shared between callers
    if use_cache and key[0] is not None:
        with _CACHE_LOCK:
            _CACHE[key] = result
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return result


#: µm/px assumed for a slide without one (20x, the common case): only to pick the detection level and the
#: morphology radii, so detection reads a low-resolution level whether or not the slide knows its µm/px
ASSUMED_MPP = 0.5
#: the detection image of a slide without µm/px keeps at least this many pixels on its long side (the assumed
#: scale may be far off, e.g. a low-power image of a small biopsy)
MIN_SIDE_NO_MPP = 512


def detection_downsample(dimensions: tuple[int, int], mpp: float | None, config: TissueConfig) -> float:
    """Level-0 pixels per detection-image pixel: ``config.target_mpp`` at the slide's µm/px (or
    :data:`ASSUMED_MPP`), the image bounded to ``4 * config.max_size`` on its long side."""
    long_side = max(dimensions)
    downsample = max(1.0, config.target_mpp / (mpp or ASSUMED_MPP), long_side / (4 * config.max_size))
    if mpp is None:
        downsample = min(downsample, max(1.0, long_side / MIN_SIDE_NO_MPP))
    return downsample


def _detect(slide: object, config: TissueConfig, progress: ProgressFn | None = None) -> TissueMask:
    from ..io.downsample import read_downsampled

    w0, h0 = slide.dimensions  # type: ignore[attr-defined]
    mpp = slide.mpp  # type: ignore[attr-defined]
    downsample = detection_downsample((w0, h0), mpp, config)
    um_per_px = downsample * (mpp or ASSUMED_MPP)
    if mpp is None:
        # the assumed scale may be far off (a low-power image of a small biopsy): never drop an object as
        # "debris" that covers 0.1 % of the image (kidney-48-5.tif lost its only piece of tissue here)
        image_um2 = (w0 / downsample) * (h0 / downsample) * um_per_px**2
        if config.min_area_um2 > 0.001 * image_um2:
            config = dataclasses.replace(config, min_area_um2=0.001 * image_um2)
    steps = [1]  # the read's blocks, then one step for the mask (its cost is a fraction of the read's)

    def on_block(done: int, total: int) -> None:
        steps[0] = total + 1
        report(progress, done, total + 1, Stage.TISSUE)

    rgb = read_downsampled(slide, downsample, on_block=None if progress is None else on_block)  # type: ignore[arg-type]
    # the effective downsample after rounding of the output size
    eff = w0 / rgb.shape[1]
    mask, threshold = detect_tissue_array(rgb, um_per_px=um_per_px, config=config)
    report(progress, steps[0], steps[0], Stage.TISSUE)
    result = TissueMask(mask=mask, downsample=float(eff), threshold=threshold)
    if result.empty:
        log.info("no tissue detected in %s", getattr(slide, "path", "slide"))
    return result
