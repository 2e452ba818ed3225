"""Parallel patch reader: reads and decodes patches of a :class:`PatchGrid` in worker threads.

OpenSlide and PIL release the GIL while decoding, so threads scale on CPU cores without copying slides
into processes.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .._types import CancelToken, check_cancel
from .grid import PatchGrid


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2)))


class PatchReader:
    """Reads patches of ``grid`` from ``slide`` as ``(patch_size, patch_size, 3)`` uint8 arrays."""

    def __init__(self, slide: Any, grid: PatchGrid, *, num_workers: int | None = None) -> None:
        self.slide, self.grid = slide, grid
        self.num_workers = num_workers or default_workers()

    def read(self, index: int) -> np.ndarray:
        g = self.grid
        x, y = (int(v) for v in g.coords[index])
        px = self.slide.read_region((x, y), g.read_level, (g.read_size, g.read_size))
        if g.needs_resize:
            from PIL import Image

            resample = Image.Resampling.BILINEAR if g.read_size < g.patch_size else Image.Resampling.BOX
            px = np.asarray(Image.fromarray(px).resize((g.patch_size, g.patch_size), resample))
        return px

    def read_batch(self, indices: Sequence[int]) -> np.ndarray:
        out = np.empty((len(indices), self.grid.patch_size, self.grid.patch_size, 3), np.uint8)
        for j, i in enumerate(indices):
            out[j] = self.read(int(i))
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

        Each batch is split across the worker threads, so one batch already reads in parallel.
        """
        idx = np.arange(len(self.grid)) if indices is None else np.asarray(indices, dtype=np.int64)
        batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
        if not batches:
            return
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="pathm3-read")
        pending: deque[tuple[np.ndarray, list[Future[np.ndarray]]]] = deque()

        def submit(b: np.ndarray) -> None:
            pending.append((b, [pool.submit(self.read, int(i)) for i in b]))

        try:
            it = iter(batches)
            for b in it:
                submit(b)
                if len(pending) > prefetch:
                    break
            while pending:
                check_cancel(cancel)
                b, futures = pending.popleft()
                patches = np.stack([f.result() for f in futures])
                nxt = next(it, None)
                if nxt is not None:
                    submit(nxt)
                yield b, patches
        finally:  # on cancel or early close, drop queued reads instead of finishing them
            pool.shutdown(wait=True, cancel_futures=True)
