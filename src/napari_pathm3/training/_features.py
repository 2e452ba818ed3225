"""Thin adapter over :mod:`napari_pathm3.io.interop`: one slide's ``(features, coords)`` from a zarr feature
store (``.zarr``), an exported ``.h5`` (CLAM/TRIDENT), ``.npy``, ``.pt``/``.pth``, or a ``.safetensors`` file
with ``features`` (and ``coords``) tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FeatureStoreError


def read_feature_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise FeatureStoreError(f"cannot read features from {path}: {err}") from err
        if "features" not in tensors:
            raise FeatureStoreError(f"{path}: no 'features' tensor (found {sorted(tensors)})")
        return tensors["features"], tensors.get("coords")
    from ..io.interop import read_feature_file as read_bag_file

    bag = read_bag_file(path)
    return bag.features, bag.coords
