"""A feature bag: the patch features of one slide, with its typed metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..._types import PathLike
from .meta import BagMeta


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
        meta: everything else recorded with the bag (grid, encoder and weights hash, source file...).
    """

    features: np.ndarray
    coords: np.ndarray | None
    patch_size: int | None
    mpp: float | None
    encoder_name: str
    slide_id: str
    fingerprint: str | None = None
    meta: BagMeta = field(default_factory=BagMeta)

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
