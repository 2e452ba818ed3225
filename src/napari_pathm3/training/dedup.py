"""The caption-disjoint split: slides whose captions are identical stay in one split, so no test caption occurs
word for word among the training captions (the verbatim overlap is 0 by construction).

PatchGastric's random splits put about three quarters of the test captions verbatim into training, which lets a
model (or a lookup table) score by memory. This split measures what is left without that shortcut. It is not
the paper's protocol (random 20/40/40): tables say which split ran (``split: caption_disjoint``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SPLIT_STYLES", "caption_disjoint_split"]

#: split styles of the protocol: "stratified" (the paper's random 20/40/40, stratified by class) and
#: "caption_disjoint" (groups of identical captions kept together)
SPLIT_STYLES = ("stratified", "caption_disjoint")


def caption_disjoint_split(
    labels: Sequence[int | str],
    captions: Sequence[str | None],
    *,
    fractions: Sequence[float],
    seed: int = 0,
) -> tuple[np.ndarray, ...]:
    """Disjoint index arrays, one per fraction, where slides with the same (whitespace-normalised) caption
    share a split; a slide without a caption is a group of its own.

    Groups are placed largest first (ties in an order drawn from ``numpy.random.default_rng(seed)``), each
    into the split that leaves the per-class slide counts closest to ``fractions`` (squared error relative to
    each split's size), so sizes and class proportions stay as close to a stratified split as the groups
    allow. PatchGastric's largest caption groups are bigger than the training target (206 and 142 slides in
    the paper style): they land in validation and test, and the split changes little between seeds.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions: must be non-negative and sum to 1, got {list(fractions)}")
    if len(labels) != len(captions):
        raise ValueError(f"captions: {len(captions)} for {len(labels)} labels")
    classes = sorted({str(x) for x in labels})
    y = np.asarray([classes.index(str(x)) for x in labels])
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(captions):
        key = " ".join(str(c).split()) if c is not None and str(c).strip() else f"\0{i}"
        groups.setdefault(key, []).append(i)
    rng = np.random.default_rng(seed)
    members = list(groups.values())
    order = rng.permutation(len(members))
    members = [members[i] for i in order]
    members.sort(key=len, reverse=True)  # stable: equal sizes keep the random order
    target = f[:, None] * np.bincount(y, minlength=len(classes))[None, :]  # (splits, classes)
    current = np.zeros_like(target)
    parts: list[list[int]] = [[] for _ in f]
    for idx in members:
        g = np.bincount(y[idx], minlength=len(classes))
        # the split where the group leaves the per-class counts closest to the targets (squared error relative
        # to each split's size): a group larger than the training target lands in a larger split
        cost = np.empty(len(f))
        for s in range(len(f)):
            trial = current.copy()
            trial[s] += g
            cost[s] = (((trial - target) / np.maximum(target.sum(axis=1, keepdims=True), 1e-9)) ** 2).sum()
        cost[f == 0] = np.inf
        best = int(np.argmin(cost))
        parts[best].extend(idx)
        current[best] += g
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)
