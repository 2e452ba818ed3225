"""``FrozenEncoder``: a frozen patch encoder and its preprocessing (what every registry loader builds)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import autocast, resolve_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenEncoder(nn.Module):
    """A frozen patch encoder and its preprocessing.

    ``encode(uint8 (b, h, w, 3)) -> float32 (b, d)``: converts to float, resizes to ``input_size`` (when set),
    normalises with ``mean``/``std``, runs the model under ``no_grad`` (bf16 autocast on CUDA) and pools.

    Attributes:
        name: canonical registry name (stored with features; part of cache staleness checks).
        dim: output feature dimension ``d``.
        input_size: side in pixels the model expects (``None``: any size, no resizing).
        mpp: µm/px the model was trained at (patches should be cut at this resolution).
        mean, std: per-channel normalisation of RGB in [0, 1].
    """

    mean: torch.Tensor  # (1, 3, 1, 1) normalisation buffers (register_buffer: typed here for the checker)
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        input_size: int | None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        mpp: float = 0.5,
        pool: Callable[[Any], torch.Tensor] | None = None,
        autocast: bool = True,
        dim: int | None = None,
        revision: str = "",
        hash_exclude: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.input_size = input_size
        self.mpp = float(mpp)
        self.use_autocast = autocast  # off for the builtin: its statistics want fp32
        self.revision = revision  # extra text mixed into weights_hash (e.g. the builtin's version)
        self._pool = pool
        # keys left randomly initialised by the loader (e.g. an unused HF pooler): not part of the identity
        self._hash_exclude = frozenset(hash_exclude)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()
        self._weights_hash: str | None = None
        if dim is None:
            side = input_size or 64
            dim = int(self.forward(torch.zeros(1, 3, side, side)).shape[-1])
        self.dim = int(dim)

    # frozen: never switch to training mode (dropout, batch-norm statistics)
    def train(self, mode: bool = True) -> FrozenEncoder:
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def weights_hash(self) -> str:
        """sha256 of name, revision and every state-dict tensor (names, dtypes, shapes, bytes)."""
        if self._weights_hash is None:
            state = {k: v for k, v in self.model.state_dict().items() if k not in self._hash_exclude}
            self._weights_hash = state_dict_hash(state, extra=f"{self.name}|{self.revision}")
        return self._weights_hash

    def describe(self) -> dict[str, object]:
        """What a feature store records about the encoder."""
        return {
            "name": self.name,
            "dim": self.dim,
            "input_size": self.input_size,
            "mpp": self.mpp,
            "weights_hash": self.weights_hash,
        }

    def prepare(self, device: Any = "auto") -> FrozenEncoder:
        """Move to ``device`` ("auto": cuda, mps, cpu); channels-last on CUDA (faster convolutions)."""
        dev = resolve_device(device)
        self.to(dev)
        if dev.type == "cuda":
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
        return self

    def preprocess(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``(b, h, w, 3)`` -> normalised float ``(b, 3, s, s)`` on the encoder's device."""
        if isinstance(batch, np.ndarray) and not (batch.flags.writeable and batch.flags.c_contiguous):
            batch = np.array(batch)  # torch wants writable, contiguous memory
        x = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected a (b, h, w, 3) uint8 batch, got shape {tuple(x.shape)}")
        dev = self.device
        if dev.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory()
        x = x.to(dev, non_blocking=True).permute(0, 3, 1, 2)  # (b, 3, h, w) view of the uint8 pixels
        s = self.input_size
        if s is not None and tuple(x.shape[-2:]) != (s, s):
            x = x.float().div_(255.0)
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False).clamp_(
                0, 1
            )
            x = (x - self.mean) / self.std
        else:  # one fused pass: (x / 255 - mean) / std
            x = torch.addcmul(-self.mean / self.std, x, 1.0 / (255.0 * self.std))
        if dev.type == "cuda":
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()  # NCHW like the model-only path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(b, 3, s, s)`` -> ``(b, d)`` (pooled, model dtype)."""
        out = self.model(x)
        return self._pool(out) if self._pool is not None else out

    @torch.no_grad()
    def encode_tensor(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Like :meth:`encode` but returns a float32 tensor on the encoder's device (no host sync)."""
        x = self.preprocess(batch)
        with autocast(self.device, enabled=self.use_autocast):
            out = self.forward(x)
        return out.float()

    def encode(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 ``(b, h, w, 3)`` RGB patches -> float32 ``(b, d)`` features (numpy)."""
        return self.encode_tensor(batch).cpu().numpy()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}, input_size={self.input_size}, mpp={self.mpp}"


def state_dict_hash(state: dict[str, torch.Tensor], *, extra: str = "") -> str:
    """sha256 over sorted tensor names, dtypes, shapes and raw bytes (the cache-staleness key)."""
    h = hashlib.sha256(extra.encode())
    for key in sorted(state):
        t = state[key]
        if not isinstance(t, torch.Tensor):
            continue
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
