"""Multiple-instance augmentation of region bags: a few hand-drawn regions become enough bags to train on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .data import SlideBag


def sub_bags(bags: Sequence[SlideBag], copies: int, fraction: float, seed: int) -> list[SlideBag]:
    """Each bag plus ``copies`` random subsets of ``fraction`` of its patches."""
    rng = np.random.default_rng(seed)
    out = list(bags)
    for bag in bags:
        n = len(bag)
        k = max(1, round(fraction * n))
        for c in range(copies if n > 1 else 0):
            keep = np.sort(rng.choice(n, k, replace=False))
            coords = None if bag.coords is None else bag.coords[keep]
            out.append(SlideBag(bag.features[keep], bag.label, bag.caption, f"{bag.slide_id}~{c}", coords))
    return out


def _pick_counts(rng: np.random.Generator, na: int, nb: int) -> tuple[int, int]:
    """How many patches of each of two bags go into a mix; never a tie, so a majority decides both targets
    (bags here hold >= 2 patches)."""
    ka, kb = int(rng.integers(1, na + 1)), int(rng.integers(1, nb + 1))
    if ka == kb:
        if kb > 1:
            kb -= 1
        else:
            ka += 1
    return ka, kb


def mixed_bags(bags: Sequence[SlideBag], count: int, seed: int) -> list[SlideBag]:
    """``count`` bags that mix random subsets of two regions of different classes, labelled (class and
    caption) by the class with more patches in the mix. Whole slides mix tissues; without such bags the
    classifier and the caption head each pick their own rule on a mixed bag and can disagree."""
    rng = np.random.default_rng(seed + 1)
    by_label: dict[object, list[SlideBag]] = {}
    for bag in bags:
        if len(bag) > 1:
            by_label.setdefault(bag.label, []).append(bag)
    labels = sorted(by_label)  # type: ignore[type-var]
    out: list[SlideBag] = []
    if len(labels) < 2:
        return out
    for c in range(count):
        la, lb = rng.choice(len(labels), 2, replace=False)
        a = by_label[labels[la]][rng.integers(len(by_label[labels[la]]))]
        b = by_label[labels[lb]][rng.integers(len(by_label[labels[lb]]))]
        ka, kb = _pick_counts(rng, len(a), len(b))
        ia, ib = rng.choice(len(a), ka, replace=False), rng.choice(len(b), kb, replace=False)
        major = a if ka > kb else b
        feats = np.concatenate([a.features[ia], b.features[ib]])
        coords = (
            None if a.coords is None or b.coords is None else np.concatenate([a.coords[ia], b.coords[ib]])
        )
        out.append(SlideBag(feats, major.label, major.caption, f"mixed~{c}", coords))
    return out
