"""The trainer: AdamW with linear warm-up + cosine decay (Table 6), padded bag batches, gradient accumulation,
bf16 autocast on CUDA, early stopping, best/last checkpoints, exact resume, DDP under ``torchrun``.

Loss: eq. (4) ``α·L_cls + (1−α)·L_G`` computed by the model; α and the mode (``image``, ``image_text``,
``text``) come from ``PathM3Config`` unless ``TrainConfig`` overrides them.

Output folder::

    out_dir/train_config.json   the TrainConfig
    out_dir/log.csv             one row per epoch (train losses, lr, validation metrics)
    out_dir/best/               save_pretrained() of the best epoch by ``val_metric``
    out_dir/last/               save_pretrained() + trainer_state.{safetensors,json} of the last epoch

Learning-rate schedule (per optimiser step): linear from ``optim.warmup_lr`` to ``optim.lr`` over
``min(optim.warmup_steps, warmup_max_fraction × total steps)`` steps, then cosine to ``min_lr``. The cap
keeps short runs (a few hundred steps: most region/PatchGastric runs) from ending inside the 1000-step
warm-up of the paper. ``TrainConfig.lr_schedule="lavis"`` (the ``paper`` preset) is BLIP-2's trainer instead:
warm-up during the first epoch only, then a cosine per epoch (:func:`lavis_lr_at`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._types import CancelToken, PathLike, ProgressFn, Stage, check_cancel, report
from ..config import TrainConfig
from ..errors import Cancelled, NonFiniteError
from ..jsonfile import write_json_atomic
from ..model.verdict import TrainingVerdict
from . import ddp
from ._setup import (
    _captions_of,
    _device_and_processes,
    _Placement,
    _prepare,
    _remove_old_best,
    _resume,
    _Run,
    _save_last,
    _write_log,
)
from .evaluate import metrics_of, model_inputs, predict
from .verdict import combined_score, judge_best

log = logging.getLogger(__name__)

MetricsFn = Callable[[dict[str, Any]], None]
LOWER_IS_BETTER = {"loss"}


@dataclass
class TrainResult:
    """What a training run produced. ``model`` is the trained model (last epoch) in this process."""

    out_dir: Path
    best_dir: Path
    last_dir: Path
    best_metric: float
    best_epoch: int
    epochs_run: int
    step: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    model: Any = None
    warnings: list[str] = field(default_factory=list)  # "this model has not learned to caption" and the like
    verdict: dict[str, Any] = field(default_factory=dict)  # also in best/training_verdict.json


def lr_at(step: int, *, lr: float, warmup_lr: float, warmup: int, total: int, min_lr: float) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then cosine decay to ``min_lr``."""
    if step < warmup:
        return warmup_lr + (lr - warmup_lr) * step / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))


def lavis_lr_at(
    step: int,
    *,
    lr: float,
    warmup_lr: float,
    warmup_steps: int,
    steps_per_epoch: int,
    epochs: int,
    min_lr: float,
) -> float:
    """Learning rate of optimiser step ``step`` under LAVIS's ``linear_warmup_cosine_lr`` (BLIP-2's trainer):
    epoch 0 warms up linearly over ``warmup_steps`` (capped at ``lr``; a short first epoch ends the warm-up
    early), every later epoch e runs at ``min_lr + (lr - min_lr)(1 + cos(pi e / epochs)) / 2``."""
    epoch = step // max(1, steps_per_epoch)
    if epoch == 0:
        return min(lr, warmup_lr + (lr - warmup_lr) * step / max(warmup_steps, 1))
    return (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)) + min_lr


def _scheduled_lr(run: _Run) -> float:
    if run.config.lr_schedule == "lavis":
        o = run.core.config.optim
        return lavis_lr_at(
            run.state.step,
            lr=o.lr,
            warmup_lr=o.warmup_lr,
            warmup_steps=o.warmup_steps,
            steps_per_epoch=run.steps_per_epoch,
            epochs=run.config.epochs,
            min_lr=run.config.min_lr,
        )
    return lr_at(run.state.step, **run.schedule)


def _better(value: float, best: float, metric: str, min_delta: float) -> bool:
    if not math.isfinite(value):
        return False
    if not math.isfinite(best):
        return True
    return value < best - min_delta if metric in LOWER_IS_BETTER else value > best + min_delta


def train(
    model_or_config: Any,
    train_set: Any,
    val_set: Any = None,
    config: TrainConfig | None = None,
    *,
    out_dir: PathLike,
    features_dir: PathLike | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    metrics_callback: MetricsFn | None = None,
    cancel: CancelToken | None = None,
    epoch_log: MetricsFn | None = None,
    caption_style: str = "as given",
) -> TrainResult:
    """Train a PathM3 model on bags and keep the best epoch by a validation metric.

    Args:
        model_or_config: a ``PathM3Config`` (a model is built) or a ``PathM3Model`` (e.g. fine-tuning).
        train_set: :class:`SlideBag` s (e.g. from ``bags_from_regions``), manifest :class:`BagRecord` s
            (read from ``features_dir``), or a :class:`BagDataset`.
        val_set: the same kinds, or ``None`` (then the best epoch is the one with the lowest training loss).
        config: epochs, batch geometry, early stopping, seed, device; optimiser values come from
            ``model.config.optim``.
        out_dir: checkpoints and logs (see the module docstring).
        features_dir: where manifest keys are looked up.
        resume: continue from ``out_dir/last`` (model, optimiser, schedule, RNG, history) when present.
        progress: a ``Stage.TRAIN`` event (optimiser steps done of all, with the epoch) after optimiser steps,
            ``Stage.VALIDATE`` before each validation.
        metrics_callback: called with each epoch's record (the ``log.csv`` row plus the confusion matrix).
        epoch_log: called with each epoch's record on the main process (the CLI prints one line per epoch).
        caption_style: how the captions were prepared (PatchGastric "paper"/"raw"), recorded in the
            checkpoints' provenance.
        cancel: polled between micro-batches; a cancelled run raises :class:`Cancelled` and keeps the
            checkpoints of the finished epochs (``resume=True`` continues from there).

    Returns:
        :class:`TrainResult` (``result.best_dir`` loads with ``PathM3Model.from_pretrained``).
    """
    from ..threads import apply_thread_policy

    apply_thread_policy()  # torch's default threads oversubscribe a small shared CPU (~10x slower per step)
    config = config or TrainConfig()
    out = Path(out_dir)
    device, dist = _device_and_processes(config)
    try:
        run = _prepare(
            model_or_config,
            (train_set, val_set),
            config,
            out,
            _Placement(features_dir, device, dist),
            caption_style,
        )
        if not (resume and _resume(run)) and dist.is_main:
            _remove_old_best(out)
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / "train_config.json", config.to_dict(), sort_keys=True)
        for epoch in range(run.state.epoch, config.epochs):
            if run.state.stopped_early:
                break
            t0 = time.perf_counter()
            record = _train_epoch(run, epoch, progress, cancel)
            _validate_and_checkpoint(
                run,
                epoch,
                record,
                t0,
                _Hooks(progress, cancel, metrics_callback, epoch_log),
            )
        return _finish(run)
    except Cancelled as err:
        raise Cancelled(
            f"training cancelled; finished epochs are in {out / 'last'} (resume=True continues)"
        ) from err
    finally:
        ddp.shutdown(dist)


def _train_epoch(
    run: _Run, epoch: int, progress: ProgressFn | None, cancel: CancelToken | None
) -> dict[str, Any]:
    """One pass over the training bags; returns the epoch's record (epoch, step, lr, mean training losses)."""
    config, core, optimizer = run.config, run.core, run.optimizer
    run.sampler.set_epoch(epoch)
    if hasattr(run.train_ds, "reseed"):
        run.train_ds.reseed(epoch)
    core.train()
    optimizer.zero_grad(set_to_none=True)
    sums = {"loss": 0.0, "loss_cls": 0.0, "loss_caption": 0.0, "loss_itc": 0.0}
    counts = dict.fromkeys(sums, 0)
    accum, n_micro = config.grad_accum_steps, len(run.loader)
    for i, batch in enumerate(run.loader):
        check_cancel(cancel)
        group_start = (i // accum) * accum
        group_size = min(accum, n_micro - group_start)
        last_of_group = i == group_start + group_size - 1
        outp = _micro_step(run, batch, epoch, group_size, sync=last_of_group)
        for k in sums:
            v = getattr(outp, k)
            if v is not None:
                sums[k] += float(v.detach())
                counts[k] += 1
        if last_of_group:
            _optimizer_step(run)
            if run.state.step % config.log_every == 0 or i == n_micro - 1:
                report(
                    progress, run.state.step, run.total, Stage.TRAIN, epoch=epoch + 1, epochs=config.epochs
                )
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "step": run.state.step,
        "lr": optimizer.param_groups[0]["lr"],
    }
    for k in sums:
        mean = sums[k] / counts[k] if counts[k] else float("nan")
        record[f"train_{k}"] = ddp.all_reduce_mean(mean, run.dist, run.device)
    return record


def _micro_step(run: _Run, batch: Any, epoch: int, group_size: int, *, sync: bool) -> Any:
    """Forward and backward of one micro-batch (gradients synchronised across processes only when ``sync``)."""
    import torch

    from ..model.device import autocast

    mcfg = run.core.config
    no_sync = run.dist.distributed and not sync
    with run.model.no_sync() if no_sync else contextlib.nullcontext():
        with autocast(run.device, enabled=run.config.bf16):
            outp = run.model(**model_inputs(batch, mcfg.mode, mcfg.alpha, device=run.device))
        if outp.loss is None:
            raise ValueError("batch without targets: bags need a class or a caption to train on")
        if not bool(torch.isfinite(outp.loss.detach())):  # stop before it reaches the weights
            raise NonFiniteError(
                f"training stopped: the loss is {float(outp.loss.detach())} at epoch {epoch + 1}, step "
                f"{run.state.step + 1} (bags {list(getattr(batch, 'slide_ids', []))[:4]}); nothing of this step was "
                "saved. Check those bags for NaN/Inf features, or lower the learning rate"
            )
        (outp.loss / group_size).backward()
    return outp


def _optimizer_step(run: _Run) -> None:
    import torch

    lr = _scheduled_lr(run)
    for g in run.optimizer.param_groups:
        g["lr"] = lr
    if run.config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.core.parameters(), run.config.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.state.step += 1


@dataclass(frozen=True)
class _Hooks:
    """The caller's callbacks of a run: progress, cancel, per-epoch metrics and the epoch log."""

    progress: ProgressFn | None
    cancel: CancelToken | None
    metrics_callback: MetricsFn | None
    epoch_log: MetricsFn | None


def _validate_and_checkpoint(run: _Run, epoch: int, record: dict[str, Any], t0: float, hooks: _Hooks) -> None:
    """Validation metrics into ``record``, best/early-stopping bookkeeping, ``best/`` and ``last/`` checkpoints."""
    progress, cancel = hooks.progress, hooks.cancel
    metrics_callback, epoch_log = hooks.metrics_callback, hooks.epoch_log
    config, state, dist = run.config, run.state, run.dist
    value = (
        _validate(run, epoch, record, progress, cancel) if run.val_ds is not None else record["train_loss"]
    )
    record["seconds"] = round(time.perf_counter() - t0, 3)
    improved = _better(value, state.best_metric, run.metric_name, config.min_delta)
    if improved:
        state.best_metric, state.best_epoch, state.bad_epochs = value, epoch + 1, 0
    else:
        state.bad_epochs += 1
    may_stop = epoch + 1 >= max(config.min_epochs, math.ceil(run.warmup / max(1, run.steps_per_epoch)))
    state.stopped_early = config.patience is not None and may_stop and state.bad_epochs >= config.patience
    state.epoch = epoch + 1
    state.history.append(record)
    if dist.is_main:
        if improved:
            run.core.save_pretrained(run.out / "best")
        meta = {
            **state.to_meta(),
            "train_config": json.loads(config.to_json()),
            "world_size": dist.world_size,
        }
        _save_last(run.core, run.optimizer, run.out, meta)
        _write_log(run.out / "log.csv", state.history)
        if metrics_callback is not None:
            metrics_callback(dict(record))
    ddp.barrier(dist)
    log.info(
        "epoch %d/%d: %s",
        epoch + 1,
        config.epochs,
        {k: v for k, v in record.items() if not isinstance(v, list)},
    )
    if epoch_log is not None and dist.is_main:
        epoch_log(dict(record))


def _validate(
    run: _Run, epoch: int, record: dict[str, Any], progress: ProgressFn | None, cancel: CancelToken | None
) -> float:
    """Validation metrics into ``record``; returns the value of the selection metric."""
    config, mcfg = run.config, run.core.config
    report(progress, run.state.step, run.total, Stage.VALIDATE, epoch=epoch + 1, epochs=config.epochs)
    if run.val_ds is None:  # the caller validates only runs with a validation set
        raise ValueError("no validation set")
    pred = predict(
        run.model,
        run.val_ds,
        batch_size=run.micro,
        mode=mcfg.mode,
        device=run.device,
        bf16=config.bf16,
        dist=run.dist,
        cancel=cancel,
        generate=run.gen_val,
    )
    metrics = metrics_of(pred, mcfg.num_classes)
    record.update({f"val_{k}": v for k, v in metrics.items()})
    record["val_combined"] = combined_score(metrics)
    if pred.captions is not None:
        record["val_distinct_captions"] = len(set(pred.captions))
    return float(record.get(f"val_{run.metric_name}", float("nan")))


#: bags read for the training-feature summary (spread over the training set): bounded time on large cohorts
SUMMARY_BAGS = 500


def _summarize_training(run: _Run) -> Any:
    """The training-feature summary (out-of-distribution checks at inference), saved in ``best/`` and
    ``last/``; ``None`` when it cannot be made (it is a safeguard, never a reason to lose a trained model)."""
    import numpy as np

    from ..model.feature_summary import save_summary, summarize

    ds = run.train_ds
    picks: list[int] = sorted(
        set(np.linspace(0, len(ds) - 1, min(len(ds), SUMMARY_BAGS)).round().astype(int).tolist())
    )
    try:
        summary = summarize(ds[i].features for i in picks)
        if run.dist.is_main:
            for folder in (run.out / "best", run.out / "last"):
                if folder.is_dir():
                    save_summary(summary, folder, encoder=run.core.config.encoder_name)
    except (ValueError, OSError) as err:
        log.warning("no training-feature summary (out-of-distribution checks off for this model): %s", err)
        return None
    return summary


def _finish(run: _Run) -> TrainResult:
    """The best checkpoint (saved now when no epoch improved), the verdict on it, and the result."""
    out, state, core = run.out, run.state, run.core
    if run.dist.is_main and not (out / "best").exists():  # resumed a finished run, or no epoch improved
        core.save_pretrained(out / "best")
    where = "validation" if run.val_ds is not None else "training"
    verdict = judge_best(
        core,
        out,
        run.val_ds if run.val_ds is not None else run.train_ds,
        run.micro,
        core.config.mode,
        run.device,
        run.config,
        run.dist,
        run.captioned,
        where=where,
        train_captions=_captions_of(run.train_ds) if run.val_ds is not None else None,
        train_dataset=run.train_ds,
    )
    core.training_verdict = TrainingVerdict.from_dict(
        verdict
    )  # inference on this in-memory model reads its warnings
    core.feature_summary = _summarize_training(run)
    return TrainResult(
        out_dir=out,
        best_dir=out / "best",
        last_dir=out / "last",
        best_metric=state.best_metric,
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        step=state.step,
        stopped_early=state.stopped_early,
        history=state.history,
        model=core,
        warnings=list(verdict.get("warnings", [])),
        verdict=verdict,
    )
