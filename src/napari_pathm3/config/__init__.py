"""Typed, frozen, JSON-serialisable configs (stdlib only: widgets and the CLI build them cheaply), by domain:
:mod:`.patches` (tissue, patch grid), :mod:`.model` (correlation, Q-Former, language model), :mod:`.training`
(optimiser, training run) and :mod:`.pathm3` (the whole model and its size presets).

Defaults follow the PathM3 paper (Table 6) where it states a value; every other default says why.
"""

from __future__ import annotations

from .model import PATCH_CHUNK_SIZE, CaptionPrefixConfig, CorrelationConfig, LanguageConfig, QFormerConfig
from .patches import DEFAULT_ENCODER, TilingConfig, TissueConfig
from .pathm3 import (
    DEFAULT_SIZE,
    MODEL_SIZES,
    PAPER_QFORMER_INIT,
    SCRATCH_ALPHA,
    SCRATCH_ITC,
    SCRATCH_OPTIM,
    PathM3Config,
)
from .training import VAL_METRICS, WEIGHT_DECAY_RULES, AdamWConfig, TrainConfig

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_SIZE",
    "MODEL_SIZES",
    "PAPER_QFORMER_INIT",
    "PATCH_CHUNK_SIZE",
    "SCRATCH_ALPHA",
    "SCRATCH_ITC",
    "SCRATCH_OPTIM",
    "VAL_METRICS",
    "WEIGHT_DECAY_RULES",
    "AdamWConfig",
    "CaptionPrefixConfig",
    "CorrelationConfig",
    "LanguageConfig",
    "PathM3Config",
    "QFormerConfig",
    "TilingConfig",
    "TissueConfig",
    "TrainConfig",
]
