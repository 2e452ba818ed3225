"""The paper's PatchGastric protocol behind one entry point (:func:`run_patchgastric`): :mod:`.subset`
(classes, captions, splits), :mod:`.variants` (the ablation rows), :mod:`.run` (seeds x variants, results).

PathM3 §4.1: the three main subtypes of PatchGastric (well / moderately differentiated tubular
adenocarcinoma, poorly differentiated adenocarcinoma = its solid and non-solid types together: 283 / 265 / 145
= 693 slides), random 20 / 40 / 40 % train / val / test splits (stratified by class here; the paper does not
say), three seeds, mean ± std.

Captions (:func:`paper_caption`): by default as the paper's reference captions (supplementary Table 5) —
lower-case, without the subtype sentence (97 % of the raw captions end by naming the class, so a keyword rule
on the raw text alone is ~97 % accurate) and without the final full stop. ``captions="raw"`` keeps them as
published.

Each row of the paper's Tables 1-4 is a named :data:`VARIANTS` entry (mode, correlation on/off, α); every
variant runs on any feature folder. Plain ``accuracy`` is always image-only (a new slide has no caption); the
image & text and text-only rows are ``text_conditioned_accuracy`` (the reference caption is an input).
"""

from __future__ import annotations

from .run import SHORTCUT_ROWS, SHORTCUT_TITLES, ProtocolResult, _provenance, run_patchgastric
from .subset import (
    CAPTION_STYLE_TEXT,
    CAPTION_STYLES,
    PATCHGASTRIC_CLASSES,
    PATCHGASTRIC_SUBTYPES,
    SEEDS,
    SPLIT_FRACTIONS,
    SPLIT_STYLE_TEXT,
    keyword_rule,
    keyword_rule_accuracy,
    paper_caption,
    patchgastric_splits,
    patchgastric_subset,
    stratified_split,
)
from .variants import CAPTION_ROWS, DEFAULT_VARIANTS, VARIANTS, Variant, variant_configs

__all__ = [
    "CAPTION_ROWS",
    "CAPTION_STYLES",
    "CAPTION_STYLE_TEXT",
    "DEFAULT_VARIANTS",
    "PATCHGASTRIC_CLASSES",
    "PATCHGASTRIC_SUBTYPES",
    "ProtocolResult",
    "SEEDS",
    "SHORTCUT_ROWS",
    "SHORTCUT_TITLES",
    "SPLIT_FRACTIONS",
    "SPLIT_STYLE_TEXT",
    "VARIANTS",
    "Variant",
    "_provenance",
    "keyword_rule",
    "keyword_rule_accuracy",
    "paper_caption",
    "patchgastric_splits",
    "patchgastric_subset",
    "run_patchgastric",
    "stratified_split",
    "variant_configs",
]
