"""``extract_features(slide, grid, encoder)``: patch reads in threads overlapped with batched encoding.

Reader threads (:class:`~napari_pathm3.io.patch_reader.PatchReader`) read and decode the next ``prefetch`` batches
while the main thread encodes the current one; torch threads and reader workers come from one thread budget
(:func:`~napari_pathm3.threads.apply_thread_policy`), so together they never oversubscribe the free cores (with
a budget of one thread and a CPU encoder, patches are read in the calling thread between encoder calls); on CUDA
the copy of batch *k*'s features to the host is
deferred until batch *k+1* is queued, so the GPU never waits for Python. Out-of-memory halves the encoding
batch and retries. With a ``store`` the features go to disk chunk by chunk and an interrupted run resumes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._types import CancelToken, PathLike, ProgressFn, check_cancel, report
from ..device import empty_cache, is_oom
from ..errors import EncoderError, NoTissueError
from ..io.feature_store import BagWriter, FeatureBag, bag_meta, slide_id_for
from ..io.patch_reader import PatchReader
from ..threads import apply_thread_policy
from ..tiling import PatchGrid
from .encoders import FrozenEncoder, get_encoder

log = logging.getLogger(__name__)

STAGE = "extract"
#: nice increment of reader threads beside a CPU encoder (Linux; elsewhere a no-op)
READER_NICE = 5


def default_chunk_rows(batch_size: int, target: int = 256) -> int:
    """Store chunk rows: about ``target``, a multiple of ``batch_size`` so batches never straddle chunks."""
    return batch_size * max(1, math.ceil(target / batch_size))


def _encode_with_backoff(encoder: Any, patches: np.ndarray, max_batch: int) -> tuple[Any, int]:
    """Encode ``patches`` in pieces of at most ``max_batch``; halve it on out-of-memory and retry.

    Returns the ``(b, d)`` float32 tensor (on the encoder's device) and the batch size that worked.
    """
    import torch

    outs = []
    i = 0
    while i < len(patches):
        part = patches[i : i + max_batch]
        try:
            outs.append(encoder.encode_tensor(part))
        except Exception as err:
            if not is_oom(err):
                raise
            if max_batch == 1:
                raise EncoderError(
                    f"encoder {encoder.name!r} runs out of memory even on one patch on {encoder.device}; "
                    "use device='cpu' or a smaller encoder"
                ) from err
            max_batch = max(1, max_batch // 2)
            empty_cache(encoder.device)
            log.warning("out of memory: encoding batch size lowered to %d", max_batch)
            continue
        i += len(part)
    return (outs[0] if len(outs) == 1 else torch.cat(outs)), max_batch


def extract_features(
    slide: Any,
    grid: PatchGrid,
    encoder: str | FrozenEncoder,
    *,
    store: PathLike | None = None,
    slide_id: str | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    prefetch: int = 2,
    device: Any = "auto",
    dtype: str = "float32",
    chunk_rows: int | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> FeatureBag:
    """Encode every patch of ``grid`` on ``slide``.

    Args:
        slide: an open :class:`~napari_pathm3.io.slide.Slide`.
        grid: the patches (:func:`~napari_pathm3.tiling.make_grid`).
        encoder: registry name (``"builtin:colorstats"``, ``"hf:owkin/phikon"``, ...) or a :class:`FrozenEncoder`.
        store: folder of this slide's zarr group (e.g. ``FeatureStore(root).path_for(slide_id)``), or ``None``
            to keep features in memory. A complete matching store is returned without recomputing, a partial
            one is resumed, a stale one is recomputed.
        slide_id: key recorded in the store (default: the slide's file name without suffix).
        batch_size: patches per encoder call (halved automatically on out-of-memory).
        num_workers: patch-reading threads (default: the thread policy's budget, see
            :mod:`napari_pathm3.threads`; beside a CPU encoder they run at a lower priority than torch).
        prefetch: batches read ahead of the encoder.
        device: ``"auto"`` (cuda, mps, cpu) or a torch device.
        dtype: ``"float32"`` or ``"float16"`` storage in the store (the returned bag is float32).
        chunk_rows: store chunk size in rows = resume granularity (default ~256, a multiple of ``batch_size``).
        overwrite: recompute even when a matching store exists.
        progress: ``progress(done, total, "extract")`` after each batch.
        cancel: token whose ``is_set()`` stops the run with :class:`~napari_pathm3.errors.Cancelled`
            (chunks already in the store are kept for a resume).

    Returns:
        The :class:`FeatureBag`: ``features`` ``(n, d)`` float32 in grid order, ``coords == grid.coords``.

    Raises:
        NoTissueError: the grid is empty.
        EncoderError: the encoder cannot be loaded or does not fit in memory even one patch at a time.
        Cancelled: ``cancel`` was set.
    """
    _check_args(batch_size, dtype)
    n = len(grid)
    if n == 0:
        raise NoTissueError(f"{getattr(slide, 'path', slide)}: the patch grid is empty (no tissue found)")
    check_cancel(cancel)
    policy = apply_thread_policy()
    enc = get_encoder(encoder, device=device) if isinstance(encoder, str) else encoder.prepare(device)
    slide_id = slide_id or slide_id_for(getattr(slide, "path", "slide"))
    fingerprint = getattr(slide, "fingerprint", None)
    meta = bag_meta(
        slide_id=slide_id,
        fingerprint=fingerprint,
        encoder=enc.describe(),
        grid=grid.params(),
        coords=grid.coords,
        dtype=dtype,
    )
    writer = None
    if store is not None:
        writer = BagWriter.open(
            store,
            meta=meta,
            coords=grid.coords,
            dim=enc.dim,
            overwrite=overwrite,
            chunk_rows=chunk_rows or default_chunk_rows(batch_size),
        )
        if writer.complete:
            report(progress, n, n, STAGE)
            return writer.read()
    feats = np.empty((n, enc.dim if writer is None else 0), np.float32)  # the in-memory result
    sink = writer.append if writer is not None else _memory_sink(feats)
    _encode_patches(
        slide,
        grid,
        enc,
        writer.done if writer is not None else 0,
        sink,
        _Pipeline(
            batch_size=batch_size,
            prefetch=prefetch,
            workers=num_workers or policy.threads,
            # one thread of budget and a CPU encoder: a reader thread beside torch's would keep two threads busy on
            # one free core and contend with it for the GIL (bench_extract, busy: 0.89x the encoder alone threaded)
            inline=num_workers is None and policy.threads == 1 and enc.device.type == "cpu",
            progress=progress,
            cancel=cancel,
        ),
    )
    if writer is not None:
        writer.finish()
        return writer.read()
    return FeatureBag(
        features=feats,
        coords=grid.coords.copy(),
        patch_size=grid.patch_size,
        mpp=grid.mpp,
        encoder_name=enc.name,
        slide_id=slide_id,
        fingerprint=fingerprint,
        meta=meta,
    )


def _check_args(batch_size: int, dtype: str) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")


def _memory_sink(feats: np.ndarray) -> Callable[[np.ndarray], None]:
    """``sink(rows)`` that fills the ``(n, d)`` array ``feats`` in order from its first row."""
    pos = 0

    def sink(rows: np.ndarray) -> None:
        nonlocal pos
        feats[pos : pos + len(rows)] = rows
        pos += len(rows)

    return sink


@dataclass(frozen=True, kw_only=True)
class _Pipeline:
    """How patches flow to the encoder: batches, read-ahead, reader threads, reading in the calling thread
    (``inline``), and the run's progress and cancel."""

    batch_size: int
    prefetch: int
    workers: int
    inline: bool = False
    progress: ProgressFn | None = None
    cancel: CancelToken | None = None


def _encode_patches(
    slide: Any,
    grid: PatchGrid,
    enc: FrozenEncoder,
    start: int,
    sink: Callable[[np.ndarray], None],
    pipe: _Pipeline,
) -> None:
    """Encode patches ``start..n-1`` in order, handing each batch's features (host float32) to ``sink``.

    Reader workers get the whole budget: they sleep whenever the prefetch window is full, and beside a CPU
    encoder they run at a lower priority (nice +5) than torch's threads, so decoding fills the gaps the
    encoder leaves on the cores (its single-threaded steps) instead of pre-empting it. On CUDA batch *k*'s
    features are copied to the host only after batch *k+1* is queued, so the GPU never waits for Python.
    """
    batch_size, prefetch, workers = pipe.batch_size, pipe.prefetch, pipe.workers
    inline, progress, cancel = pipe.inline, pipe.progress, pipe.cancel
    n = len(grid)
    done = start
    report(progress, done, n, STAGE)

    def deliver(out: Any) -> None:
        nonlocal done
        host = out.cpu().numpy()  # waits for the device; by now the next batch is already queued
        sink(host)
        done += len(host)
        report(progress, done, n, STAGE)

    reader = PatchReader(slide, grid, num_workers=workers)
    if enc.device.type == "cpu":
        reader.nice = READER_NICE
    max_batch = batch_size
    pending = None
    if inline:
        batches = _read_inline(reader, np.arange(start, n), batch_size, cancel)
    else:
        batches = reader.iter_batches(
            np.arange(start, n), batch_size=batch_size, prefetch=prefetch, cancel=cancel
        )
    for _idx, patches in batches:
        check_cancel(cancel)
        out, max_batch = _encode_with_backoff(enc, patches, max_batch)
        if pending is not None:
            deliver(pending)
        pending = out
    if pending is not None:
        deliver(pending)


def _read_inline(
    reader: PatchReader, indices: np.ndarray, batch_size: int, cancel: CancelToken | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(indices, patches)`` batches read in the calling thread, between encoder calls (the tile cache
    persists across batches, so tiles shared by neighbouring batches are still decoded once)."""
    try:
        for lo in range(0, len(indices), batch_size):
            check_cancel(cancel)
            idx = indices[lo : lo + batch_size]
            yield idx, reader.read_batch(idx)
    finally:
        reader.close()
