"""Run a model over a set of bags: class probabilities, losses, generated captions, and their metrics."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._types import CancelToken, PathLike, check_cancel
from .data import IGNORE_INDEX, BagDataset, BagRecord, SlideBag, _Indexed, collate_indexed
from .ddp import DistInfo, gather_objects

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Per-bag outputs, in dataset order."""

    slide_ids: list[str] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # IGNORE_INDEX: no class
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (N, C)
    references: list[str | None] = field(default_factory=list)
    captions: list[str] | None = None  # generated, when asked for
    loss: float = float("nan")  # mean eq. (4) loss over batches with targets


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


def predict(
    model: Any,
    dataset: Sequence[SlideBag],
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

    Under DDP each process takes a shard and the results are gathered on every process.
    """
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    from ..model.device import autocast

    dist = dist or DistInfo()
    core = getattr(model, "module", model)
    mode = mode or core.config.mode
    device = device or core.device
    sampler = DistributedSampler(
        _Indexed(dataset), num_replicas=dist.world_size, rank=dist.rank, shuffle=False
    )
    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, sampler=sampler, collate_fn=collate_indexed)
    was_training = core.training
    core.eval()
    rows: list[tuple[int, str, int, np.ndarray, str | None, str | None]] = []
    loss_sum, loss_n = 0.0, 0
    try:
        with torch.no_grad():
            for batch in loader:
                check_cancel(cancel)
                kw = model_inputs(batch, mode, core.config.alpha, device=device)
                with autocast(device, enabled=bf16):
                    out = core(**kw)
                if out.loss is not None and math.isfinite(float(out.loss)):
                    loss_sum += float(out.loss) * len(batch.indices)
                    loss_n += len(batch.indices)
                probs = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
                gen: list[str | None] = [None] * len(batch.indices)
                if generate:
                    gen = list(core.generate_captions(kw["features"], kw["mask"], **(generate_kwargs or {})))
                for j, idx in enumerate(batch.indices):
                    rows.append(
                        (idx, batch.slide_ids[j], int(batch.labels[j]), probs[j], batch.captions[j], gen[j])
                    )
    finally:
        core.train(was_training)
    parts = gather_objects((rows, loss_sum, loss_n), dist)
    merged = {r[0]: r for p in parts for r in p[0]}  # DistributedSampler pads by repeating bags: de-duplicate
    ordered = [merged[i] for i in sorted(merged)]
    total_n = sum(p[2] for p in parts)
    c = core.config.num_classes
    return Predictions(
        slide_ids=[r[1] for r in ordered],
        labels=np.asarray([r[2] for r in ordered], dtype=np.int64),
        probabilities=np.stack([r[3] for r in ordered]) if ordered else np.zeros((0, c)),
        references=[r[4] for r in ordered],
        captions=[r[5] or "" for r in ordered] if generate else None,
        loss=sum(p[1] for p in parts) / total_n if total_n else float("nan"),
    )


def metrics_of(pred: Predictions, num_classes: int) -> dict[str, Any]:
    """Classification metrics over labelled bags, caption metrics over bags with a reference and a
    generated caption, and the loss."""
    from .metrics import caption_metrics, classification_metrics

    out: dict[str, Any] = {"loss": pred.loss, "n": len(pred.slide_ids)}
    has = pred.labels != IGNORE_INDEX
    if has.any():
        out.update(classification_metrics(pred.labels[has], pred.probabilities[has], num_classes=num_classes))
    if pred.captions is not None:
        pairs = [(r, h) for r, h in zip(pred.references, pred.captions, strict=True) if r]
        if pairs:
            out.update(caption_metrics([r for r, _ in pairs], [h for _, h in pairs]))
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
) -> dict[str, Any]:
    """Test metrics of a model (or a checkpoint folder) on bags or manifest records.

    Args:
        model: a ``PathM3Model`` or a folder written by ``save_pretrained``.
        data: bags, manifest records, or a :class:`BagDataset`.
        features_dir: where record keys are looked up.
        mode: classification inputs (default: the model's mode). ``image_text``/``text`` use the reference
            captions as text input, as in the paper's image & text inference.
        generate: generate captions (image only) and add BLEU/METEOR/ROUGE-L/CIDEr.
        return_predictions: add ``"predictions"``: per-bag id, label, probabilities and captions.

    Returns:
        A JSON-serialisable dict of metrics.
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
    pred = predict(model, ds, batch_size=batch_size, generate=generate, device=dev, cancel=cancel,
                   generate_kwargs=generate_kwargs)  # fmt: skip
    out = metrics_of(pred, model.config.num_classes)
    out["mode"] = model.config.mode
    out["class_names"] = list(model.config.class_names)
    if return_predictions:
        out["predictions"] = [
            {"slide_id": s, "label": int(lab), "probabilities": p.tolist(), "reference": r,
             "caption": None if pred.captions is None else pred.captions[i]}
            for i, (s, lab, p, r) in enumerate(zip(pred.slide_ids, pred.labels, pred.probabilities,
                                                   pred.references, strict=True))
        ]  # fmt: skip
    return out
