"""Feature cache: one zarr v3 group per slide, filled chunk by chunk, resumable, marked complete atomically.

Layout of ``<root>/<slide_id>.zarr`` (slide ids are %-quoted into file names)::

    features  [N, D] float32 (or float16), chunks of ``chunk_rows`` rows
    coords    [N, 2] int64 level-0 (x, y), written whole at creation
    attrs     format_version, slide_id, slide_fingerprint, encoder {name, dim, input_size, mpp, weights_hash},
              grid (PatchGrid.params()), patch_size, mpp, n, coords_sha256, dtype, chunk_rows,
              done (rows on disk), complete

Crash safety: a chunk is written whole (rows ``[k·chunk_rows, (k+1)·chunk_rows)``) and only then is ``done``
raised; ``complete`` is set last. zarr's local store replaces ``zarr.json`` atomically (temporary file +
rename), so after a ``kill -9`` the group says exactly which chunks are whole, and a resumed run rewrites the
rest. A store whose identity attributes (encoder and weights hash, grid, slide fingerprint, format) differ
from the request is *stale*: it is deleted and recomputed, never reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote

import numpy as np

from .._types import PathLike
from ..errors import FeatureStoreError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SUFFIX = ".zarr"
#: attributes that are progress, not identity: they may differ between a partial store and the request
_PROGRESS_KEYS = ("done", "complete", "chunk_rows")

State = Literal["missing", "partial", "complete", "stale"]


@dataclass(frozen=True, eq=False)
class FeatureBag:
    """Patch features of one slide (a multiple-instance-learning bag).

    Attributes:
        features: ``(n, d)`` float32.
        coords: ``(n, 2)`` int64 level-0 ``(x, y)`` top-left corners, or ``None`` for coordinate-free bags
            (e.g. a folder of patch images).
        patch_size: patch side in pixels at ``mpp`` (``None`` when unknown).
        mpp: µm/px of the patches (``None`` when unknown).
        encoder_name: registry name of the encoder ("" when unknown, e.g. imported files).
        slide_id: key of the slide in a store / manifest.
        fingerprint: content hash of the slide file (``Slide.fingerprint``), when known.
        attrs: everything else recorded with the bag (grid params, weights hash, source file...).
    """

    features: np.ndarray
    coords: np.ndarray | None
    patch_size: int | None
    mpp: float | None
    encoder_name: str
    slide_id: str
    fingerprint: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features.ndim != 2:
            raise ValueError(f"features must be (n, d), got shape {self.features.shape}")
        if self.coords is not None and self.coords.shape != (self.features.shape[0], 2):
            raise ValueError(f"coords must be ({self.features.shape[0]}, 2), got {self.coords.shape}")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def slide_id_for(path: PathLike) -> str:
    """Default slide id: the file name without suffix (the folder name for DICOM folders)."""
    p = Path(path)
    return p.name if p.is_dir() else p.stem


def coords_sha256(coords: np.ndarray | None) -> str | None:
    if coords is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(coords, dtype=np.int64).tobytes()).hexdigest()


def bag_meta(
    *,
    slide_id: str,
    fingerprint: str | None,
    encoder: dict[str, Any],
    grid: dict[str, Any],
    coords: np.ndarray,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Identity attributes of a bag (JSON-normalised): a store is reused only when these match exactly."""
    meta = {
        "format_version": FORMAT_VERSION,
        "slide_id": slide_id,
        "slide_fingerprint": fingerprint,
        "encoder": encoder,
        "grid": grid,
        "patch_size": grid.get("patch_size"),
        "mpp": grid.get("mpp"),
        "n": int(len(coords)),
        "coords_sha256": coords_sha256(coords),
        "dtype": dtype,
    }
    return json.loads(json.dumps(meta, sort_keys=True))


def _identity(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k not in _PROGRESS_KEYS}


def _stale_reason(found: dict[str, Any], expected: dict[str, Any]) -> str | None:
    a, b = _identity(found), _identity(expected)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key} differs (stored {a.get(key)!r}, requested {b.get(key)!r})"
    return None


def _open_read(path: Path) -> tuple[Any, dict[str, Any] | None]:
    """``(group, attrs)`` opened read-only, or ``(None, None)`` when unreadable."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        return group, dict(group.attrs)
    except Exception:  # unreadable / half-created group: the caller treats it as stale
        return None, None


def _open_attrs(path: Path) -> dict[str, Any] | None:
    return _open_read(path)[1]


def inspect_bag(path: PathLike, meta: dict[str, Any]) -> tuple[State, str]:
    """``(state, reason)`` of the store at ``path`` for the request ``meta`` (see :func:`bag_meta`)."""
    path = Path(path)
    if not path.exists():
        return "missing", "no store yet"
    attrs = _open_attrs(path)
    if attrs is None or "done" not in attrs:
        return "stale", "store unreadable or creation was interrupted"
    reason = _stale_reason(attrs, meta)
    if reason is not None:
        return "stale", reason
    if attrs.get("complete"):
        return "complete", "complete"
    return "partial", f"{attrs['done']} of {attrs['n']} rows on disk"


class BagWriter:
    """Fills one slide's group chunk by chunk. Use :meth:`open`; then :meth:`write` whole chunks in order and
    :meth:`finish`."""

    def __init__(self, path: Path, group: Any, attrs: dict[str, Any]) -> None:
        self.path, self._group = path, group
        self.n = int(attrs["n"])
        self.chunk_rows = int(attrs["chunk_rows"])
        self.done = int(attrs["done"])
        self.complete = bool(attrs.get("complete", False))

    @classmethod
    def open(
        cls,
        path: PathLike,
        *,
        meta: dict[str, Any],
        coords: np.ndarray,
        dim: int,
        chunk_rows: int = 256,
        overwrite: bool = False,
    ) -> BagWriter:
        """Reuse a matching complete or partial store at ``path``; create it when missing, stale or ``overwrite``."""
        import zarr

        path = Path(path)
        state, reason = inspect_bag(path, meta)
        if state == "stale" or (overwrite and state != "missing"):
            log.warning("%s: recomputing features (%s)", path, "overwrite requested" if overwrite else reason)
            shutil.rmtree(path)
            state = "missing"
        if state != "missing":
            group = zarr.open_group(str(path), mode="r+")
            log.info("%s: %s", path, reason)
            return cls(path, group, dict(group.attrs))
        n = int(meta["n"])
        group = zarr.open_group(str(path), mode="w")
        group.create_array(
            "features", shape=(n, dim), chunks=(max(1, min(chunk_rows, n)), dim), dtype=meta["dtype"]
        )
        c = group.create_array("coords", shape=(n, 2), chunks=(max(1, n), 2), dtype="int64")
        if n:
            c[:] = np.asarray(coords, dtype=np.int64)
        attrs = {**meta, "chunk_rows": int(chunk_rows), "done": 0, "complete": False}
        group.attrs.update(attrs)  # "done" appears last: a group without it is a half-created one
        return cls(path, group, attrs)

    def write(self, start: int, features: np.ndarray) -> None:
        """Write rows ``[start, start + len(features))``: must be ``done`` and a whole chunk (or the tail)."""
        stop = start + len(features)
        if (
            start != self.done
            or start % self.chunk_rows
            or (stop - start != self.chunk_rows and stop != self.n)
        ):
            raise FeatureStoreError(
                f"{self.path}: chunk write [{start}, {stop}) out of order or not chunk aligned "
                f"(done={self.done}, chunk_rows={self.chunk_rows}, n={self.n})"
            )
        self._group["features"][start:stop] = features  # whole chunk: no read-modify-write
        self._group.attrs["done"] = stop  # only after the chunk is on disk
        self.done = stop

    def finish(self) -> None:
        if self.done != self.n:
            raise FeatureStoreError(f"{self.path}: finish() with {self.done} of {self.n} rows written")
        self._group.attrs["complete"] = True  # written last, atomically (zarr.json replaced as a whole)
        self.complete = True

    def read(self) -> FeatureBag:
        return read_bag(self.path)


def read_bag(path: PathLike, *, allow_partial: bool = False) -> FeatureBag:
    """Load a complete bag (features as float32). ``allow_partial`` returns the rows written so far."""
    path = Path(path)
    g, attrs = _open_read(path)
    if attrs is None or "done" not in attrs:
        raise FeatureStoreError(
            f"{path}: not a feature store (or its creation was interrupted); re-run extraction"
        )
    if attrs.get("format_version") != FORMAT_VERSION:
        raise FeatureStoreError(
            f"{path}: format version {attrs.get('format_version')} is not {FORMAT_VERSION}; re-extract"
        )
    if not attrs.get("complete") and not allow_partial:
        raise FeatureStoreError(
            f"{path}: incomplete ({attrs['done']} of {attrs['n']} patches); run extraction again to resume"
        )
    rows = int(attrs["n"]) if attrs.get("complete") else int(attrs["done"])
    enc = attrs.get("encoder") or {}
    return FeatureBag(
        features=np.asarray(g["features"][:rows], dtype=np.float32),
        coords=np.asarray(g["coords"][:rows], dtype=np.int64),
        patch_size=attrs.get("patch_size"),
        mpp=attrs.get("mpp"),
        encoder_name=enc.get("name", ""),
        slide_id=attrs.get("slide_id", ""),
        fingerprint=attrs.get("slide_fingerprint"),
        attrs=attrs,
    )


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
        attrs = _open_attrs(self.path_for(slide_id))
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
