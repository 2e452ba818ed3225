"""PatchGastric as the paper uses it: the three subtypes, its reference captions, the keyword rule and the
stratified 20 / 40 / 40 splits."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence

import numpy as np

from ..._types import PathLike
from ...errors import PathM3Error
from ..data import BagRecord, read_manifest
from ..dedup import SPLIT_STYLES, caption_disjoint_split

log = logging.getLogger(__name__)

PATCHGASTRIC_CLASSES = (
    "well differentiated tubular adenocarcinoma",
    "moderately differentiated tubular adenocarcinoma",
    "poorly differentiated adenocarcinoma",
)
# subtype string in captions.csv (lower-case) -> class of the 3-class subset; every other subtype (papillary,
# signet ring, mixed "well to moderately", ...) is left out, like in the paper (and CITE)
PATCHGASTRIC_SUBTYPES = {
    "well differentiated tubular adenocarcinoma": 0,
    "moderately differentiated tubular adenocarcinoma": 1,
    "poorly differentiated adenocarcinoma, solid type": 2,
    "poorly differentiated adenocarcinoma, non-solid type": 2,
}
SPLIT_FRACTIONS = (0.2, 0.4, 0.4)  # §4.1: train 20 %, validation 40 %, test 40 %
SEEDS = (0, 1, 2)  # §4.2: "three times with different random seeds"


CAPTION_STYLES = ("paper", "raw")
SPLIT_STYLE_TEXT = {
    "stratified": "stratified: random 20/40/40 per class, 3 seeds (the paper's protocol)",
    "caption_disjoint": "caption_disjoint: identical captions kept in one split, no test caption in training "
    "(not the paper's protocol)",
}
CAPTION_STYLE_TEXT = {
    "paper": "paper: lower-case, subtype sentence(s) removed, no final full stop (as the paper's Table 5)",
    "raw": "raw: captions.csv text as published (names the subtype: not comparable with the paper)",
}
# a sentence that names the diagnosis: the subtype sentence ("Moderately differentiated adenocarcinoma.", and
# its variants "Group 5, Adenocarcinoma.", "... diffentiated ...", "Well-differentiated ... that grows ...")
_DIAGNOSIS = re.compile(r"adenocarcinoma|differentiated|diffentiated", re.IGNORECASE)
_SENTENCE_BREAK = re.compile(r"(?<=\.)\s+")


def paper_caption(text: str | None) -> str | None:
    """A PatchGastric caption as the paper's references: sentences (split after a full stop) that name the
    diagnosis are dropped, the rest is lower-cased and loses its final full stop; None when nothing is left
    (17 of the 693 subset captions are only a diagnosis: those slides have no caption)."""
    if text is None:
        return None
    kept = [p for p in _SENTENCE_BREAK.split(" ".join(text.split())) if p and not _DIAGNOSIS.search(p)]
    out = " ".join(kept).lower().rstrip(" .").strip()
    return out or None


def patchgastric_subset(captions_csv: PathLike, *, captions: str = "paper") -> list[BagRecord]:
    """The 693 slides of the paper's 3-class subset, labelled with :data:`PATCHGASTRIC_CLASSES` names;
    captions preprocessed as the paper's references (``captions="paper"``) or as published (``"raw"``)."""
    if captions not in CAPTION_STYLES:
        raise PathM3Error(f"captions: one of {', '.join(CAPTION_STYLES)}, got {captions!r}")
    out = []
    for r in read_manifest(captions_csv):
        cls = PATCHGASTRIC_SUBTYPES.get((r.label or "").strip().lower())
        if cls is not None:
            cap = paper_caption(r.caption) if captions == "paper" else r.caption
            out.append(dataclasses.replace(r, label=PATCHGASTRIC_CLASSES[cls], caption=cap, split=None))
    if not out:
        raise PathM3Error(
            f"{captions_csv}: no slide of the three PatchGastric subtypes (is it captions.csv?)"
        )
    return out


_KEYWORDS = (
    (re.compile(r"\bwell\b"), 0),
    (re.compile(r"\bmoderately\b"), 1),
    (re.compile(r"\bpoorly\b|\bsolid\b"), 2),
)


def keyword_rule(text: str | None) -> int | None:
    """The text-only shortcut the preprocessing removes: the class whose keyword (well / moderately /
    poorly|solid) comes first in the caption, None when there is none."""
    hits = [(m.start(), c) for rx, c in _KEYWORDS if (m := rx.search((text or "").lower()))]
    return min(hits)[1] if hits else None


def keyword_rule_accuracy(records: Sequence[BagRecord]) -> float:
    """Accuracy of :func:`keyword_rule` on the records' captions (no keyword: the most frequent class)."""
    labels = [PATCHGASTRIC_CLASSES.index(r.label) for r in records if r.label in PATCHGASTRIC_CLASSES]
    if not labels:
        return float("nan")
    majority = max(set(labels), key=labels.count)
    preds = [keyword_rule(r.caption) for r in records if r.label in PATCHGASTRIC_CLASSES]
    return float(np.mean([(majority if p is None else p) == y for p, y in zip(preds, labels, strict=True)]))


def stratified_split(
    labels: Sequence[int | str], *, fractions: Sequence[float] = SPLIT_FRACTIONS, seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Disjoint index arrays, one per fraction, with each class split in the same proportions.

    Per class, the counts are ``floor(n_c * f)`` plus the largest remainders (so they add up to ``n_c``);
    the order inside a class is a permutation drawn from ``numpy.random.default_rng(seed)``.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions: must be non-negative and sum to 1, got {list(fractions)}")
    labels_arr = np.asarray([str(x) for x in labels])
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in f]
    for cls in sorted(set(labels_arr.tolist())):
        idx = np.flatnonzero(labels_arr == cls)
        idx = idx[rng.permutation(idx.size)]
        exact = idx.size * f
        counts = np.floor(exact).astype(int)
        for j in np.argsort(-(exact - counts), kind="stable")[: idx.size - counts.sum()]:
            counts[j] += 1
        start = 0
        for p, c in zip(parts, counts, strict=True):
            p.extend(idx[start : start + c].tolist())
            start += c
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


def patchgastric_splits(
    captions_csv: PathLike, *, seed: int, captions: str = "paper", split: str = "stratified"
) -> dict[str, list[BagRecord]]:
    """``{"train", "val", "test"}`` records of the 3-class subset for one seed. ``split="stratified"`` is the
    paper's random split (it does not depend on the caption style); ``"caption_disjoint"`` keeps identical
    captions (in the chosen style) in one split, so no test caption occurs in training (:mod:`.dedup`)."""
    if split not in SPLIT_STYLES:
        raise PathM3Error(f"split: one of {', '.join(SPLIT_STYLES)}, got {split!r}")
    records = patchgastric_subset(captions_csv, captions=captions)
    labels = [r.label for r in records]
    if split == "caption_disjoint":
        parts = caption_disjoint_split(
            labels,  # type: ignore[arg-type]
            [r.caption for r in records],
            fractions=SPLIT_FRACTIONS,
            seed=seed,
        )
    else:
        parts = stratified_split(labels, seed=seed)  # type: ignore[arg-type]
    tr, va, te = parts
    return {name: [records[i] for i in idx] for name, idx in (("train", tr), ("val", va), ("test", te))}
