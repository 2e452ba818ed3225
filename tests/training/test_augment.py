"""Training-set augmentation of the region trainer (`training.augment`): mixed bags are labelled by their majority."""

from __future__ import annotations

import numpy as np

from napari_pathm3.training.augment import mixed_bags
from napari_pathm3.training.data import SlideBag


def test_mixed_bags_take_class_and_caption_of_their_majority() -> None:
    rng = np.random.default_rng(0)
    # class 0 patches have feature 0, class 1 patches feature 1: the mix's composition is readable
    bags = [
        SlideBag(np.full((n, 3), float(y), np.float32), y, f"caption {y}", f"r{i}")
        for i, (n, y) in enumerate([(9, 0), (5, 0), (7, 1), (12, 1)])
    ]
    mixed = mixed_bags(bags, 50, seed=int(rng.integers(100)))
    assert len(mixed) == 50
    for bag in mixed:
        ones = int((bag.features[:, 0] == 1).sum())
        zeros = len(bag) - ones
        assert ones != zeros and ones >= 1 and zeros >= 1
        majority = int(ones > zeros)
        assert bag.label == majority and bag.caption == f"caption {majority}"
    assert {b.label for b in mixed} == {0, 1}
    assert mixed_bags(bags[:2], 5, seed=0) == []  # one class only: nothing to mix
