"""Device and precision, set up in one place: ``"auto"`` -> cuda, then mps, then cpu; bf16 autocast on CUDA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["autocast", "maybe_compile", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` resolves to the first available of cuda, mps, cpu; anything else goes to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextlib.contextmanager
def autocast(device: str | torch.device, *, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on CUDA (where bf16 matmuls are fast and safe); full precision elsewhere.

    CPU bf16 autocast is slower than fp32 on most CPUs and MPS autocast support varies, hence CUDA only.
    """
    dev = resolve_device(device)
    if enabled and dev.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def maybe_compile(module: nn.Module, enabled: bool = False) -> nn.Module:
    """``torch.compile`` the module in place when ``enabled`` and return it (its methods stay reachable).

    Off by default: variable bag sizes recompile often, and CPU gains are small.
    """
    if enabled:
        module.compile(dynamic=True)
    return module
