"""Device helpers for the model package (defined once in :mod:`napari_pathm3.device`)."""

from ..device import autocast, maybe_compile, resolve_device

__all__ = ["autocast", "maybe_compile", "resolve_device"]
