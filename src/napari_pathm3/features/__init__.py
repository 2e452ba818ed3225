"""Patch features: encoder registry, extraction pipeline, many-slide batches.

Names are imported lazily so ``import napari_pathm3.features`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FrozenEncoder": "encoders",
    "get_encoder": "encoders",
    "list_encoders": "encoders",
    "DEFAULT_ENCODER": "encoders",
    "extract_features": "extract",
    "extract_many": "batch",
    "read_manifest": "batch",
    "SlideJob": "batch",
    "ExtractResult": "batch",
}


def __getattr__(name: str) -> Any:
    if name == "FeatureBag":
        from ..io.feature_store import FeatureBag

        return FeatureBag
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FeatureBag", *sorted(_EXPORTS)]
