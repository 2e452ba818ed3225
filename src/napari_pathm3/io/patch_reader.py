"""Parallel patch reader: reads and decodes patches of a :class:`PatchGrid` in worker threads.

OpenSlide and PIL release the GIL while decoding, so threads scale on CPU cores without copying slides
into processes. Neighbouring patches are read together: the patches of a window are grouped into blocks of
about ``block_size`` level pixels (aligned to a multiple of the native tile), each block is read with one
``read_region`` and the patches are sliced out of it. That decodes every tile once per block instead of
once per patch (patches rarely align with tiles, and overlapping grids read each pixel several times) and
cuts the per-call overhead of the slide library.

Two fast paths come from the slide's backend, as capabilities (:mod:`.backends.capabilities`), never from
its name. A backend with :class:`~.backends.capabilities.DirectTiles` decodes tiles straight from the file
(plain tiled RGB TIFF and Aperio SVS levels: :class:`~.backends.tiff_tiles.TiffTiles`, the same
libjpeg-turbo, OpenSlide's exact pixels, about a third of the CPU per patch), each patch copied once from the
cached tiles into the batch. A backend with :class:`~.backends.capabilities.ThreadedPixels` gives each reader
thread its own state (OpenSlide: a handle and a reusable buffer, no lock shared between threads) and the
patches are copied plane by plane straight into the output batch, so a patch's pixels are copied once after
decoding (``Slide.read_region`` makes an RGBA array, checks alpha and copies to RGB, and the reader then
copies the patch into the batch). Blocks with any transparent pixel (outside the slide, empty regions of
sparse formats) go through ``Slide.read_region``, which composites them on white.

The number of reader threads comes from the package thread policy (:mod:`napari_pathm3.threads`), so the
reader never keeps more threads busy than there are free cores.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .._types import CancelToken, check_cancel
from ..threads import current_policy
from .backends.capabilities import PixelReader, TileDecoder
from .slide import Slide

log = logging.getLogger(__name__)

#: Target edge (level pixels) of one block read; rounded up to a multiple of the native tile.
BLOCK_SIZE = 1024
#: A group of patches is read as one block only when its bounding box is at most this many times the
#: patches' own area (sparse groups are read patch by patch, so blocks never decode much unused slide).
MAX_BLOCK_WASTE = 1.5


def default_workers() -> int:
    """Reader threads when reading alone: the thread policy's budget (free cores, ``--threads``), at most 8."""
    return max(1, min(8, current_policy().threads))


def _lower_priority(nice: int) -> None:
    """Raise this reader thread's nice value by ``nice`` (Linux: per thread), so decoding fills the gaps
    the encoder leaves on the cores instead of pre-empting its threads mid-operation."""
    if nice <= 0 or not sys.platform.startswith("linux"):  # elsewhere a thread id is not a PRIO_PROCESS id
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (AttributeError, OSError):  # not Linux, or not allowed: keep the priority
        pass


def _planes_to_rgb(src: np.ndarray, planes: tuple[int, int, int], out: np.ndarray) -> None:
    """Copy the R, G, B ``planes`` of ``src`` (``(h, w, c)``) into ``(h, w, 3)`` ``out`` (3 plane copies:
    ~4x faster than one copy through a reversed channel stride)."""
    out[..., 0] = src[..., planes[0]]
    out[..., 1] = src[..., planes[1]]
    out[..., 2] = src[..., planes[2]]


class PatchLayout(Protocol):
    """The geometry the reader needs (:class:`~napari_pathm3.tiling.grid.PatchGrid` has it; I/O sits below
    tiling, so it is named here by what it offers)."""

    @property
    def coords(self) -> np.ndarray: ...  # (n, 2) level-0 (x, y)

    @property
    def patch_size(self) -> int: ...

    @property
    def read_level(self) -> int: ...

    @property
    def read_size(self) -> int: ...

    @property
    def needs_resize(self) -> bool: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class _Block:
    """One read: level-0 ``location`` and level ``size``; ``slots`` and ``offsets`` (level px, x y) say which
    output rows get which patches."""

    location: tuple[int, int]
    size: tuple[int, int]
    slots: np.ndarray
    offsets: np.ndarray
    origin: tuple[int, int]  # level pixels of ``location`` (exact only when the grid sits on level pixels)


class PatchReader:
    """Reads patches of ``grid`` from ``slide`` as ``(patch_size, patch_size, 3)`` uint8 arrays.

    Args:
        slide: an open :class:`~napari_pathm3.io.slide.Slide`.
        grid: the patches (a :class:`~napari_pathm3.tiling.grid.PatchGrid`).
        num_workers: reader threads (default: the thread policy's budget, at most 8).
        block_size: edge of a block read in level pixels; ``0`` reads patch by patch.
        fast: use the backend's capabilities: a direct tile decoder where the level allows it, else a
            thread-local pixel reader (``False``: every read through ``Slide.read_region``; the pixels are
            the same).
        direct_tiles: with ``fast``, use a direct tile decoder (``False``: the thread-local reader only).
    """

    def __init__(
        self,
        slide: Slide,
        grid: PatchLayout,
        *,
        num_workers: int | None = None,
        block_size: int = BLOCK_SIZE,
        fast: bool = True,
        direct_tiles: bool = True,
    ) -> None:
        self.slide, self.grid = slide, grid
        self._pixels: PixelReader | None = slide.pixel_reader() if fast else None
        self.nice = 0  # raised by extraction, where reading runs beside the encoder
        self.num_workers = num_workers or default_workers()
        self.block_size = int(block_size)
        ds = float(slide.level_downsamples[grid.read_level]) if grid.read_level else 1.0
        level_xy = grid.coords / ds
        # Slicing a block equals reading each patch only when patches sit on whole level pixels
        # (always at level 0; at an integer downsample when the grid follows it).
        self._level_xy = np.round(level_xy).astype(np.int64)
        on_pixels = bool(np.all(np.abs(level_xy - self._level_xy) < 1e-6))
        self._blockable = self.block_size > 0 and on_pixels
        tiles = slide.tile_decoder() if fast and direct_tiles and on_pixels else None
        self._tiles: TileDecoder | None = (
            tiles if tiles is not None and tiles.supports(grid.read_level) else None
        )
        if tiles is not None and self._tiles is None:
            tiles.close()
        if self._blockable:
            try:
                tile = slide.tile_size(grid.read_level)
            except Exception:  # slides without tile metadata read fine with any alignment
                tile = None
            tw, th = tile or (256, 256)
            self._cell = (
                tw * max(1, math.ceil(self.block_size / tw)),
                th * max(1, math.ceil(self.block_size / th)),
            )
        self._ds = ds

    # -- single patches ---------------------------------------------------------------------------------------
    def read(self, index: int) -> np.ndarray:
        g = self.grid
        x, y = (int(v) for v in g.coords[index])
        return self._finish(self.slide.read_region((x, y), g.read_level, (g.read_size, g.read_size)))

    def _finish(self, px: np.ndarray) -> np.ndarray:
        g = self.grid
        if g.needs_resize:
            from PIL import Image

            resample = Image.Resampling.BILINEAR if g.read_size < g.patch_size else Image.Resampling.BOX
            px = np.asarray(
                Image.fromarray(np.ascontiguousarray(px)).resize((g.patch_size, g.patch_size), resample)
            )
        return px

    # -- blocks -----------------------------------------------------------------------------------------------
    def _plan(self, indices: np.ndarray) -> list[_Block]:
        """Group ``indices`` (output slots ``0..n-1``) into block reads, in order of their first slot."""
        g, rs = self.grid, self.grid.read_size
        n = len(indices)
        if not self._blockable or n == 0:
            return [self._single(j, int(i)) for j, i in enumerate(indices)]
        xy = self._level_xy[indices]
        cw, ch = self._cell
        cells = (xy[:, 1] // ch) * (1 << 32) + xy[:, 0] // cw
        order = np.argsort(cells, kind="stable")
        bounds = np.flatnonzero(np.diff(cells[order])) + 1
        blocks: list[_Block] = []
        for group in np.split(order, bounds):
            gxy = xy[group]
            x0, y0 = gxy.min(0)
            x1, y1 = gxy.max(0) + rs
            if len(group) == 1 or (x1 - x0) * (y1 - y0) > MAX_BLOCK_WASTE * len(group) * rs * rs:
                blocks.extend(self._single(int(j), int(indices[j])) for j in group)
                continue
            loc = (round(x0 * self._ds), round(y0 * self._ds)) if g.read_level else (int(x0), int(y0))
            blocks.append(
                _Block(loc, (int(x1 - x0), int(y1 - y0)), group, gxy - (x0, y0), (int(x0), int(y0)))
            )
        blocks.sort(key=lambda b: int(b.slots.min()))
        return blocks

    def _single(self, slot: int, index: int) -> _Block:
        x, y = (int(v) for v in self.grid.coords[index])
        rs = self.grid.read_size
        lx, ly = (int(v) for v in self._level_xy[index])
        return _Block((x, y), (rs, rs), np.array([slot]), np.zeros((1, 2), np.int64), (lx, ly))

    def _read_tiles(self, block: _Block, out: np.ndarray) -> bool:
        """Every patch of ``block`` from directly decoded tiles; ``False`` when one cannot be (the block is
        then read through the slide)."""
        g, tiles = self.grid, self._tiles
        assert tiles is not None
        rs, bx, by = g.read_size, block.origin[0], block.origin[1]
        for slot, (ox, oy) in zip(block.slots, block.offsets, strict=True):
            dst = np.empty((rs, rs, 3), np.uint8) if g.needs_resize else out[slot]
            if not tiles.read_into(g.read_level, bx + int(ox), by + int(oy), dst):
                return False
            if g.needs_resize:
                out[slot] = self._finish(dst)
        return True

    def _read_block(self, block: _Block, out: np.ndarray) -> None:
        g = self.grid
        rs = g.read_size
        if self._tiles is not None:
            try:
                if self._read_tiles(block, out):
                    return
            except Exception as err:  # noqa: BLE001 - a tile the decoder rejects: the slide reads it (or says why)
                log.debug("direct tile read failed (%s); reading through the slide", err)
        pixels, src = self._pixels, None
        if pixels is not None:
            try:
                src = pixels.read(block.location, g.read_level, block.size)
            except Exception as err:  # noqa: BLE001 - Slide.read_region below raises the proper error
                log.debug("fast read failed (%s); reading through Slide.read_region", err)
                src = None
        if pixels is None or src is None:
            px = self.slide.read_region(block.location, g.read_level, block.size)
            for slot, (ox, oy) in zip(block.slots, block.offsets, strict=True):
                out[slot] = self._finish(px[oy : oy + rs, ox : ox + rs])
            return
        planes = pixels.rgb_planes
        for slot, (ox, oy) in zip(block.slots, block.offsets, strict=True):
            patch = src[oy : oy + rs, ox : ox + rs]
            if g.needs_resize:
                rgb = np.empty((rs, rs, 3), np.uint8)
                _planes_to_rgb(patch, planes, rgb)
                out[slot] = self._finish(rgb)
            else:
                _planes_to_rgb(patch, planes, out[slot])

    def close(self) -> None:
        """Close the per-thread slide handles and the tile cache (reads reopen them as needed)."""
        if self._pixels is not None:
            self._pixels.close()
        if self._tiles is not None:
            self._tiles.close()

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), self.grid.patch_size, self.grid.patch_size, 3), np.uint8)
        for block in self._plan(idx):
            self._read_block(block, out)
        return out

    def iter_batches(
        self,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        batch_size: int = 64,
        prefetch: int = 2,
        cancel: CancelToken | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices, patches)`` batches in order while the next ``prefetch`` batches are read.

        Block reads of a batch run in the worker threads. Batches are planned ``prefetch + 1`` at a time
        (a window), so one block serves neighbouring patches of several consecutive batches.
        """
        idx = (
            np.arange(len(self.grid)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        )
        if len(idx) == 0:
            return
        batch_size = max(1, int(batch_size))
        window = batch_size * max(1, prefetch + 1)
        p = self.grid.patch_size
        pool = ThreadPoolExecutor(
            self.num_workers,
            thread_name_prefix="pathm3-read",
            initializer=_lower_priority,
            initargs=(self.nice,),
        )
        # per window: its slice of idx, output buffer, and per batch the futures it waits for
        pending: deque[tuple[int, np.ndarray, list[list[Future[None]]]]] = deque()

        def submit(start: int) -> None:
            w_idx = idx[start : start + window]
            out = np.empty((len(w_idx), p, p, 3), np.uint8)
            nb = -(-len(w_idx) // batch_size)
            waits: list[list[Future[None]]] = [[] for _ in range(nb)]
            for block in self._plan(w_idx):
                fut = pool.submit(self._read_block, block, out)
                for b in np.unique(block.slots // batch_size):
                    waits[int(b)].append(fut)
            pending.append((start, out, waits))

        try:
            starts = iter(range(0, len(idx), window))
            submit(next(starts))
            while pending:
                start, out, waits = pending[0]
                if len(pending) < 2:  # keep the next window reading while this one is consumed
                    nxt = next(starts, None)
                    if nxt is not None:
                        submit(nxt)
                for b, futures in enumerate(waits):
                    check_cancel(cancel)
                    for f in futures:
                        f.result()
                    lo = b * batch_size
                    hi = min(lo + batch_size, len(out))
                    yield idx[start + lo : start + hi], out[lo:hi]
                pending.popleft()
        finally:  # on cancel or early close, drop queued reads instead of finishing them
            pool.shutdown(wait=True, cancel_futures=True)
            self.close()
