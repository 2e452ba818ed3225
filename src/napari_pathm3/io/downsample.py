"""Bounded-memory downsampled reads of a whole slide (thumbnails, tissue detection).

Typed against :class:`LevelSource` (what :class:`~napari_pathm3.io.slide.Slide` offers), so ``io.slide`` can
use it without the two modules importing each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np


class LevelSource(Protocol):
    """The part of a slide a downsampled read needs."""

    @property
    def dimensions(self) -> tuple[int, int]: ...

    @property
    def level_dimensions(self) -> list[tuple[int, int]]: ...

    @property
    def level_downsamples(self) -> list[float]: ...

    def best_level_for_downsample(self, downsample: float) -> int: ...

    def read_level_region(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray: ...


#: ``on_block(done, total)``: called after each block read (the blocks of the read so far and in all)
OnBlock = Callable[[int, int], None]


def read_downsampled(
    slide: LevelSource, downsample: float, *, block: int = 2048, on_block: OnBlock | None = None
) -> np.ndarray:
    """The whole slide at ``downsample`` (relative to level 0), read block by block from the best level.

    Memory is bounded by one ``block``-sized read plus the output, whatever the level size. ``on_block``
    counts the blocks read (a read in one piece is one block), e.g. for progress with time left.
    """
    downsample = max(downsample, 1.0)
    w0, h0 = slide.dimensions
    out_w, out_h = max(1, round(w0 / downsample)), max(1, round(h0 / downsample))
    level = slide.best_level_for_downsample(downsample)
    lw, lh = slide.level_dimensions[level]
    factor = downsample / slide.level_downsamples[level]  # >= 1: level pixels per output pixel
    if factor < 1.01 and (lw, lh) == (out_w, out_h):
        if lw * lh <= 64e6:
            px = slide.read_level_region(0, 0, level, lw, lh)
            if on_block is not None:
                on_block(1, 1)
            return px
        return _blocks(slide, level, 1.0, out_w, out_h, block, on_block)
    return _blocks(slide, level, factor, out_w, out_h, block, on_block)


def _blocks(
    slide: LevelSource,
    level: int,
    factor: float,
    out_w: int,
    out_h: int,
    block: int,
    on_block: OnBlock | None = None,
) -> np.ndarray:
    from PIL import Image as PILImage

    lw, lh = slide.level_dimensions[level]
    out = np.empty((out_h, out_w, 3), np.uint8)
    ob = max(1, int(block / factor))  # output pixels per block
    total, done = math.ceil(out_h / ob) * math.ceil(out_w / ob), 0
    for oy in range(0, out_h, ob):
        for ox in range(0, out_w, ob):
            ow, oh = min(ob, out_w - ox), min(ob, out_h - oy)
            x0, y0 = int(ox * factor), int(oy * factor)
            x1, y1 = min(lw, math.ceil((ox + ow) * factor)), min(lh, math.ceil((oy + oh) * factor))
            if x1 <= x0 or y1 <= y0:
                out[oy : oy + oh, ox : ox + ow] = 255
            else:
                px = slide.read_level_region(x0, y0, level, x1 - x0, y1 - y0)
                img = PILImage.fromarray(px).resize((ow, oh), PILImage.Resampling.BOX)
                out[oy : oy + oh, ox : ox + ow] = np.asarray(img)
            done += 1
            if on_block is not None:
                on_block(done, total)
    return out
