"""Training and evaluation: bags (manifests, regions), the trainer, metrics and the paper's protocol.

Importing this package is cheap (no torch): import the submodules you need, e.g.
``from napari_pathm3.training.loop import train``.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "SlideBag": "data",
    "BagRecord": "data",
    "BagDataset": "data",
    "read_manifest": "data",
    "collate_bags": "data",
    "Region": "regions",
    "bags_from_regions": "regions",
    "regions_from_labels": "regions",
    "train": "loop",
    "TrainResult": "loop",
    "evaluate_model": "evaluate",
    "run_patchgastric": "protocol",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
