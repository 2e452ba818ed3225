"""Synthetic bags for grounding (bench_grounding.py): scikit-learn's 8x8 digits as patches, with captions whose
words name the key-instance kinds a bag holds, so each word's truth is known (which patches hold it).

Kinds: the digits 3 ("threes"), 7 ("sevens") and 0 ("zeros"); every other digit is background. A bag holds
each kind with probability 1/2 (1-3 instances of it) among 8-16 patches. Caption: the kinds present, in a
fixed order, e.g. "threes and zeros ." or "no key digits ."; label: the co-occurrence rule of _mil_data (3s,
7s, both or neither). Unlike _mil_data's counting grammar ("several threes"), where "threes" is predictable
from the grammar alone and so says nothing about the image, here a kind's word appears only when the bag
holds that kind: the word itself is the image evidence a word map has to point at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from _mil_data import BACKGROUND, _pools, label_of

#: kind word -> digit
KINDS = {"threes": 3, "sevens": 7, "zeros": 0}


def caption_of(digits: list[int]) -> str:
    present = [w for w, d in KINDS.items() if d in digits]
    return (" and ".join(present) if present else "no key digits") + " ."


def _bag_digits(rng: np.random.Generator) -> list[int]:
    size = int(rng.integers(8, 17))
    keys = [d for d in KINDS.values() if rng.random() < 0.5]
    digits = [d for d in keys for _ in range(int(rng.integers(1, 4)))]
    digits += list(rng.choice(BACKGROUND, max(0, size - len(digits))))
    return [int(d) for d in rng.permutation(digits)]


def make_bags(seed: int, sizes: dict[str, int]) -> dict[str, list[tuple[np.ndarray, list[int]]]]:
    """``{split: [(features (n, 64), digits), ...]}``; test digits are never seen in training."""
    pools = _pools(seed)
    rng = np.random.default_rng(seed + 2000)
    out: dict[str, list[tuple[np.ndarray, list[int]]]] = {}
    for split, n in sizes.items():
        bags = []
        for _ in range(n):
            digits = _bag_digits(rng)
            feats = np.stack([pools[split][d][rng.integers(len(pools[split][d]))] for d in digits])
            bags.append((feats, digits))
        out[split] = bags
    return out


def write_bags(bags: dict[str, list[tuple[np.ndarray, list[int]]]], folder: Path) -> Path:
    """``.h5`` bags + manifest (:func:`_families.write_bags`) with this module's captions."""
    from _families import write_bags as write

    rows = [(s, f, None, label_of(d), caption_of(d)) for s, items in bags.items() for f, d in items]
    return write(rows, folder)
