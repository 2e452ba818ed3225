"""Creating, resuming and filling a feature store (see :mod:`napari_pathm3.io.feature_store` for the rules)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, cast

import numpy as np

from ..._types import JSONObject, PathLike
from ...errors import FeatureStoreError
from .._atomic import path_lock, remove_leftovers, replace_dir, temp_sibling
from ._files import (
    MARKER,
    MARKER_KEY,
    _Damaged,
    _digest,
    _foreign_error,
    _is_empty_dir,
    _load,
    _owned_but_unreadable,
    _ownership,
    attrs_problem,
    coords_sha256,
)
from .bag import FeatureBag
from .meta import FORMAT_VERSION, PROGRESS_KEYS, BagMeta, EncoderMeta, GridMeta
from .reader import _bag, read_bag

log = logging.getLogger(__name__)

State = Literal["missing", "partial", "complete", "stale", "damaged", "foreign"]


def bag_meta(
    *,
    slide_id: str,
    fingerprint: str | None,
    encoder: EncoderMeta | Mapping[str, object],
    grid: GridMeta | Mapping[str, object],
    coords: np.ndarray,
    dtype: str = "float32",
) -> BagMeta:
    """Identity of a bag: a store is reused only when these match exactly. ``encoder``: an
    :class:`EncoderMeta` or ``FrozenEncoder.describe()``; ``grid``: a :class:`GridMeta` or
    ``PatchGrid.params()``."""
    enc = encoder if isinstance(encoder, EncoderMeta) else EncoderMeta.from_json(encoder)
    grd = grid if isinstance(grid, GridMeta) else GridMeta.from_json(grid)
    return BagMeta(
        format_version=FORMAT_VERSION,
        owned=True,
        slide_id=slide_id,
        slide_fingerprint=fingerprint,
        encoder=enc,
        grid=grd,
        patch_size=grd.patch_size,
        mpp=grd.mpp,
        n=int(len(coords)),
        coords_sha256=coords_sha256(coords),
        dtype=dtype,
    )


def _identity(attrs: JSONObject) -> JSONObject:
    return {k: v for k, v in attrs.items() if k not in PROGRESS_KEYS}


def _stale_reason(found: JSONObject, expected: BagMeta) -> str | None:
    a, b = _identity(found), _identity(expected.to_attrs())
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key} differs (stored {a.get(key)!r}, requested {b.get(key)!r})"
    return None


#: the verified ``(features, coords)`` of a complete store, or the first row to recompute of a damaged one
_Extra = tuple[np.ndarray, np.ndarray] | int | None


def _inspect(path: Path, meta: BagMeta) -> tuple[State, str, JSONObject | None, _Extra]:
    """``(state, reason, attrs, extra)``."""
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
    found = BagMeta.from_attrs(attrs)  # validated above: n and done are integers
    n, done = found.n or 0, found.done or 0
    try:
        loaded = _load(path, attrs, n if found.complete else done)
    except _Damaged as err:
        return "damaged", err.reason, attrs, err.row
    if found.complete:
        return "complete", "complete", attrs, loaded
    return "partial", f"{done} of {n} rows on disk", attrs, None


def inspect_bag(path: PathLike, meta: BagMeta) -> tuple[State, str]:
    """``(state, reason)`` of the store at ``path`` for the request ``meta`` (see :func:`bag_meta`).

    ``foreign``: something that is not a feature store of this package is at ``path`` (it is never touched);
    ``damaged``: a chunk does not match its checksum (extraction recomputes it).
    """
    state, reason, _, _ = _inspect(Path(path), meta)
    return state, reason


def _create(path: Path, meta: BagMeta, coords: np.ndarray, dim: int, chunk_rows: int) -> JSONObject:
    """Build an empty store under a temporary name and rename it to ``path`` (call under the lock, with
    ``path`` missing, empty or owned)."""
    import zarr

    n = meta.n or 0
    remove_leftovers(path)
    tmp = temp_sibling(path, "tmp")
    try:
        group = zarr.open_group(str(tmp), mode="w")
        feats = group.create_array(
            "features", shape=(n, dim), chunks=(max(1, min(chunk_rows, n)), dim), dtype=meta.dtype
        )
        feats.attrs[MARKER_KEY] = (
            MARKER  # a second mark of ownership: survives damage to the group's zarr.json
        )
        c = group.create_array("coords", shape=(n, 2), chunks=(max(1, n), 2), dtype="int64")
        if n:
            c[:] = np.asarray(coords, dtype=np.int64)
        attrs: JSONObject = {
            **meta.to_attrs(),
            "chunk_rows": int(chunk_rows),
            "chunk_digests": [],
            "done": 0,
            "complete": False,
        }
        group.attrs.update(attrs)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return attrs


def _truncate(path: Path, attrs: JSONObject, row: int) -> JSONObject:
    """Mark rows from ``row`` (a chunk start) as not written, so extraction recomputes them."""
    import zarr

    found = BagMeta.from_attrs(attrs)
    keep = row // (found.chunk_rows or 1)
    update: JSONObject = {
        "chunk_digests": list(found.chunk_digests[:keep]),
        "done": row,
        "complete": False,
    }
    zarr.open_group(str(path), mode="r+").attrs.update(update)
    return {**attrs, **update}


class BagWriter:
    """Fills one slide's group chunk by chunk. Use :meth:`open`; then :meth:`write` whole chunks in order and
    :meth:`finish`. Several writers (threads or processes) may fill the same store at once: each write is
    checked against what is on disk under the store's lock, and rows another writer stored are kept."""

    def __init__(self, path: Path, attrs: JSONObject, meta: BagMeta, loaded: _Extra = None) -> None:
        self.path, self._meta = path, meta
        found = BagMeta.from_attrs(attrs)
        self.n = found.n or 0
        self.chunk_rows = found.chunk_rows or 1
        self.done = found.done or 0
        self.complete = found.complete
        self._dtype = np.dtype(found.dtype)
        self._bag = _bag(self.path, attrs, *loaded) if isinstance(loaded, tuple) else None
        self._pending: list[np.ndarray] = []  # rows given to append() not yet written (less than a chunk)

    @classmethod
    def open(
        cls,
        path: PathLike,
        *,
        meta: BagMeta,
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
            if (
                state == "damaged"
                and not overwrite
                and attrs is not None
                and isinstance(extra, int)
                and extra
            ):
                log.warning(
                    "%s: damaged (%s); recomputing it from patch %d in this napari-pathm3 store",
                    path,
                    reason,
                    extra,
                )
                return cls(path, _truncate(path, attrs, extra), meta)
            if state in ("stale", "damaged") or (overwrite and state != "missing"):  # ours: rebuilt whole
                why = "overwrite requested" if overwrite else reason
                log.warning("%s: recomputing features in this napari-pathm3 store (%s)", path, why)
                state = "missing"
            if state == "missing":
                return cls(path, _create(path, meta, coords, dim, chunk_rows), meta)
            if attrs is None:  # not reached: only "missing" and "foreign" have no attributes
                raise FeatureStoreError(f"{path}: no attributes ({state}: {reason})")
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
            group = zarr.open_group(str(self.path), mode="r+")
            # what is on disk now: another writer may have moved on (zarr's JSON type is ours, spelled otherwise)
            attrs = cast(JSONObject, group.attrs.asdict())
            found = BagMeta.from_attrs(attrs)
            on_disk = -1 if found.done is None else found.done
            if _stale_reason(attrs, self._meta) is not None or on_disk < start:
                raise FeatureStoreError(
                    f"{self.path}: the store was reset by another process while this one filled it; run again"
                )
            if on_disk == start:
                feats = group["features"]
                if not isinstance(feats, zarr.Array):
                    raise FeatureStoreError(f"{self.path}: 'features' is not an array; run extraction again")
                feats[start:stop] = block  # whole chunk: no read-modify-write
                digests = list(found.chunk_digests[: start // self.chunk_rows])
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
            group = zarr.open_group(str(self.path), mode="r+")
            if BagMeta.from_attrs(dict(group.attrs)).done != self.n:
                raise FeatureStoreError(f"{self.path}: the store was reset by another process; run again")
            if not group.attrs.get("complete"):
                group.attrs["complete"] = True  # written last, atomically (zarr.json replaced as a whole)
        self.complete = True

    def read(self) -> FeatureBag:
        if self._bag is not None:
            return self._bag
        with path_lock(self.path, what="feature store"):
            return read_bag(self.path)
