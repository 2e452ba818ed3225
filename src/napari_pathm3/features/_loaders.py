"""Loaders behind :func:`~napari_pathm3.features.encoders.get_encoder`, one per source, plus the translation
of hub/cache failures into :class:`EncoderError` messages that say how to get the weights."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import EncoderError
from .frozen import IMAGENET_MEAN, IMAGENET_STD, FrozenEncoder

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- builtin


def load_builtin(spec: str) -> FrozenEncoder:
    from ._builtin import VERSION, ColorStats

    if spec != "colorstats":
        raise EncoderError(f"unknown built-in encoder 'builtin:{spec}'; the only one is 'builtin:colorstats'")
    # RGB in [0, 1], any patch size: mean 0 / std 1 leaves the pixels as they are
    return FrozenEncoder(
        ColorStats(),
        name="builtin:colorstats",
        input_size=None,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        autocast=False,
        dim=ColorStats.dim,
        revision=VERSION,
    )


# ---------------------------------------------------------------------------------------------- errors


def _hub_error(name: str, repo: str, err: BaseException, *, local_hint: str | None = None) -> EncoderError:
    """A clear message for gated, uncached or missing weights (the hub libraries' errors are long)."""
    kind = type(err).__name__
    text = str(err)
    low = text.lower()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    local_hint = local_hint or "or pass a local copy with --encoder local:/path/to/folder"
    if kind == "GatedRepoError" or "gated" in low or "401" in text or "403" in text or "restricted" in low:
        msg = (
            f"encoder {name!r}: the weights of {repo} are gated. Accept the model licence on "
            f"https://huggingface.co/{repo}, run `huggingface-cli login` (or `hf auth login`) with a token "
            f"of that account, then retry; {local_hint}."
        )
    elif (
        kind in ("LocalEntryNotFoundError", "OfflineModeIsEnabled")
        or offline
        or "offline" in low
        or "connect" in low
    ):
        msg = (
            f"encoder {name!r}: the weights of {repo} are not in the local Hugging Face cache and the hub "
            f"cannot be reached{' (HF_HUB_OFFLINE is set)' if offline else ''}. Download them on a connected "
            f"machine (`huggingface-cli download {repo}`) and copy the cache (HF_HOME), {local_hint}."
        )
    elif (
        kind in ("RepositoryNotFoundError", "HFValidationError", "FileNotFoundError")
        or "not found" in low
        or "does not appear" in low
    ):
        msg = f"encoder {name!r}: {repo} is neither a local folder nor a model on the Hugging Face hub ({kind}: {text.splitlines()[0] if text else ''})"
    else:
        msg = f"encoder {name!r}: could not load {repo} ({kind}: {text.splitlines()[0] if text else ''})"
    return EncoderError(msg)


# ---------------------------------------------------------------------------------------------- transformers


def _hf_pool(out: Any) -> torch.Tensor:
    """CLS token of the last hidden state (ViT, DINOv2, Phikon); pooled output for CNN backbones."""
    lhs = getattr(out, "last_hidden_state", None)
    if lhs is not None and lhs.ndim == 3:
        return lhs[:, 0]  # (b, t, d) -> (b, d)
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None:
        return pooled.flatten(1)
    if lhs is not None and lhs.ndim == 4:
        return lhs.mean((2, 3))  # (b, d, h, w) feature map
    raise EncoderError("this transformers model returns neither last_hidden_state nor pooler_output")


def _size_of(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return value.get("height") or value.get("shortest_edge")
    return None


def _hf_preprocessing(spec: str, config: Any) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Input side, mean, std from ``preprocessor_config.json`` (read as JSON: the fast processors need
    torchvision), falling back to ``config.image_size`` and ImageNet statistics."""
    path: Path | None = Path(spec) / "preprocessor_config.json"
    if not Path(spec).is_dir():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(spec, "preprocessor_config.json"))
        except Exception:  # no processor file in the repo or cache: use the fallback below
            path = None
    proc: dict[str, Any] = {}
    if path is not None and path.is_file():
        proc = json.loads(path.read_text())
    size = _size_of(proc.get("crop_size")) if proc.get("do_center_crop") else None
    size = size or _size_of(proc.get("size")) or getattr(config, "image_size", None) or 224
    if not proc:
        log.warning("%s: no preprocessor_config.json; using %d px and ImageNet mean/std", spec, size)
    mean = tuple(proc.get("image_mean", IMAGENET_MEAN))
    std = tuple(proc.get("image_std", IMAGENET_STD))
    return int(size), mean, std


def load_hf(spec: str, *, name: str) -> FrozenEncoder:
    from transformers import AutoModel

    try:  # float32 weights: bf16 comes from autocast on CUDA
        model, info = AutoModel.from_pretrained(spec, dtype=torch.float32, output_loading_info=True)
    except Exception as err:
        raise _hub_error(name, spec, err) from err
    # e.g. ViTModel's pooler is absent from Phikon/DINO checkpoints and initialised at random; we use the CLS
    # token, so those keys stay out of the weights hash (else every load would look like new weights)
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        log.info(
            "%s: %d weights not in the checkpoint (unused by the CLS output): %s",
            spec,
            len(missing),
            missing[:4],
        )
    size, mean, std = _hf_preprocessing(spec, model.config)
    return FrozenEncoder(
        model, name=name, input_size=size, mean=mean, std=std, pool=_hf_pool, hash_exclude=missing
    )


# ---------------------------------------------------------------------------------------------- timm


def _import_timm() -> Any:
    try:
        import timm
    except ImportError as err:
        raise EncoderError(
            "timm encoders need the optional extra: pip install 'napari-pathm3[timm]' (timm + a torchvision "
            "matching your torch)"
        ) from err
    return timm


def _timm_known(spec: str) -> tuple[dict[str, Any], Any]:
    """Model-card kwargs the hub config.json cannot express, and the pooling they document (features.cards:
    Virchow's class token + mean of the patch tokens, after Virchow2's 4 register tokens)."""
    from .cards import card_for, pool_for

    card = card_for(f"timm:{spec}")
    if spec.startswith("hf-hub:paige-ai/Virchow") and card is not None:
        from timm.layers import SwiGLUPacked

        return {"mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU}, pool_for(card)
    if spec == "hf-hub:MahmoodLab/UNI":
        return {"init_values": 1e-5, "dynamic_img_size": True}, None
    if spec == "hf-hub:bioptimus/H-optimus-0":
        return {"init_values": 1e-5, "dynamic_img_size": False}, None
    return {}, None


def _timm_encoder(model: Any, timm: Any, *, name: str, pool: Any) -> FrozenEncoder:
    cfg = timm.data.resolve_data_config({}, model=model)
    return FrozenEncoder(
        model,
        name=name,
        input_size=int(cfg["input_size"][-1]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        pool=pool,
    )


def load_timm(spec: str, *, name: str) -> FrozenEncoder:
    timm = _import_timm()
    kwargs, pool = _timm_known(spec)
    try:
        model = timm.create_model(spec, pretrained=True, num_classes=0, **kwargs)
    except Exception as err:
        repo = spec.removeprefix("hf-hub:") if spec.startswith("hf-hub:") else f"timm/{spec}"
        raise _hub_error(name, repo, err) from err
    return _timm_encoder(model, timm, name=name, pool=pool)


# ---------------------------------------------------------------------------------------------- local / torchvision


def load_local(path: Path, *, name: str) -> FrozenEncoder:
    """A folder with ``config.json`` + weights: timm (``"architecture"`` key, e.g. ``timm.models.save_for_hf``)
    or transformers (``"model_type"``, ``save_pretrained``)."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise EncoderError(f"{path}: not an encoder folder (expected config.json + model.safetensors)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as err:
        raise EncoderError(f"{cfg_file}: invalid JSON ({err})") from err
    if "architecture" in cfg:
        timm = _import_timm()
        try:
            model = timm.create_model(f"local-dir:{path}", pretrained=True, num_classes=0)
        except Exception as err:
            raise EncoderError(f"{path}: cannot load the timm model ({type(err).__name__}: {err})") from err
        return _timm_encoder(model, timm, name=name, pool=None)
    if "model_type" in cfg:
        return load_hf(str(path), name=name)
    raise EncoderError(
        f"{cfg_file}: neither a timm ('architecture') nor a transformers ('model_type') config"
    )


def load_torchvision(spec: str, *, name: str) -> FrozenEncoder:
    try:
        import torchvision
    except Exception as err:  # PyPI's torchvision can fail to import beside the CPU torch wheel
        raise EncoderError(
            f"encoder {name!r} needs torchvision, which could not be imported ({err})"
        ) from err
    try:
        weights = torchvision.models.get_model_weights(spec).DEFAULT
        model = torchvision.models.get_model(spec, weights=weights)
    except Exception as err:
        raise EncoderError(
            f"encoder {name!r}: cannot load torchvision model {spec!r} ({type(err).__name__}: {err})"
        ) from err
    for head in ("fc", "classifier", "heads", "head"):
        if hasattr(model, head):
            setattr(model, head, torch.nn.Identity())
            break
    tf = weights.transforms()
    size = int(tf.crop_size[0]) if hasattr(tf, "crop_size") else 224
    return FrozenEncoder(model, name=name, input_size=size, mean=tuple(tf.mean), std=tuple(tf.std))
