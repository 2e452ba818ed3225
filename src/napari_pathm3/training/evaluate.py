"""Run a model over a set of bags: class probabilities, losses, generated captions, and their metrics.

Classification results are **image-only** under the plain keys (``accuracy``, ``balanced_accuracy``, ``macro_f1``,
``auc``, ``confusion_matrix``, ``loss``): the Q-Former gets no text, as for a new slide (``text=None``). Models that
read text (modes ``image_text`` and ``text``) are also scored with the reference caption as input; those results
carry the prefix ``text_conditioned_`` (the paper's "image & text" and "text only" rows) and are never the
headline: a new slide has no caption. A text-only model has no image-only path, so it has no plain keys.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from .._types import CancelToken, PathLike, check_cancel
from .data import IGNORE_INDEX, BagDataset, BagRecord, Batch, SlideBag, _Indexed, collate_indexed
from .ddp import DistInfo, gather_objects

log = logging.getLogger(__name__)

TEXT_PREFIX = "text_conditioned_"
TEXT_INPUTS = {"image_text": "image + reference caption", "text": "reference caption only"}


@dataclass
class Predictions:
    """Per-bag outputs, in dataset order.

    ``probabilities`` are image-only (NaN rows for a text-only model); ``text_probabilities`` are conditioned
    on the reference caption (modes ``image_text``/``text``; NaN rows for bags without a caption), else None.
    """

    slide_ids: list[str] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # IGNORE_INDEX: no class
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (N, C), image only
    references: list[str | None] = field(default_factory=list)
    captions: list[str] | None = None  # generated, when asked for
    loss: float = float("nan")  # mean eq. (4) loss of the image-only pass over bags with targets
    text_probabilities: np.ndarray | None = None  # (N, C), text-conditioned
    text_loss: float = float("nan")  # mean eq. (4) loss of the text-conditioned pass
    mode: str = "image"


def model_inputs(batch: Any, mode: str, alpha: float, *, device: Any) -> dict[str, Any]:
    """Keyword arguments of ``PathM3Model.forward`` for a batch in a given mode.

    Captions are the LM targets (bags without one are masked out of L_G by the model, α < 1) and the
    Q-Former text input in modes ``image_text`` (a bag without one takes the image-only path) and ``text``
    (where every bag needs one); labels are passed when at least one bag has a class.
    """
    caps = batch.captions
    has_cap = batch.caption_mask
    if mode == "text" and not bool(has_cap.all()):
        from ..errors import PathM3Error

        missing = [s for s, h in zip(batch.slide_ids, has_cap.tolist(), strict=True) if not h][:3]
        raise PathM3Error(f"mode 'text' needs a caption for every bag; missing for {missing}")
    labels = batch.labels.to(device)
    return {
        "features": batch.features.to(device),
        "mask": batch.mask.to(device),
        "labels": labels if bool((batch.labels != IGNORE_INDEX).any()) else None,
        "captions": list(caps) if bool(has_cap.any()) and alpha < 1.0 else None,
        "text": list(caps) if mode in ("image_text", "text") else None,
    }


def _with_captions(batch: Batch) -> tuple[list[int], Batch | None]:
    """Rows of ``batch`` that have a (non-blank) caption, and the sub-batch of them (None when there is none)."""
    rows = [j for j, c in enumerate(batch.captions) if c is not None and c.strip()]
    if not rows:
        return rows, None
    if len(rows) == len(batch.captions):
        return rows, batch
    sub = Batch(
        batch.features[rows],
        batch.mask[rows],
        batch.labels[rows],
        [batch.captions[j] for j in rows],
        [batch.slide_ids[j] for j in rows],
    )
    return rows, sub


def _run(core: Any, kw: dict[str, Any], device: Any, bf16: bool) -> tuple[np.ndarray, float | None]:
    """Softmax probabilities and the finite loss (or None) of one forward pass."""
    import torch

    from ..model.device import autocast

    with autocast(device, enabled=bf16):
        out = core(**kw)
    probs = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
    loss = float(out.loss) if out.loss is not None and math.isfinite(float(out.loss)) else None
    return probs, loss


def predict(
    model: Any,
    dataset: Sequence[SlideBag] | BagDataset,
    *,
    batch_size: int = 1,
    mode: str | None = None,
    generate: bool = False,
    device: Any = None,
    bf16: bool = True,
    dist: DistInfo | None = None,
    cancel: CancelToken | None = None,
    generate_kwargs: dict[str, Any] | None = None,
) -> Predictions:
    """Evaluate ``model`` (a ``PathM3Model``, or DDP-wrapped) on every bag of ``dataset``.

    Every model with an image path is run without text (image-only probabilities and loss); a model of mode
    ``image_text``/``text`` is also run with each bag's reference caption as text input. Under DDP each
    process takes a shard and the results are gathered on every process.
    """
    import torch
    from torch.utils.data import DataLoader, Dataset, DistributedSampler

    dist = dist or DistInfo()
    core = getattr(model, "module", model)
    mode = mode or core.config.mode
    indexed = cast("Dataset[tuple[int, SlideBag]]", _Indexed(dataset))  # map-style: __len__, __getitem__
    sampler: DistributedSampler[tuple[int, SlideBag]] = DistributedSampler(
        indexed, num_replicas=dist.world_size, rank=dist.rank, shuffle=False
    )
    loader: DataLoader[tuple[int, SlideBag]] = DataLoader(
        indexed, batch_size=batch_size, sampler=sampler, collate_fn=collate_indexed
    )
    run = _BatchRun(core, mode, device or core.device, bf16, generate, generate_kwargs or {})
    was_training = core.training
    core.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                check_cancel(cancel)
                run.add(batch)
    finally:
        core.train(was_training)
    return _gathered(run, dist, mode, generate, core.config.num_classes)


class _BatchRun:
    """Per-bag rows and loss sums of :func:`predict`, one batch at a time."""

    def __init__(
        self, core: Any, mode: str, device: Any, bf16: bool, generate: bool, generate_kwargs: dict[str, Any]
    ) -> None:
        self.core, self.mode, self.device, self.bf16 = core, mode, device, bf16
        self.generate, self.generate_kwargs = generate, generate_kwargs
        self.rows: list[tuple] = []
        self.sums = {"image": [0.0, 0], "text": [0.0, 0]}

    def _loss(self, key: str, loss: float | None, count: int) -> None:
        if loss is not None:
            self.sums[key][0] += loss * count
            self.sums[key][1] += count

    def add(self, batch: Any) -> None:
        core, device = self.core, self.device
        b, c = len(batch.indices), core.config.num_classes
        probs = np.full((b, c), np.nan)
        tprobs = np.full((b, c), np.nan) if self.mode in TEXT_INPUTS else None
        if self.mode != "text":  # the image-only pass: what a new slide gets
            kw = model_inputs(batch, "image", core.config.alpha, device=device)
            probs, loss = _run(core, kw, device, self.bf16)
            self._loss("image", loss, b)
        if tprobs is not None:
            have, sub = _with_captions(batch)
            if sub is not None:
                kw = model_inputs(sub, self.mode, core.config.alpha, device=device)
                tprobs[have], loss = _run(core, kw, device, self.bf16)
                self._loss("text", loss, len(have))
        gen: list[str | None] = [None] * b
        if self.generate:
            features, mask = batch.features.to(device), batch.mask.to(device)
            gen = list(core.generate_captions(features, mask, **self.generate_kwargs))
        for j, idx in enumerate(batch.indices):
            text_p = None if tprobs is None else tprobs[j]
            label = int(batch.labels[j])
            self.rows.append((idx, batch.slide_ids[j], label, probs[j], text_p, batch.captions[j], gen[j]))


def _gathered(run: _BatchRun, dist: DistInfo, mode: str, generate: bool, c: int) -> Predictions:
    """Every process's rows (DDP shards) merged in dataset order."""
    parts = gather_objects((run.rows, run.sums), dist)
    merged = {r[0]: r for p in parts for r in p[0]}  # DistributedSampler pads by repeating bags: de-duplicate
    ordered = [merged[i] for i in sorted(merged)]

    def mean_loss(key: str) -> float:
        n = sum(p[1][key][1] for p in parts)
        return sum(p[1][key][0] for p in parts) / n if n else float("nan")

    def stacked(k: int) -> np.ndarray:
        return np.stack([r[k] for r in ordered]) if ordered else np.zeros((0, c))

    return Predictions(
        slide_ids=[r[1] for r in ordered],
        labels=np.asarray([r[2] for r in ordered], dtype=np.int64),
        probabilities=stacked(3),
        references=[r[5] for r in ordered],
        captions=[r[6] or "" for r in ordered] if generate else None,
        loss=mean_loss("image"),
        text_probabilities=stacked(4) if mode in TEXT_INPUTS else None,
        text_loss=mean_loss("text"),
        mode=mode,
    )


def metrics_of(pred: Predictions, num_classes: int, *, tokenizer: str = "paper") -> dict[str, Any]:
    """Image-only classification metrics over labelled bags (plain keys), text-conditioned ones under
    ``text_conditioned_*`` (models that read text), caption metrics over bags with a reference and a
    generated caption, and the losses."""
    from .metrics import caption_metrics, classification_metrics

    out: dict[str, Any] = {"loss": pred.loss, "n": len(pred.slide_ids)}
    labelled = pred.labels != IGNORE_INDEX
    if pred.mode != "text" and labelled.any():
        out.update(
            classification_metrics(
                pred.labels[labelled], pred.probabilities[labelled], num_classes=num_classes
            )
        )
    if pred.text_probabilities is not None:
        ok = labelled & ~np.isnan(pred.text_probabilities).any(axis=1)
        out[f"{TEXT_PREFIX}loss"] = pred.text_loss
        out[f"{TEXT_PREFIX}n"] = int(ok.sum())
        if ok.any():
            tc = classification_metrics(pred.labels[ok], pred.text_probabilities[ok], num_classes=num_classes)
            out.update({f"{TEXT_PREFIX}{k}": v for k, v in tc.items()})
    if pred.captions is not None:
        pairs = [(r, h) for r, h in zip(pred.references, pred.captions, strict=True) if r]
        if pairs:
            out.update(caption_metrics([r for r, _ in pairs], [h for _, h in pairs], tokenizer=tokenizer))
    return out


def evaluate_model(
    model: Any,
    data: Sequence[SlideBag | BagRecord] | BagDataset,
    *,
    features_dir: PathLike | None = None,
    mode: str | None = None,
    generate: bool = True,
    batch_size: int = 1,
    device: str = "auto",
    cancel: CancelToken | None = None,
    generate_kwargs: dict[str, Any] | None = None,
    return_predictions: bool = False,
    tokenizer: str = "paper",
) -> dict[str, Any]:
    """Test metrics of a model (or a checkpoint folder) on bags or manifest records.

    Args:
        model: a ``PathM3Model`` or a folder written by ``save_pretrained``.
        data: bags, manifest records, or a :class:`BagDataset`.
        features_dir: where record keys are looked up.
        mode: the model's mode to evaluate in (default: its own). The plain classification keys are always
            image-only; ``image_text``/``text`` add ``text_conditioned_*`` keys that use the reference captions
            as input (the paper's image & text / text only rows; not available for a new slide).
        generate: generate captions (image only) and add BLEU-1..4, ``meteor_nltk``, ROUGE-L, CIDEr-D.
        return_predictions: add ``"predictions"``: per-bag id, label, probabilities and captions.
        tokenizer: caption tokenisation (``"paper"`` or ``"words"``, see :mod:`.metrics`).

    Returns:
        A JSON-serialisable dict of metrics. ``classification_inputs`` says what the plain keys used.
    """
    from ..model import PathM3Model
    from ..model.device import resolve_device

    if isinstance(model, (str, Path)):
        model = PathM3Model.from_pretrained(model, device=device)
    dev = resolve_device(device)
    model = model.to(dev)
    if mode is not None and mode != model.config.mode:
        import dataclasses

        model.config = dataclasses.replace(model.config, mode=mode)
    ds = (
        data
        if isinstance(data, BagDataset)
        else BagDataset(list(data), model.config.class_names, features_dir)
    )
    pred = predict(
        model,
        ds,
        batch_size=batch_size,
        generate=generate,
        device=dev,
        cancel=cancel,
        generate_kwargs=generate_kwargs,
    )
    out = metrics_of(pred, model.config.num_classes, tokenizer=tokenizer)
    out["mode"] = model.config.mode
    out["classification_inputs"] = (
        "image only (no text), as for a new slide"
        if pred.mode != "text"
        else "none: a text-only model cannot classify an image; see text_conditioned_*"
    )
    if pred.mode in TEXT_INPUTS:
        out[f"{TEXT_PREFIX}inputs"] = (
            f"{TEXT_INPUTS[pred.mode]}: the reference caption is a classifier input "
            "(the paper's image & text / text only rows); a new slide has no caption"
        )
    if pred.captions is not None:
        out["caption_tokenizer"] = tokenizer
    out["class_names"] = list(model.config.class_names)
    out["provenance"] = _provenance_of(model)  # what run made these weights: after the plain figures
    head = ("mode", "classification_inputs", "n", "loss")
    order = {k: i for i, k in enumerate(head)}  # headline first, text-conditioned results after the rest
    out = dict(
        sorted(
            out.items(),
            key=lambda kv: order.get(
                kv[0], len(head) + (0.5 if kv[0] == "provenance" else kv[0].startswith(TEXT_PREFIX))
            ),
        )
    )
    if return_predictions:
        out["predictions"] = [_prediction_row(pred, i) for i in range(len(pred.slide_ids))]
    return out


def _provenance_of(model: Any) -> dict[str, Any]:
    """What run made the evaluated weights (the checkpoint's record), and the mode it was evaluated in."""
    from ..model.provenance import provenance_of

    return {**provenance_of(model), "evaluated_mode": model.config.mode}


def _prediction_row(pred: Predictions, i: int) -> dict[str, Any]:
    def probs(p: np.ndarray | None) -> list[float] | None:
        return None if p is None or np.isnan(p[i]).any() else p[i].tolist()

    row: dict[str, Any] = {
        "slide_id": pred.slide_ids[i],
        "label": int(pred.labels[i]),
        "probabilities": probs(pred.probabilities),
        "reference": pred.references[i],
        "caption": None if pred.captions is None else pred.captions[i],
    }
    if pred.text_probabilities is not None:
        row[f"{TEXT_PREFIX}probabilities"] = probs(pred.text_probabilities)
    return row
