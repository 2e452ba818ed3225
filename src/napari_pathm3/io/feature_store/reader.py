"""Reading feature stores: one bag (:func:`read_bag`) or a folder of them (:class:`FeatureStore`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from ..._types import JSONObject, PathLike
from ...errors import FeatureStoreError
from ._files import SUFFIX, _Damaged, _load, _owned_but_unreadable, _ownership, attrs_problem, require_finite
from .bag import FeatureBag
from .meta import FORMAT_VERSION, BagMeta


def _bag(path: Path, attrs: JSONObject, features: np.ndarray, coords: np.ndarray) -> FeatureBag:
    features = np.asarray(features, dtype=np.float32)
    meta = BagMeta.from_attrs(attrs)
    require_finite(features, source=f"feature bag {meta.slide_id!r} ({path})")
    return FeatureBag(
        features=features,
        coords=coords,
        patch_size=meta.patch_size,
        mpp=meta.mpp,
        encoder_name=meta.encoder_name,
        slide_id=meta.slide_id,
        fingerprint=meta.slide_fingerprint,
        meta=meta,
    )


def read_bag(path: PathLike, *, allow_partial: bool = False) -> FeatureBag:
    """Load a complete bag (features as float32), every chunk checked. ``allow_partial`` returns the rows
    written so far.

    Raises:
        FeatureStoreError: not a feature store, another format version, incomplete, damaged (a chunk fails its
            checksum) or holding non-finite values; the message says what to run.
    """
    path = Path(path)
    if not path.exists():
        raise FeatureStoreError(f"{path}: no such feature store; run extraction first")
    attrs, why = _ownership(path)
    if attrs is None and path.is_dir() and _owned_but_unreadable(path):
        raise FeatureStoreError(
            f"{path}: damaged feature store (its zarr.json is unreadable); run extraction again to rebuild it"
        )
    if attrs is None or "done" not in attrs:
        raise FeatureStoreError(f"{path}: not a feature store ({why}); re-run extraction into a new folder")
    problem = attrs_problem(attrs)
    if problem is not None:
        raise FeatureStoreError(
            f"{path}: damaged feature store metadata ({problem}); run extraction again to rebuild it"
        )
    meta = BagMeta.from_attrs(attrs)
    if meta.format_version != FORMAT_VERSION:
        raise FeatureStoreError(
            f"{path}: format version {meta.format_version} is not {FORMAT_VERSION}; re-extract"
        )
    if not meta.complete and not allow_partial:
        raise FeatureStoreError(
            f"{path}: incomplete ({meta.done} of {meta.n} patches); run extraction again to resume"
        )
    rows = (meta.n if meta.complete else meta.done) or 0
    try:
        features, coords = _load(path, attrs, rows)
    except _Damaged as err:
        raise FeatureStoreError(
            f"{path}: damaged feature store ({err.reason}); run extraction again to recompute it"
        ) from err
    return _bag(path, attrs, features, coords)


def cache_path(
    cache_dir: PathLike,
    *,
    slide_stem: str,
    fingerprint: str,
    encoder_name: str,
    grid_key: Mapping[str, object],
) -> Path:
    """The feature cache's store for one (slide, encoder, grid): the store itself checks staleness and
    commits atomically. ``grid_key``: JSON-able identity of the grid (its parameters and a digest of its
    coordinates); a region's grid is a subset of the slide's, so it gets its own store and does not evict
    the whole-slide one."""
    import hashlib

    tag = hashlib.sha256(json.dumps(grid_key, sort_keys=True).encode()).hexdigest()[:12]
    enc = "".join(c if c.isalnum() else "-" for c in encoder_name)[:48]
    return Path(cache_dir).expanduser() / f"{slide_stem}-{fingerprint[:12]}-{enc}-{tag}.zarr"


class FeatureStore:
    """A directory of per-slide bags keyed by slide id: ``FeatureStore(root).open_bag(slide_id)``."""

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root).expanduser()

    def path_for(self, slide_id: str) -> Path:
        if not slide_id:
            raise ValueError("slide_id must be a non-empty string")
        return self.root / (quote(slide_id, safe="-_.+=@,()[] ") + SUFFIX)

    def _ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(unquote(p.name[: -len(SUFFIX)]) for p in self.root.iterdir() if p.name.endswith(SUFFIX))

    def keys(self) -> list[str]:
        """Slide ids with a complete bag."""
        return [k for k in self._ids() if self.is_complete(k)]

    def incomplete(self) -> list[str]:
        """Slide ids with a partial (resumable) or unreadable bag."""
        return [k for k in self._ids() if not self.is_complete(k)]

    def is_complete(self, slide_id: str) -> bool:
        path = self.path_for(slide_id)
        attrs = _ownership(path)[0] if path.is_dir() else None
        return bool(attrs and attrs.get("complete"))

    def __contains__(self, slide_id: object) -> bool:
        return isinstance(slide_id, str) and self.is_complete(slide_id)

    def __len__(self) -> int:
        return len(self.keys())

    def open_bag(self, slide_id: str) -> FeatureBag:
        """Load the complete bag of ``slide_id``.

        Raises:
            FeatureStoreError: missing or incomplete (message says to run extraction).
        """
        path = self.path_for(slide_id)
        if not path.exists():
            raise FeatureStoreError(
                f"{self.root}: no features for slide {slide_id!r}; run `napari-pathm3 extract`"
            )
        return read_bag(path)

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"
