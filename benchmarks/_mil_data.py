"""Synthetic MIL + captioning bags from scikit-learn's offline digits (MNIST-bags, Ilse et al. 2018).

Each bag holds 8-16 digit images (instance feature = the 64 pixel values of the 8x8 image, scaled to [0, 1]).
Digit images are split into disjoint pools (train / val / test), so test instances are never seen in training.

Label (a co-occurrence rule on the key digits 3 and 7, as a grade that depends on two patterns together):
    "negative": no 3 and no 7;  "single": 3s or 7s but not both;  "both": at least one 3 and one 7.
Attention pooling with a linear head (ABMIL) cannot represent this rule exactly: its pooled vector is a convex
combination of instance embeddings, and the "single" region would have to contain bags of pure 3s and of pure
7s but not their mixtures. Instance-to-instance attention (PathM3's correlation module) and several queries can.
Caption (depends on instance content beyond the class; "." is a separate token):
    "<threes> . <sevens> . <zeros> ."  with
    <threes>  = "no threes" | "one three" | "several threes"
    <sevens>  = "no sevens" | "one seven" | "several sevens"
    <zeros>   = "no zeros"  | "zeros are present"
e.g. "several threes . one seven . no zeros ." -- 18 distinct captions; the best class-conditioned caption
gets only part of them right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

KEYS = (3, 7)
ZERO = 0
CLASSES = ("negative", "single", "both")
BACKGROUND = (1, 2, 4, 5, 6, 8, 9)


def _count_phrase(n: int, word: str) -> str:
    return f"no {word}s" if n == 0 else (f"one {word}" if n == 1 else f"several {word}s")


def caption_of(digits: list[int]) -> str:
    d = list(digits)
    zeros = "zeros are present" if ZERO in d else "no zeros"
    return f"{_count_phrase(d.count(3), 'three')} . {_count_phrase(d.count(7), 'seven')} . {zeros} ."


def label_of(digits: list[int]) -> str:
    has3, has7 = 3 in digits, 7 in digits
    return "both" if has3 and has7 else ("single" if has3 or has7 else "negative")


def _pools(seed: int) -> dict[str, dict[int, np.ndarray]]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    pools: dict[str, dict[int, np.ndarray]] = {"train": {}, "val": {}, "test": {}}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(y == digit))
        a, b = int(0.5 * len(idx)), int(0.7 * len(idx))
        for split, part in (("train", idx[:a]), ("val", idx[a:b]), ("test", idx[b:])):
            pools[split][digit] = x[part]
    return pools


def _bag_digits(rng: np.random.Generator, cls: str) -> list[int]:
    size = int(rng.integers(8, 17))
    keys = {"negative": (), "both": (3, 7), "single": ((3,) if rng.random() < 0.5 else (7,))}[cls]
    n3 = int(rng.choice([1, 1, 2, 3])) if 3 in keys else 0
    n7 = int(rng.choice([1, 1, 2, 3])) if 7 in keys else 0
    n0 = int(rng.choice([1, 2])) if rng.random() < 0.5 else 0
    rest = max(0, size - n3 - n7 - n0)
    digits = [3] * n3 + [7] * n7 + [0] * n0 + list(rng.choice(BACKGROUND, rest))
    return [int(d) for d in rng.permutation(digits)]


def make_bags(seed: int, sizes: dict[str, int]) -> dict[str, list[tuple[np.ndarray, list[int]]]]:
    """``{split: [(features (n, 64), digits), ...]}`` with classes balanced in every split."""
    pools = _pools(seed)
    rng = np.random.default_rng(seed + 1000)
    out: dict[str, list[tuple[np.ndarray, list[int]]]] = {}
    for split, n in sizes.items():
        bags = []
        for i in range(n):
            digits = _bag_digits(rng, CLASSES[i % len(CLASSES)])
            feats = np.stack([pools[split][d][rng.integers(len(pools[split][d]))] for d in digits])
            bags.append((feats, digits))
        order = rng.permutation(n)
        out[split] = [bags[j] for j in order]
    return out


def write_bags(bags: dict[str, list[tuple[np.ndarray, list[int]]]], folder: Path) -> Path:
    """TRIDENT/CLAM-style ``.h5`` bags + ``manifest.csv`` (:func:`_families.write_bags`) with this module's
    labels and captions."""
    from _families import write_bags as write

    rows = [(s, f, None, label_of(d), caption_of(d)) for s, items in bags.items() for f, d in items]
    return write(rows, folder)
