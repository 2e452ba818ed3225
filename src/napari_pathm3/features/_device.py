"""Device resolution and autocast for feature extraction.

Private stand-in for ``napari_pathm3.model.device`` (``features`` and ``model`` are siblings and must not
import each other); keep the two in step: "auto" is cuda, then mps, then cpu; bf16 autocast on CUDA only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def resolve_device(device: Any = "auto") -> Any:
    """``"auto"`` -> cuda, then mps, then cpu; anything else goes through ``torch.device``."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


@contextlib.contextmanager
def autocast_for(device: Any, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on CUDA (halves memory traffic, full fp32 range); a no-op elsewhere."""
    import torch

    if enabled and getattr(device, "type", str(device)) == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def is_oom(err: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures (torch raises different types per backend)."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def empty_cache(device: Any) -> None:
    import torch

    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        torch.cuda.empty_cache()
    elif kind == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
