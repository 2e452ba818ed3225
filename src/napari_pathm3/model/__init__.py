"""PathM3 model stack (torch): correlation module, Q-Former, classifier, caption LM, checkpoints.

>>> from napari_pathm3.model import build_model
>>> model = build_model(PathM3Config.tiny(feature_dim=16, class_names=("a", "b")))  # doctest: +SKIP
>>> out = model(features, mask, captions=captions, labels=labels, text=captions)  # doctest: +SKIP
>>> out.loss.backward()  # doctest: +SKIP

Importing this package imports torch, but not transformers. Loading a checkpoint whose caption LM was built
from scratch (T5 or GPT-2, the default presets) does not import it either: the Q-Former, the LM, its decoding
and the saved tokenizers are plain torch / ``tokenizers`` (:mod:`.t5`, :mod:`.gpt2`, :mod:`.generation`,
:mod:`.tokenizer`). transformers is imported to build a new model (its initial weights) and for pretrained LMs
or BERT initialisations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ..config import PathM3Config
    from .pathm3 import Classification, PathM3Model, PathM3Output

__all__ = [
    "Classification",
    "PathM3Model",
    "PathM3Output",
    "autocast",
    "build_model",
    "resolve_device",
]

_LAZY = {
    "PathM3Model": "pathm3",
    "PathM3Output": "pathm3",
    "Classification": "pathm3",
    "autocast": "device",
    "resolve_device": "device",
    "maybe_compile": "device",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(
    config: PathM3Config, *, device: str | torch.device = "cpu", compile: bool = False
) -> PathM3Model:
    """Build a PathM3 model from its config (pretrained LM/BERT named there are loaded).

    Args:
        config: the model config; :meth:`PathM3Config.tiny` for tests.
        device: "auto" (cuda, then mps, then cpu), "cpu", "cuda", ...
        compile: ``torch.compile`` the correlation module and Q-Former.

    Returns:
        The model in train mode on ``device``.
    """
    from .device import maybe_compile, resolve_device
    from .pathm3 import PathM3Model

    model = PathM3Model(config).to(resolve_device(device))
    if compile:
        maybe_compile(model.correlation, True)
        maybe_compile(model.qformer, True)
    return model.train()
