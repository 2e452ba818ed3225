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

__all__ = ["DEVICES", "autocast", "check_device", "empty_cache", "is_oom", "maybe_compile", "resolve_device"]


def check_device(device: Any) -> str:
    """``device`` as a normalised name (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) when this machine
    and this torch build can use it, else :class:`~napari_pathm3.errors.DeviceError` saying what is missing
    and what to pass instead. The CLI checks ``--device`` with it on every command, the API in
    :func:`resolve_device`; ``auto``/``cpu`` never import torch."""
    from .errors import DeviceError

    name = "auto" if device is None else str(device).strip().lower()
    kind, _, index = name.partition(":")
    fix = "use 'auto' or 'cpu' instead"
    bad_index = bool(index) and (kind == "auto" or not index.isdigit() or len(index) > 3)
    if kind not in DEVICES or bad_index:
        raise DeviceError(
            f"device {str(device)[:40]!r}: not a device; use auto, cpu, cuda, cuda:N (N a GPU index) or mps"
        )
    if kind in ("auto", "cpu"):
        return kind if not index else f"{kind}:{int(index)}"
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            build = (
                "a CPU-only build" if torch.version.cuda is None else "a CUDA build, but no GPU is visible"
            )
            raise DeviceError(
                f"device {name!r}: CUDA is not available (torch {torch.__version__} is {build}); {fix}"
            )
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise DeviceError(
                f"device {name!r}: no such GPU (this machine has {count}: cuda:0..cuda:{count - 1}); {fix}"
            )
        return f"cuda:{int(index)}" if index else "cuda"
    mps = getattr(torch.backends, "mps", None)
    if index or mps is None or not mps.is_available():
        raise DeviceError(f"device {name!r}: Apple MPS is not available on this machine/torch; {fix}")
    return "mps"


def resolve_device(device: Any = "auto") -> Any:
    """``"auto"``/``None`` -> the first available of cuda, mps, cpu; any other name is checked by
    :func:`check_device` (a clear :class:`~napari_pathm3.errors.DeviceError`, never torch's bare
    ``AssertionError`` for a missing CUDA) and given to ``torch.device``."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device not in (None, "auto"):
        return torch.device(check_device(device))
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
