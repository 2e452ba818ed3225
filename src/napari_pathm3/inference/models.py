"""The model side of inference: a checkpoint folder -> the model, its encoder, its name, and the two passes
(classification with attention, caption generation) over one bag of patch features."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._types import PathLike, ProgressFn, Stage, within
from ..config import DEFAULT_ENCODER
from ..errors import CheckpointError

if TYPE_CHECKING:
    from ..features.encoders import FrozenEncoder
    from ..model.pathm3 import PathM3Model


def load_model(
    model: PathM3Model | PathLike,
    *,
    device: str = "auto",
    text_side: bool = True,
    progress: ProgressFn | None = None,
) -> PathM3Model:
    """A ``PathM3Model`` (moved to ``device`` unless that is ``"auto"``) or a checkpoint folder -> the
    model in eval mode. ``"demo"`` is not resolved here: :func:`napari_pathm3.api.load_model` does that.
    ``text_side=False``: a folder is loaded without the Q-Former's text-only weights (image-only use).
    ``progress``: ``LOAD_MODEL`` events with the bytes of the weights read so far (a folder only)."""
    from ..device import resolve_device
    from ..model.pathm3 import PathM3Model

    if isinstance(model, PathM3Model):
        if device not in (None, "auto"):
            model = model.to(resolve_device(device))
        return model.eval()
    if not isinstance(model, (str, Path)):
        raise TypeError(f"model must be a PathM3Model or a checkpoint folder, got {type(model).__name__}")
    path = Path(model).expanduser()
    if not path.is_dir():
        hint = " (the demo model: napari_pathm3.api.load_model('demo'))" if str(model) == "demo" else ""
        raise CheckpointError(
            f"{path}: not a folder; pick a checkpoint folder written by save_pretrained{hint}"
        )
    try:
        return PathM3Model.from_pretrained(
            path, device=resolve_device(device), text_side=text_side, progress=progress
        )
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # corrupt files surface as many types
        raise CheckpointError(f"{path}: cannot load the checkpoint ({type(err).__name__}: {err})") from err


def load_encoder(
    encoder: FrozenEncoder | str | None, *, model: PathM3Model, device: str = "auto"
) -> FrozenEncoder:
    """The patch encoder: ``encoder`` (name or loaded), else the one recorded in the model's config."""
    from ..device import resolve_device
    from ..features.encoders import FrozenEncoder, cached_encoder, canonical_name

    if isinstance(encoder, FrozenEncoder):
        return encoder
    want = model.config.encoder_name
    name = encoder or want or DEFAULT_ENCODER
    if want and canonical_name(name) != canonical_name(want):
        raise CheckpointError(
            f"the model was trained on {want!r} features, not {name!r}; pick {want!r} as encoder "
            "(or leave the encoder on the model's own)"
        )
    return cached_encoder(canonical_name(name), str(resolve_device(device)))


def provenance_of(model: PathM3Model) -> dict[str, Any]:
    """What run made the model (:func:`napari_pathm3.model.provenance.provenance_of`)."""
    from ..model.provenance import provenance_of as _of

    return _of(model)


def model_name(model: PathM3Model) -> str:
    """Display name: the demo's one name, else the checkpoint folder (``run/best`` for ``best``/``last``)."""
    from ..result import DEMO_MODEL_NAME

    if getattr(model.config, "demo", False):
        return DEMO_MODEL_NAME
    source = getattr(model, "checkpoint_dir", None)
    if not source:
        return type(model).__name__
    p = Path(source)
    return f"{p.parent.name}/{p.name}" if p.name in ("best", "last") else p.name


def model_warnings(model: PathM3Model) -> tuple[str, ...]:
    """Warnings of the training verdict recorded with the model (loaded with it from its checkpoint, or the
    verdict of a model trained in this process)."""
    from ..model.verdict import verdict_of

    verdict = verdict_of(model)
    return () if verdict is None else verdict.warnings


def honesty(model: PathM3Model, features: np.ndarray) -> dict[str, Any]:
    """The result fields that say how far to trust it: the verdict's warnings plus the out-of-distribution
    warning when the slide is far from the training features, that check, and the model's recorded accuracy."""
    from ..model.confidence import model_accuracy, ood_check

    check = ood_check(model, features)
    warnings = model_warnings(model)
    if check is not None and check.far:
        warnings += (check.warning(),)
    return {
        "warnings": warnings,
        "out_of_distribution": None if check is None else check.to_dict(),
        "model_accuracy": model_accuracy(model),
    }


def _tensor(model: PathM3Model, features: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))[None].to(model.device)


def classify(
    model: PathM3Model, features: np.ndarray, *, text: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities (C,), query_attention (q, n))``; attention is uniform in text-only mode."""
    out = model.classify(_tensor(model, features), text=[text] if text else None)
    probs = out.probabilities[0].float().cpu().numpy()
    n = features.shape[0]
    if out.query_attention is None:
        q = int(model.config.qformer.num_query_tokens)
        return probs, np.full((q, n), 1.0 / n, np.float32)
    return probs, out.query_attention[0].float().cpu().numpy()


def generate_caption(
    model: PathM3Model,
    features: np.ndarray,
    *,
    max_new_tokens: int | None = None,
    progress: ProgressFn | None = None,
) -> str:
    """The caption of one bag; ``progress``: its decoding steps, as events within the ``CAPTION`` stage."""
    caps = model.generate_captions(
        _tensor(model, features), max_new_tokens=max_new_tokens, progress=within(progress, Stage.CAPTION)
    )
    return str(caps[0]).strip() if caps else ""
