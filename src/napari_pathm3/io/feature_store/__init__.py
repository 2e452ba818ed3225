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

Concurrency: every change happens under a lock on ``<store>.lock`` (see :mod:`napari_pathm3.io._atomic`), re-reading the
attributes from disk, so threads and processes that fill the same store at once neither fail nor damage it.

Crash safety: a chunk is written whole (rows ``[k·chunk_rows, (k+1)·chunk_rows)``) and only then are ``done``
and its digest recorded; ``complete`` is set last. zarr's local store replaces ``zarr.json`` atomically, so
after a ``kill -9`` the group says exactly which chunks are whole, and a resumed run rewrites the rest.

Integrity: every chunk is checked against its digest when read; a damaged chunk (garbage, a flipped byte,
deleted, truncated) is never served: reading raises, and the next extraction recomputes from that chunk on.
A store whose identity attributes (encoder and weights hash, grid, slide fingerprint, format) differ from the
request is *stale*: it is recomputed, never reused.

Modules: :mod:`.meta` (typed metadata, :class:`BagMeta`), :mod:`.bag` (:class:`FeatureBag`), :mod:`.writer`
(:class:`BagWriter`: create, resume, fill), :mod:`.reader` (:func:`read_bag`, :class:`FeatureStore`),
:mod:`._files` (ownership, digests, the checked read).
"""

from __future__ import annotations

from ._files import require_finite
from .bag import FeatureBag, slide_id_for
from .meta import FORMAT_VERSION, BagMeta, EncoderMeta, GridMeta
from .reader import FeatureStore, cache_path, read_bag
from .writer import BagWriter, State, bag_meta, inspect_bag

__all__ = [
    "FORMAT_VERSION",
    "BagMeta",
    "BagWriter",
    "EncoderMeta",
    "FeatureBag",
    "FeatureStore",
    "GridMeta",
    "State",
    "bag_meta",
    "cache_path",
    "inspect_bag",
    "read_bag",
    "require_finite",
    "slide_id_for",
]
