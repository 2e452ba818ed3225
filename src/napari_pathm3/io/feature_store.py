"""Feature cache: one zarr v3 group per slide, filled chunk by chunk, resumable, marked complete atomically.

Layout of ``<root>/<slide_id>.zarr`` (slide ids are %-quoted into file names)::

    features  [N, D] float32 (or float16), chunks of ``chunk_rows`` rows
    coords    [N, 2] int64 level-0 (x, y), written whole at creation
    attrs     napari_pathm3 ("feature-bag": the ownership marker), format_version, slide_id,
              slide_fingerprint, encoder {name, dim, input_size, mpp, weights_hash}, grid (PatchGrid.params()),
              patch_size, mpp, n, coords_sha256, dtype, chunk_rows, done (rows on disk),
              chunk_digests (one CRC-32 per written chunk), complete

Ownership: only a folder whose ``zarr.json`` carries the marker (and holds nothing but ``zarr.json``,
``features`` and ``coords``) is ever replaced or removed; anything else at a store path is an error and is
left untouched. A new store is built under a hidden temporary name and renamed into place, so a store path
never holds a half-created group.

Concurrency: every change happens under a lock on ``<store>.lock`` (see :mod:`._atomic`), re-reading the
attributes from disk, so threads and processes that fill the same store at once neither fail nor damage it.

Crash safety: a chunk is written whole (rows ``[k·chunk_rows, (k+1)·chunk_rows)``) and only then are ``done``
and its digest recorded; ``complete`` is set last. zarr's local store replaces ``zarr.json`` atomically, so
after a ``kill -9`` the group says exactly which chunks are whole, and a resumed run rewrites the rest.

Integrity: every chunk is checked against its digest when read; a damaged chunk (garbage, a flipped byte,
deleted, truncated) is never served: reading raises, and the next extraction recomputes from that chunk on.
A store whose identity attributes (encoder and weights hash, grid, slide fingerprint, format) differ from the
request is *stale*: it is recomputed, never reused.
"""

from __future__ import annotations

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
from ._atomic import path_lock, remove_leftovers, replace_dir, temp_sibling
from ._store_files import (
    MARKER,
    MARKER_KEY,
    SUFFIX,
    _Damaged,
    _digest,
    _foreign_error,
    _is_empty_dir,
    _load,
    _owned_but_unreadable,
    _ownership,
    attrs_problem,
    coords_sha256,
    require_finite,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: ownership marker and per-chunk digests
#: attributes that are progress, not identity: they may differ between a partial store and the request
_PROGRESS_KEYS = ("done", "complete", "chunk_rows", "chunk_digests")

State = Literal["missing", "partial", "complete", "stale", "damaged", "foreign"]


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
        MARKER_KEY: MARKER,
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


def _inspect(path: Path, meta: dict[str, Any]) -> tuple[State, str, dict[str, Any] | None, Any]:
    """``(state, reason, attrs, extra)``: ``extra`` is the verified ``(features, coords)`` of a complete
    store, or the first row to recompute of a damaged one."""
    if not path.exists() or _is_empty_dir(path):
        return "missing", "no store yet", None, None
    attrs, why = _ownership(path)
    if attrs is None:
        if path.is_dir() and _owned_but_unreadable(path):
            return "damaged", "its zarr.json is unreadable (truncated?)", {}, 0
        return "foreign", why, None, None
    reason = _stale_reason(attrs, meta)
    if reason is not None:
        return "stale", reason, attrs, None
    problem = attrs_problem(attrs)
    if problem is not None:  # ours (marked) but its metadata was damaged or hand-edited: rebuild it
        return "damaged", f"its metadata is damaged ({problem})", attrs, 0
    rows = int(attrs["n"]) if attrs.get("complete") else int(attrs["done"])
    try:
        loaded = _load(path, attrs, rows)
    except _Damaged as err:
        return "damaged", err.reason, attrs, err.row
    if attrs.get("complete"):
        return "complete", "complete", attrs, loaded
    return "partial", f"{attrs['done']} of {attrs['n']} rows on disk", attrs, None


def inspect_bag(path: PathLike, meta: dict[str, Any]) -> tuple[State, str]:
    """``(state, reason)`` of the store at ``path`` for the request ``meta`` (see :func:`bag_meta`).

    ``foreign``: something that is not a feature store of this package is at ``path`` (it is never touched);
    ``damaged``: a chunk does not match its checksum (extraction recomputes it).
    """
    state, reason, _, _ = _inspect(Path(path), meta)
    return state, reason


def _create(
    path: Path, meta: dict[str, Any], coords: np.ndarray, dim: int, chunk_rows: int
) -> dict[str, Any]:
    """Build an empty store under a temporary name and rename it to ``path`` (call under the lock, with
    ``path`` missing, empty or owned)."""
    import zarr

    n = int(meta["n"])
    remove_leftovers(path)
    tmp = temp_sibling(path, "tmp")
    try:
        group = zarr.open_group(str(tmp), mode="w")
        feats = group.create_array(
            "features", shape=(n, dim), chunks=(max(1, min(chunk_rows, n)), dim), dtype=meta["dtype"]
        )
        feats.attrs[MARKER_KEY] = (
            MARKER  # a second mark of ownership: survives damage to the group's zarr.json
        )
        c = group.create_array("coords", shape=(n, 2), chunks=(max(1, n), 2), dtype="int64")
        if n:
            c[:] = np.asarray(coords, dtype=np.int64)
        attrs = {**meta, "chunk_rows": int(chunk_rows), "chunk_digests": [], "done": 0, "complete": False}
        group.attrs.update(attrs)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return attrs


def _truncate(path: Path, attrs: dict[str, Any], row: int) -> dict[str, Any]:
    """Mark rows from ``row`` (a chunk start) as not written, so extraction recomputes them."""
    import zarr

    keep = row // int(attrs["chunk_rows"])
    update: dict[str, Any] = {
        "chunk_digests": list(attrs.get("chunk_digests") or [])[:keep],
        "done": row,
        "complete": False,
    }
    zarr.open_group(str(path), mode="r+").attrs.update(update)
    return {**attrs, **update}


class BagWriter:
    """Fills one slide's group chunk by chunk. Use :meth:`open`; then :meth:`write` whole chunks in order and
    :meth:`finish`. Several writers (threads or processes) may fill the same store at once: each write is
    checked against what is on disk under the store's lock, and rows another writer stored are kept."""

    def __init__(self, path: Path, attrs: dict[str, Any], meta: dict[str, Any], loaded: Any = None) -> None:
        self.path, self._meta = path, meta
        self.n = int(attrs["n"])
        self.chunk_rows = int(attrs["chunk_rows"])
        self.done = int(attrs["done"])
        self.complete = bool(attrs.get("complete", False))
        self._dtype = np.dtype(attrs["dtype"])
        self._bag = None if loaded is None else _bag(self.path, attrs, *loaded)
        self._pending: list[np.ndarray] = []  # rows given to append() not yet written (less than a chunk)

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
        """Reuse a matching complete or partial store at ``path``; create it when missing, stale or
        ``overwrite``; recompute the damaged part of a damaged one.

        Raises:
            FeatureStoreError: something that is not a feature store of this package is at ``path``.
        """
        path = Path(path)
        if not overwrite and path.is_dir():
            # a complete, verified store is reused without the lock: reading needs no write access, so a
            # store in a read-only shared folder serves every re-run (a concurrent rebuild would fail the
            # chunk digests and fall through to the locked path below)
            try:
                state, reason, attrs, extra = _inspect(path, meta)
            except OSError:  # replaced by another process while we looked: decide under the lock
                state, reason, attrs, extra = "partial", "", None, None
            if state == "complete" and attrs is not None:
                log.info("%s: %s", path, reason)
                return cls(path, attrs, meta, extra)
        with path_lock(path, what="feature store"):
            state, reason, attrs, extra = _inspect(path, meta)
            if state == "foreign":
                raise _foreign_error(path, reason)
            if state == "damaged" and not overwrite and attrs is not None and extra:
                log.warning(
                    "%s: damaged (%s); recomputing it from patch %d in this napari-pathm3 store",
                    path,
                    reason,
                    extra,
                )
                return cls(path, _truncate(path, attrs, int(extra)), meta)
            if state in ("stale", "damaged") or (overwrite and state != "missing"):  # ours: rebuilt whole
                why = "overwrite requested" if overwrite else reason
                log.warning("%s: recomputing features in this napari-pathm3 store (%s)", path, why)
                state = "missing"
            if state == "missing":
                return cls(path, _create(path, meta, coords, dim, chunk_rows), meta)
            assert attrs is not None
            log.info("%s: %s", path, reason)
            return cls(path, attrs, meta, extra)

    def write(self, start: int, features: np.ndarray) -> None:
        """Write rows ``[start, start + len(features))``: must be ``done`` and a whole chunk (or the tail)."""
        import zarr

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
        block = np.asarray(features).astype(self._dtype, copy=False)
        if not np.isfinite(block).all():
            raise FeatureStoreError(
                f"{self.path}: the encoder gave non-finite values (NaN/Inf, as {self._dtype}) for patches "
                f"{start}-{stop - 1}; nothing was stored. Check the encoder, its weights and the slide's pixels"
            )
        with path_lock(self.path, what="feature store"):
            group: Any = zarr.open_group(str(self.path), mode="r+")
            attrs: dict[str, Any] = dict(group.attrs)  # what is on disk now: another writer may have moved on
            on_disk = int(attrs.get("done", -1))
            if _stale_reason(attrs, self._meta) is not None or on_disk < start:
                raise FeatureStoreError(
                    f"{self.path}: the store was reset by another process while this one filled it; run again"
                )
            if on_disk == start:
                group["features"][start:stop] = block  # whole chunk: no read-modify-write
                digests = list(attrs.get("chunk_digests") or [])[: start // self.chunk_rows]
                group.attrs.update({"chunk_digests": [*digests, _digest(block)], "done": stop})
            # else another writer already stored these rows (same slide, grid and encoder): keep them
        self.done = stop

    def append(self, rows: np.ndarray) -> None:
        """Add the next rows (any number, in order after :attr:`done`): each chunk is written once it is
        full, the tail once the last row arrives. Buffered rows are lost when a run stops early; a resume
        starts again at :attr:`done`."""
        self._pending.append(np.asarray(rows))
        buffered = sum(len(r) for r in self._pending)
        while buffered and (buffered >= self.chunk_rows or self.done + buffered >= self.n):
            block = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
            take = min(self.chunk_rows, len(block))
            self.write(self.done, block[:take])
            self._pending = [block[take:]] if len(block) > take else []
            buffered -= take

    def finish(self) -> None:
        import zarr

        if self.done != self.n:
            raise FeatureStoreError(f"{self.path}: finish() with {self.done} of {self.n} rows written")
        with path_lock(self.path, what="feature store"):
            group: Any = zarr.open_group(str(self.path), mode="r+")
            if int(group.attrs.get("done", -1)) != self.n:
                raise FeatureStoreError(f"{self.path}: the store was reset by another process; run again")
            if not group.attrs.get("complete"):
                group.attrs["complete"] = True  # written last, atomically (zarr.json replaced as a whole)
        self.complete = True

    def read(self) -> FeatureBag:
        if self._bag is not None:
            return self._bag
        with path_lock(self.path, what="feature store"):
            return read_bag(self.path)


def _bag(path: Path, attrs: dict[str, Any], features: np.ndarray, coords: np.ndarray) -> FeatureBag:
    features = np.asarray(features, dtype=np.float32)
    require_finite(features, source=f"feature bag {attrs.get('slide_id', '')!r} ({path})")
    enc = attrs.get("encoder") or {}
    return FeatureBag(
        features=features,
        coords=coords,
        patch_size=attrs.get("patch_size"),
        mpp=attrs.get("mpp"),
        encoder_name=enc.get("name", ""),
        slide_id=attrs.get("slide_id", ""),
        fingerprint=attrs.get("slide_fingerprint"),
        attrs=attrs,
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
    if attrs.get("format_version") != FORMAT_VERSION:
        raise FeatureStoreError(
            f"{path}: format version {attrs.get('format_version')} is not {FORMAT_VERSION}; re-extract"
        )
    if not attrs.get("complete") and not allow_partial:
        raise FeatureStoreError(
            f"{path}: incomplete ({attrs['done']} of {attrs['n']} patches); run extraction again to resume"
        )
    rows = int(attrs["n"]) if attrs.get("complete") else int(attrs["done"])
    try:
        features, coords = _load(path, attrs, rows)
    except _Damaged as err:
        raise FeatureStoreError(
            f"{path}: damaged feature store ({err.reason}); run extraction again to recompute it"
        ) from err
    return _bag(path, attrs, features, coords)


def cache_path(
    cache_dir: PathLike, *, slide_stem: str, fingerprint: str, encoder_name: str, grid_key: dict[str, Any]
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
