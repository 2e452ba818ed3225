"""Device and precision, set up in one place for features, model and training.

``"auto"`` resolves to cuda, then mps, then cpu; bf16 autocast on CUDA only. torch is imported inside the
functions so this module stays importable (and cheap) without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

#: the device choices the CLI and both widgets offer ("auto": cuda, then mps, then cpu)
DEVICES = ("auto", "cuda", "mps", "cpu")

__all__ = ["DEVICES", "autocast", "empty_cache", "is_oom", "maybe_compile", "resolve_device"]


def resolve_device(device: Any = "auto") -> Any:
    """``"auto"``/``None`` -> the first available of cuda, mps, cpu; anything else goes to ``torch.device``."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device not in (None, "auto"):
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextlib.contextmanager
def autocast(device: Any, *, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on CUDA (fast bf16 matmuls, full fp32 range); full precision elsewhere.

    CPU bf16 autocast is slower than fp32 on most CPUs and MPS autocast support varies, hence CUDA only.
    """
    import torch

    if enabled and resolve_device(device).type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def maybe_compile(module: Any, enabled: bool = False) -> Any:
    """``torch.compile`` the module in place when ``enabled`` and return it (its methods stay reachable).

    Off by default: variable bag sizes recompile often, and CPU gains are small.
    """
    if enabled:
        module.compile(dynamic=True)
    return module


def is_oom(err: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures (torch raises different types per backend)."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def empty_cache(device: Any) -> None:
    """Release cached accelerator memory after an out-of-memory error (a no-op on CPU)."""
    import torch

    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        torch.cuda.empty_cache()
    elif kind == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
