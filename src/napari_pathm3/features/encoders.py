"""Patch encoder registry: a name resolves to a :class:`FrozenEncoder` (frozen model + its preprocessing).

Names (``kind:spec``)::

    builtin:colorstats                  handcrafted colour/stain/texture descriptor, no download (fallback)
    timm:<name>                         timm model, pretrained weights from the HF cache, e.g.
                                        timm:hf-hub:MahmoodLab/UNI, timm:hf-hub:paige-ai/Virchow,
                                        timm:hf-hub:bioptimus/H-optimus-0, timm:eva_giant_patch14_224.clip_ft_in1k
    hf:<id or folder>                   transformers AutoModel + AutoImageProcessor (Phikon, DINOv2, ...); CLS output
    local:<folder>                      a saved timm folder (config.json with "architecture") or an HF folder
    torchvision:<name>                  torchvision classification model with its head removed

A bare ``hf-hub:org/name`` or timm architecture name (``eva_giant_patch14_224``) means ``timm:``.
Weights are never downloaded when ``HF_HUB_OFFLINE=1``; gated or missing weights raise
:class:`~napari_pathm3.errors.EncoderError` saying how to get them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import autocast, resolve_device
from ..errors import EncoderError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_ENCODER = "builtin:colorstats"

#: Offered in the GUI dropdown even when not cached; the first is the only one that always works offline.
KNOWN_ENCODERS: tuple[str, ...] = (
    "builtin:colorstats",
    "timm:eva_giant_patch14_224.clip_ft_in1k",  # the paper's ViT-g/14 (EVA-CLIP), 1408-d
    "timm:hf-hub:MahmoodLab/UNI",  # gated: accept the licence on its HF page
    "timm:hf-hub:paige-ai/Virchow",  # gated
    "timm:hf-hub:bioptimus/H-optimus-0",
    "hf:owkin/phikon",
    "hf:facebook/dinov2-base",
)


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

    def describe(self) -> dict[str, Any]:
        """What a feature store records about the encoder."""
        return {"name": self.name, "dim": self.dim, "input_size": self.input_size, "mpp": self.mpp,
                "weights_hash": self.weights_hash}  # fmt: skip

    def prepare(self, device: Any = "auto") -> FrozenEncoder:
        """Move to ``device`` ("auto": cuda, mps, cpu); channels-last on CUDA (faster convolutions)."""
        dev = resolve_device(device)
        self.to(dev)
        if dev.type == "cuda":
            self.to(memory_format=torch.channels_last)
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


def canonical_name(name: str) -> str:
    """Normalise a user-given encoder name to ``kind:spec`` (paths made absolute)."""
    name = name.strip()
    if not name:
        raise EncoderError(
            "empty encoder name; e.g. 'builtin:colorstats', 'hf:owkin/phikon', 'timm:hf-hub:MahmoodLab/UNI'"
        )
    kind, sep, spec = name.partition(":")
    if sep and kind in ("builtin", "timm", "hf", "torchvision"):
        return f"{kind}:{spec}"
    if sep and kind == "local":
        return f"local:{Path(spec).expanduser().resolve()}"
    if sep and kind in ("hf-hub", "local-dir"):
        return f"timm:{name}"
    if Path(name).expanduser().is_dir():
        return f"local:{Path(name).expanduser().resolve()}"
    if not sep and "/" not in name:
        return f"timm:{name}"  # bare timm architecture, e.g. eva_giant_patch14_224
    raise EncoderError(
        f"unknown encoder {name!r}; use builtin:colorstats, timm:<name>, hf:<id or folder>, local:<folder> "
        "or torchvision:<name>"
    )


def get_encoder(name: str, *, device: Any = None) -> FrozenEncoder:
    """Resolve ``name`` to a frozen encoder.

    Args:
        name: registry name (see the module docstring).
        device: move it there ("auto", "cuda", "cpu", ...); ``None`` leaves it on the CPU.

    Raises:
        EncoderError: unknown name, missing package (timm/torchvision), gated or uncached weights.
    """
    from . import _loaders

    canon = canonical_name(name)
    kind, _, spec = canon.partition(":")
    if kind == "builtin":
        enc = _loaders.load_builtin(spec)
    elif kind == "timm":
        enc = _loaders.load_timm(spec, name=canon)
    elif kind == "hf":
        enc = _loaders.load_hf(spec, name=canon)
    elif kind == "local":
        enc = _loaders.load_local(Path(spec), name=canon)
    else:
        enc = _loaders.load_torchvision(spec, name=canon)
    return enc.prepare(device) if device is not None else enc


@functools.lru_cache(maxsize=4)
def cached_encoder(name: str, device: str = "auto") -> FrozenEncoder:
    """:func:`get_encoder` memoised per process (one copy per dask worker process, shared by its threads)."""
    return get_encoder(name, device=device)


def list_encoders(*, include_cached: bool = True) -> list[str]:
    """Encoder names for the GUI dropdown: :data:`KNOWN_ENCODERS` plus image models in the HF cache."""
    names = list(KNOWN_ENCODERS)
    if include_cached:
        for n in _cached_hub_encoders():
            if n not in names:
                names.append(n)
    return names


def _cached_hub_encoders() -> list[str]:
    """timm / transformers image models found in the local Hugging Face cache (no network)."""
    import json

    try:
        from huggingface_hub import constants

        root = Path(os.environ.get("HF_HUB_CACHE", constants.HF_HUB_CACHE))
    except Exception:  # huggingface_hub missing or misconfigured: nothing cached to offer
        return []
    found = []
    for repo in sorted(root.glob("models--*")):
        repo_id = repo.name[len("models--") :].replace("--", "/")
        for cfg_path in sorted(repo.glob("snapshots/*/config.json"))[-1:]:
            try:
                cfg = json.loads(cfg_path.read_text())
            except (OSError, ValueError):
                continue
            if "architecture" in cfg:
                found.append(f"timm:hf-hub:{repo_id}")
            elif "model_type" in cfg and (cfg_path.parent / "preprocessor_config.json").exists():
                found.append(f"hf:{repo_id}")
    return found
