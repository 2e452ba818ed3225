"""The pieces a training run is built from: datasets, seeding, the model, the log and the ``last/`` checkpoint."""

from __future__ import annotations

import csv
import dataclasses
import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._types import PathLike
from ..config import PathM3Config, TrainConfig
from ..errors import PathM3Error
from ._state import save_trainer_state
from .data import BagDataset, BagRecord, SlideBag

log = logging.getLogger(__name__)


def _as_dataset(data: Any, class_names: Sequence[str], features_dir: PathLike | None, **kw: Any) -> Any:
    if data is None or isinstance(data, BagDataset) or not isinstance(data, Sequence):
        return data
    items = list(data)
    if items and not isinstance(items[0], (SlideBag, BagRecord)):
        return data  # some other map-style dataset of SlideBag
    return BagDataset(items, class_names, features_dir, **kw)


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _write_log(path: Path, history: list[dict[str, Any]]) -> None:
    cols: list[str] = []
    for rec in history:
        cols += [k for k, v in rec.items() if k not in cols and not isinstance(v, (list, dict))]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(history)
    tmp.replace(path)


def _save_last(core: Any, optimizer: Any, out: Path, meta: dict[str, Any]) -> None:
    """Model + trainer state into ``out/last`` as one unit (built beside it, then swapped in)."""
    tmp = out / ".last.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    core.save_pretrained(tmp)
    save_trainer_state(tmp, optimizer=optimizer, meta=meta)
    last = out / "last"
    old = out / ".last.old"
    if last.exists():
        shutil.rmtree(old, ignore_errors=True)
        last.rename(old)
    tmp.rename(last)
    shutil.rmtree(old, ignore_errors=True)


def _captions_of(dataset: Any) -> list[str]:
    """Reference captions of a training set (manifest records or bags) without reading any features."""
    items = getattr(dataset, "items", dataset)
    try:
        return [str(c) for c in (getattr(it, "caption", None) for it in items) if c]
    except TypeError:
        return []


def _build_model(model_or_config: Any, config: TrainConfig, device: Any, train_ds: Any = None) -> Any:
    overrides = {k: v for k, v in (("mode", config.mode), ("alpha", config.alpha)) if v is not None}
    if isinstance(model_or_config, PathM3Config):
        from ..model.device import resolve_device
        from ..model.language import WORDS, build_word_tokenizer
        from ..model.pathm3 import PathM3Model

        cfg = dataclasses.replace(model_or_config, **overrides)
        lm_tok = None
        if cfg.language.tokenizer == WORDS and cfg.language.name is None:
            captions = _captions_of(train_ds)
            if not captions:
                log.warning("no training captions: the word vocabulary of the caption LM is empty")
            lm_tok = build_word_tokenizer(captions)
        try:
            model = PathM3Model(cfg, lm_tokenizer=lm_tok)
        except OSError as err:  # offline, or no such model on the hub: one line, not a traceback
            name = cfg.language.name or cfg.qformer.text_init or cfg.qformer.tokenizer
            raise PathM3Error(
                f"cannot load the pretrained weights of {name!r} (offline, or not a local folder / hub id); "
                "train a model with a scratch caption LM instead (CLI: --size small; API/GUI: model size "
                "'small'), or pass --lm FOLDER with the downloaded weights"
            ) from err
        return model.to(resolve_device(device)).train()
    model = model_or_config
    if overrides:
        model.config = dataclasses.replace(model.config, **overrides)
    return model.to(device).train()
