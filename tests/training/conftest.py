"""Synthetic bag tasks for the trainer tests: class 1 bags have shifted feature 0."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pathm3.training.data import SlideBag

CAPTIONS = ("small glands are seen", "solid sheets are seen")  # same number of (WordPiece) tokens


def make_bags(n: int, *, seed: int, dim: int = 16, sizes: tuple[int, int] = (4, 10), shift: float = 1.0):
    rng = np.random.default_rng(seed)
    bags = []
    for i in range(n):
        y = i % 2
        k = int(rng.integers(*sizes)) if sizes[0] < sizes[1] else sizes[0]
        f = rng.normal(size=(k, dim)).astype(np.float32)
        f[:, 0] += shift if y else -shift
        bags.append(SlideBag(f, y, CAPTIONS[y], f"s{seed}_{i}"))
    return bags


@pytest.fixture
def bag_factory():
    return make_bags
