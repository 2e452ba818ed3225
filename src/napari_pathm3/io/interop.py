"""Feature bags written by other toolkits, and coordinate-free bags from folders of patch images.

* TRIDENT / CLAM ``.h5``: datasets ``features`` ``(N, D)`` (or ``(1, N, D)``) and ``coords`` ``(N, 2)``;
  attributes such as ``patch_size`` / ``patch_level`` / ``level`` are kept in ``bag.meta.extra``; the level-0 patch
  side comes from TRIDENT's ``patch_size_level0`` (or CLAM's ``downsample``, or TRIDENT's magnifications).
* SpatialData ``.zarr`` (LazySlide / wsidata / our export): see :mod:`.spatialdata`.
* ``.npy``: a ``(N, D)`` array, no coordinates.
* ``.pt``: a tensor ``(N, D)`` or a dict with ``features`` (and optional ``coords``), loaded with
  ``torch.load(weights_only=True)`` (no pickled code runs).
* ``.safetensors``: tensors ``features`` (and optional ``coords``).
* PatchGastric-style folders: ``{slide_id}_{hash}.jpg`` patch images, grouped by slide id and encoded with a
  given encoder (anything with ``encode(uint8 (b, h, w, 3)) -> (b, d)``); ``coords`` is ``None``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .._types import CancelToken, PathLike, ProgressFn, check_cancel, report
from ..errors import FeatureStoreError
from .feature_store import BagMeta, FeatureBag, read_bag, require_finite

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
#: largest |coordinate| of a patch, level-0 px: far beyond any slide (10 m at 0.25 µm/px), inside int64
MAX_COORD = 4e10


def _plain(value: Any) -> Any:
    """HDF5 attribute -> JSON-friendly Python value."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_features(arr: Any, path: Path) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] == 1:  # CLAM/TRIDENT sometimes keep a leading batch axis
        a = a[0]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0 or not np.issubdtype(a.dtype, np.floating):
        # real floating point only: complex values would lose their imaginary part, integers/booleans are
        # labels or masks saved by mistake, not encoder outputs
        raise FeatureStoreError(
            f"{path}: features must be a non-empty real floating-point (N, D) array, got {a.dtype} {a.shape}; "
            "save the encoder's float output"
        )
    a = a.astype(np.float32, copy=False)
    require_finite(a, source=f"feature bag {path}")
    return a


def _as_coords(arr: Any, n: int, path: Path) -> np.ndarray:
    c = np.asarray(arr)
    if c.ndim == 3 and c.shape[0] == 1:
        c = c[0]
    if c.shape != (n, 2):
        raise FeatureStoreError(f"{path}: coords must be ({n}, 2) to match the features, got {c.shape}")
    if not (np.issubdtype(c.dtype, np.integer) or np.issubdtype(c.dtype, np.floating)):
        raise FeatureStoreError(f"{path}: coords must be real numbers (level-0 x, y), got {c.dtype}")
    bad = ~np.isfinite(c).all(axis=1) if np.issubdtype(c.dtype, np.floating) else np.zeros(n, bool)
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise FeatureStoreError(
            f"{path}: {int(bad.sum())} patch coordinate(s) are NaN/Inf (first: patch {i}, {c[i].tolist()}); "
            "re-export the bag with its patch coordinates"
        )
    if n and (c.min() < -MAX_COORD or c.max() > MAX_COORD):
        raise FeatureStoreError(
            f"{path}: patch coordinates reach {float(np.abs(c).max()):.3g}, beyond any slide (|x|, |y| <= "
            f"{MAX_COORD:.0e} level-0 px); re-export the bag with level-0 pixel coordinates"
        )
    return np.rint(c).astype(np.int64) if np.issubdtype(c.dtype, np.floating) else c.astype(np.int64)


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _patch_size_level0(attrs: dict[str, Any]) -> float | None:
    """Side of a patch in level-0 pixels: TRIDENT's ``patch_size_level0``, else CLAM's ``patch_size`` times
    the ``downsample`` of its ``patch_level``, else TRIDENT's magnification ratio; ``None`` when unknown."""
    size0 = attrs.get("patch_size_level0")
    if isinstance(size0, (int, float)) and size0 > 0:
        return float(size0)
    size = attrs.get("patch_size")
    if not isinstance(size, (int, float)) or size <= 0:
        return None
    down = attrs.get("downsample")
    if isinstance(down, list) and down and all(isinstance(d, (int, float)) for d in down):
        return float(size) * float(down[0])
    mag0, mag = attrs.get("level0_magnification"), attrs.get("target_magnification")
    if isinstance(mag0, (int, float)) and isinstance(mag, (int, float)) and mag > 0:
        return float(size) * float(mag0) / float(mag)
    return None


def read_h5_bag(path: PathLike, *, slide_id: str | None = None) -> FeatureBag:
    """Read a TRIDENT or CLAM ``.h5`` feature file.

    Raises:
        FeatureStoreError: not HDF5, no ``features`` dataset, or shapes that do not fit.
    """
    import h5py

    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise FeatureStoreError(f"{path}: not a readable HDF5 file ({err})") from err
    with fh:
        if "features" not in fh:
            raise FeatureStoreError(
                f"{path}: no 'features' dataset (found {sorted(fh.keys())}); expected TRIDENT/CLAM layout"
            )
        feats = _as_features(fh["features"][()], path)
        attrs: dict[str, Any] = {k: _plain(v) for k, v in fh.attrs.items()}
        attrs.update({k: _plain(v) for k, v in fh["features"].attrs.items()})
        coords = None
        if "coords" in fh:
            coords = _as_coords(fh["coords"][()], len(feats), path)
            attrs.update({k: _plain(v) for k, v in fh["coords"].attrs.items()})
    attrs["source"] = str(path)
    mpp = attrs.get("mpp")
    size0 = _patch_size_level0(attrs)
    if size0 is not None:
        attrs["patch_size_level0"] = size0
    if not isinstance(mpp, (int, float)) and isinstance(attrs.get("target_magnification"), (int, float)):
        # TRIDENT records magnifications, not µm/px; its own mapping is 20x = 0.5 µm/px (mpp = 10 / mag)
        mpp = 10.0 / float(attrs["target_magnification"]) if attrs["target_magnification"] > 0 else None
    return FeatureBag(
        features=feats,
        coords=coords,
        patch_size=_int_or_none(attrs.get("patch_size")),
        mpp=float(mpp) if isinstance(mpp, (int, float)) else None,
        encoder_name=str(attrs.get("encoder", "")),
        slide_id=slide_id or path.stem,
        meta=BagMeta.from_attrs(attrs),
    )


def read_npy_bag(path: PathLike, *, slide_id: str | None = None) -> FeatureBag:
    """Read a ``(N, D)`` ``.npy`` array (features only, ``coords=None``)."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise FeatureStoreError(f"{path}: not a readable .npy array ({err})") from err
    return _foreign_bag(_as_features(arr, path), None, path, slide_id)


def read_pt_bag(path: PathLike, *, slide_id: str | None = None) -> FeatureBag:
    """Read a ``.pt`` tensor ``(N, D)`` or ``{"features": ..., "coords": ...}`` (``weights_only=True``)."""
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for disallowed globals, RuntimeError for bad zips...
        raise FeatureStoreError(f"{path}: not a tensor file loadable with weights_only=True ({err})") from err
    coords = None
    if isinstance(obj, dict):
        if "features" not in obj:
            raise FeatureStoreError(f"{path}: dict without a 'features' entry (keys {sorted(map(str, obj))})")
        feats = _as_features(_np(obj["features"]), path)
        if obj.get("coords") is not None:
            coords = _as_coords(_np(obj["coords"]), len(feats), path)
    elif isinstance(obj, torch.Tensor):
        feats = _as_features(_np(obj), path)
    else:
        raise FeatureStoreError(f"{path}: expected a tensor or a dict of tensors, got {type(obj).__name__}")
    return _foreign_bag(feats, coords, path, slide_id)


def read_safetensors_bag(path: PathLike, *, slide_id: str | None = None) -> FeatureBag:
    """Read a ``.safetensors`` file with a ``features`` tensor (and optional ``coords``)."""
    from safetensors.numpy import load_file

    path = Path(path)
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise FeatureStoreError(f"cannot read features from {path}: {err}") from err
    if "features" not in tensors:
        raise FeatureStoreError(f"{path}: no 'features' tensor (found {sorted(tensors)})")
    feats = _as_features(tensors["features"], path)
    coords = _as_coords(tensors["coords"], len(feats), path) if "coords" in tensors else None
    return _foreign_bag(feats, coords, path, slide_id)


def _foreign_bag(
    feats: np.ndarray, coords: np.ndarray | None, path: Path, slide_id: str | None
) -> FeatureBag:
    """A bag read from another toolkit's file: no patch size, mpp or encoder recorded."""
    return FeatureBag(
        features=feats,
        coords=coords,
        patch_size=None,
        mpp=None,
        encoder_name="",
        slide_id=slide_id or path.stem,
        meta=BagMeta(source=str(path)),
    )


def _np(value: Any) -> np.ndarray:
    return (
        value.detach().float().numpy()
        if hasattr(value, "detach") and value.is_floating_point()
        else np.asarray(value)
    )


def read_feature_file(path: PathLike, *, slide_id: str | None = None) -> FeatureBag:
    """Read any supported bag by suffix: ``.h5``/``.hdf5``, ``.npy``, ``.pt``/``.pth``, ``.safetensors``, our
    ``.zarr`` group, or a SpatialData ``.zarr`` (LazySlide / wsidata; ``store.zarr/tables/<key>`` names a table)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise FeatureStoreError(f"{path}: no such file")
    if suffix in (".h5", ".hdf5"):
        return read_h5_bag(path, slide_id=slide_id)
    if suffix == ".npy":
        return read_npy_bag(path, slide_id=slide_id)
    if suffix in (".pt", ".pth"):
        return read_pt_bag(path, slide_id=slide_id)
    if suffix == ".safetensors":
        return read_safetensors_bag(path, slide_id=slide_id)
    from .spatialdata import is_spatialdata_store, read_spatialdata_bag, split_table_path

    if is_spatialdata_store(path) or split_table_path(path)[1] is not None:  # LazySlide / wsidata / ours
        return read_spatialdata_bag(path, slide_id=slide_id)
    if suffix == ".zarr" or path.is_dir():
        return read_bag(path)
    raise FeatureStoreError(
        f"{path}: unsupported feature file (use .h5, .npy, .pt, .safetensors or a .zarr feature store)"
    )


# ---------------------------------------------------------------------------------------------- patch folders


def patch_folder_slides(
    folder: PathLike, *, suffixes: Sequence[str] = IMAGE_SUFFIXES
) -> dict[str, list[Path]]:
    """Group ``{slide_id}_{hash}.jpg`` images by slide id (the name up to its last ``_``), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FeatureStoreError(f"{folder}: not a folder of patch images")
    groups: dict[str, list[Path]] = defaultdict(list)
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in suffixes:
            continue
        sid, sep, _ = p.stem.rpartition("_")
        if not sep or not sid:
            log.warning("%s: name is not {slide_id}_{hash}; skipped", p.name)
            continue
        groups[sid].append(p)
    if not groups:
        raise FeatureStoreError(f"{folder}: no patch images named {{slide_id}}_{{hash}}{suffixes[0]}")
    return dict(groups)


def _load_image(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as src:
            im = src.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im)
    except OSError as err:
        raise FeatureStoreError(f"{path}: unreadable image ({err})") from err


def bags_from_patch_folder(
    folder: PathLike,
    encoder: Any,
    *,
    slide_ids: Sequence[str] | None = None,
    batch_size: int = 64,
    num_workers: int = 4,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, FeatureBag]:
    """Encode a PatchGastric-style folder into one coordinate-free bag per slide.

    Args:
        folder: images named ``{slide_id}_{hash}.jpg``.
        encoder: e.g. ``get_encoder("builtin:colorstats")``; images are resized to its ``input_size`` (or to
            the first image's size when it takes any size).
        slide_ids: only these slides (default: all).
        progress: ``progress(images_done, n_images, "patches")``.
    """
    groups = patch_folder_slides(folder)
    if slide_ids is not None:
        missing = sorted(set(slide_ids) - set(groups))
        if missing:
            raise FeatureStoreError(f"{folder}: no images for slide ids {missing}")
        groups = {k: groups[k] for k in slide_ids}
    size = getattr(encoder, "input_size", None)
    if size is None:
        size = _load_image(next(iter(groups.values()))[0], None).shape[0]
    total, done = sum(len(v) for v in groups.values()), 0
    out: dict[str, FeatureBag] = {}
    with ThreadPoolExecutor(max(1, num_workers), thread_name_prefix="pathm3-img") as pool:
        for sid, paths in groups.items():
            feats = []
            for i in range(0, len(paths), batch_size):
                check_cancel(cancel)
                batch = np.stack(list(pool.map(lambda p: _load_image(p, size), paths[i : i + batch_size])))
                feats.append(np.asarray(encoder.encode(batch), dtype=np.float32))
                done += len(batch)
                report(progress, done, total, "patches")
            out[sid] = FeatureBag(
                features=np.concatenate(feats),
                coords=None,
                patch_size=int(size),
                mpp=None,
                encoder_name=str(getattr(encoder, "name", "")),
                slide_id=sid,
                meta=BagMeta(source=str(folder), extra={"files": [p.name for p in paths]}),
            )
    return out


__all__ = [
    "bags_from_patch_folder",
    "patch_folder_slides",
    "read_feature_file",
    "read_h5_bag",
    "read_npy_bag",
    "read_pt_bag",
    "read_safetensors_bag",
]
