"""Loading a saved :class:`~napari_pathm3.model.pathm3.PathM3Model`: the checkpoint's config, tokenizers and
LM config, a shape check on the meta device before anything is allocated, then the tensors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._types import PathLike, ProgressFn
from ..config import PathM3Config
from ..errors import CheckpointError
from . import checkpoint as ckpt
from .device import resolve_device
from .language import build_language_model
from .qformer import is_text_side_key
from .verdict import read_verdict

if TYPE_CHECKING:
    from .pathm3 import PathM3Model

#: state-dict prefix of the caption LM's weights
LM_PREFIX = "language_model."


def _qformer_text_key(name: str) -> bool:
    return name.startswith("qformer.") and is_text_side_key(name[len("qformer.") :])


def load_pretrained(
    cls: type[PathM3Model],
    directory: PathLike,
    *,
    expected_feature_dim: int | None = None,
    expected_encoder: str | None = None,
    expected_classes: tuple[str, ...] | list[str] | None = None,
    device: str | torch.device = "cpu",
    text_side: bool = True,
    progress: ProgressFn | None = None,
) -> PathM3Model:
    """See :meth:`PathM3Model.from_pretrained`."""
    from .language import load_saved_lm_config
    from .tokenizer import load_saved_tokenizer

    path = Path(directory).expanduser()
    config = ckpt.model_config(path)  # validated by schema: one CheckpointError naming the key
    ckpt.check_compatibility(
        config,
        path=path,
        expected_feature_dim=expected_feature_dim,
        expected_encoder=expected_encoder,
        expected_classes=expected_classes,
    )
    try:
        # read without transformers where possible (scratch LMs): ~2 s less start-up
        q_tok = load_saved_tokenizer(path / "qformer_tokenizer")
        lm_tok = load_saved_tokenizer(path / "lm_tokenizer")
        lm_cfg = load_saved_lm_config(path / "language_model", config.language)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: tokenizer or LM config missing or invalid ({err}); re-save the checkpoint"
        ) from err
    except Exception as err:  # tokenizers/transformers raise bare Exception on a garbage file
        raise CheckpointError(
            f"{path}: tokenizer or LM config unreadable ({type(err).__name__}: {err}); re-save the checkpoint"
        ) from err
    skip = None if text_side else _qformer_text_key
    _check_sizes(cls, path, config, q_tok, lm_tok, lm_cfg, text_side=text_side, skip=skip)
    model = cls(
        config,
        qformer_tokenizer=q_tok,
        lm_tokenizer=lm_tok,
        lm_hf_config=lm_cfg,
        pretrained_init=False,
        qformer_text_side=text_side,
    )
    tensors = ckpt.load_tensors(path, skip=skip, progress=progress)
    stored_lm = any(k.startswith(LM_PREFIX) for k in tensors)
    ckpt.check_state_dict(
        model.state_dict(), tensors, path=path, optional_prefix=None if stored_lm else LM_PREFIX
    )
    if not stored_lm:  # frozen LM kept by id: reload its pretrained weights
        model.language_model, _ = build_language_model(
            config.language, fallback_tokenizer=config.qformer.tokenizer, tokenizer=lm_tok
        )
    model.load_state_dict(tensors, strict=stored_lm)
    model.checkpoint_dir = path.resolve()  # display name and the training verdict beside the weights
    model.provenance = ckpt.read_provenance(path)
    model.training_verdict = read_verdict(path)  # loaded with the weights: inference reads no training code
    return model.to(resolve_device(device)).eval()


def _check_sizes(
    cls: type[PathM3Model],
    path: Path,
    config: PathM3Config,
    q_tok: Any,
    lm_tok: Any,
    lm_cfg: Any,
    *,
    text_side: bool,
    skip: Any,
) -> None:
    """Build the model on the meta device (no memory) and compare its tensor shapes with the checkpoint's
    header: a config.json edited to other sizes fails here with a :class:`CheckpointError`, before a model of
    those sizes (gigabytes, for a typo) is allocated."""
    try:
        with torch.device("meta"):
            shadow = cls(
                config,
                qformer_tokenizer=q_tok,
                lm_tokenizer=lm_tok,
                lm_hf_config=lm_cfg,
                pretrained_init=False,
                qformer_text_side=text_side,
            )
        expected = {k: tuple(v.shape) for k, v in shadow.state_dict().items()}
    except Exception as err:  # the LM config (language_model/config.json) does not build a model
        raise CheckpointError(
            f"{path}: config.json and language_model/config.json do not build a model "
            f"({type(err).__name__}: {err}); re-save the checkpoint"
        ) from err
    del shadow
    ckpt.check_shapes(expected, path, optional_prefix=LM_PREFIX, skip=skip)
