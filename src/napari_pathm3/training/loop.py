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
warm-up of the paper; set ``warmup_max_fraction=1`` for the paper's schedule verbatim.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._types import CancelToken, PathLike, ProgressFn, check_cancel, report
from ..config import PathM3Config, TrainConfig
from ..errors import Cancelled, CheckpointError, NonFiniteError, PathM3Error
from . import ddp
from ._state import STATE_JSON, load_trainer_state, save_trainer_state, set_rng_state, unflatten_optimizer
from .data import BagDataset, BagRecord, SlideBag, collate_bags
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


def _better(value: float, best: float, metric: str, min_delta: float) -> bool:
    if not math.isfinite(value):
        return False
    if not math.isfinite(best):
        return True
    return value < best - min_delta if metric in LOWER_IS_BETTER else value > best + min_delta


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
        progress: ``progress(step, total_steps, stage)`` after optimiser steps.
        metrics_callback: called with each epoch's record (the ``log.csv`` row plus the confusion matrix).
        epoch_log: called with each epoch's record on the main process (the CLI prints one line per epoch).
        cancel: polled between micro-batches; a cancelled run raises :class:`Cancelled` and keeps the
            checkpoints of the finished epochs (``resume=True`` continues from there).

    Returns:
        :class:`TrainResult` (``result.best_dir`` loads with ``PathM3Model.from_pretrained``).
    """
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    from ..model.checkpoint import is_checkpoint_dir, load_tensors
    from ..model.device import autocast, resolve_device
    from ..threads import apply_thread_policy

    apply_thread_policy()  # torch's default threads oversubscribe a small shared CPU (~10x slower per step)
    config = config or TrainConfig()
    out = Path(out_dir)
    device = resolve_device(config.device)
    dist = ddp.init_distributed(device.type)
    if dist.distributed and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    try:
        _seed_all(config.seed)
        names = (
            model_or_config.class_names
            if isinstance(model_or_config, PathM3Config)
            else model_or_config.config.class_names
        )
        train_ds = _as_dataset(
            train_set, names, features_dir, max_patches=config.max_patches, seed=config.seed
        )
        core = _build_model(model_or_config, config, device, train_ds)
        mcfg = core.config
        optim_cfg = mcfg.optim
        val_ds = _as_dataset(val_set, names, features_dir)
        world, accum = dist.world_size, config.grad_accum_steps
        global_batch = config.batch_size or optim_cfg.batch_size
        if global_batch % (world * accum):
            raise ValueError(
                f"batch_size: {global_batch} bags per step must be divisible by processes x grad_accum_steps "
                f"= {world} x {accum}"
            )
        micro = global_batch // (world * accum)
        sampler = DistributedSampler(
            train_ds, num_replicas=world, rank=dist.rank, shuffle=True, seed=config.seed
        )
        loader = DataLoader(train_ds, batch_size=micro, sampler=sampler, collate_fn=collate_bags,
                            num_workers=config.num_workers)  # fmt: skip
        n_micro = len(loader)
        steps_per_epoch = math.ceil(n_micro / accum)
        total = config.epochs * steps_per_epoch
        warmup = min(optim_cfg.warmup_steps, max(1, int(config.warmup_max_fraction * total)))
        schedule = dict(lr=optim_cfg.lr, warmup_lr=optim_cfg.warmup_lr, warmup=warmup, total=total,
                        min_lr=config.min_lr)  # fmt: skip
        groups = (
            core.optimizer_param_groups() if hasattr(core, "optimizer_param_groups") else core.parameters()
        )
        optimizer = torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas), eps=optim_cfg.eps,
                                      weight_decay=optim_cfg.weight_decay)  # fmt: skip
        metric_name = config.val_metric if val_ds is not None else "loss"
        captioned = mcfg.alpha < 1.0 and bool(_captions_of(val_ds if val_ds is not None else train_ds))
        gen_val = captioned and metric_name in ("combined", "bleu_4")

        state: dict[str, Any] = {"epoch": 0, "step": 0, "best_metric": float("nan"), "best_epoch": 0,
                                 "bad_epochs": 0, "stopped_early": False, "history": []}  # fmt: skip
        last_dir = out / "last"
        if resume and (last_dir / STATE_JSON).is_file():
            tensors, meta = load_trainer_state(last_dir)
            weights = load_tensors(last_dir)
            unexpected = set(weights) - set(core.state_dict())
            if unexpected:
                raise CheckpointError(
                    f"{last_dir}: weights of another model ({sorted(unexpected)[:3]}); use a new out_dir"
                )
            core.load_state_dict(weights, strict=False)
            optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
            set_rng_state(tensors, meta["rng"])
            state.update({k: meta[k] for k in state if k in meta})
            if meta.get("train_config") != json.loads(config.to_json()):
                log.warning("resuming %s with a different TrainConfig than it was started with", last_dir)
            log.info("resumed from %s at epoch %d, step %d", last_dir, state["epoch"], state["step"])
        else:
            if resume:
                log.info("no trainer state in %s: starting from scratch", last_dir)
            # a fresh run must not leave an older run's best checkpoint behind (only ever a checkpoint of ours)
            if dist.is_main and is_checkpoint_dir(out / "best"):
                shutil.rmtree(out / "best", ignore_errors=True)

        model: Any = core
        if dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            # image mode leaves the Q-Former's text side unused
            model = DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None,
                                            find_unused_parameters=True)  # fmt: skip
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "train_config.json").write_text(config.to_json())

        mode, alpha = mcfg.mode, mcfg.alpha
        step = state["step"]
        for epoch in range(state["epoch"], config.epochs):
            if state["stopped_early"]:
                break
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            if hasattr(train_ds, "reseed"):
                train_ds.reseed(epoch)
            core.train()
            optimizer.zero_grad(set_to_none=True)
            sums = {"loss": 0.0, "loss_cls": 0.0, "loss_caption": 0.0}
            counts = dict.fromkeys(sums, 0)
            stage = f"epoch {epoch + 1}/{config.epochs}"
            for i, batch in enumerate(loader):
                check_cancel(cancel)
                group_start = (i // accum) * accum
                group_size = min(accum, n_micro - group_start)
                last_of_group = i == group_start + group_size - 1
                sync = model.no_sync() if dist.distributed and not last_of_group else contextlib.nullcontext()
                with sync:
                    with autocast(device, enabled=config.bf16):
                        outp = model(**model_inputs(batch, mode, alpha, device=device))
                    if outp.loss is None:
                        raise ValueError("batch without targets: bags need a class or a caption to train on")
                    if not bool(torch.isfinite(outp.loss.detach())):  # stop before it reaches the weights
                        raise NonFiniteError(
                            f"training stopped: the loss is {float(outp.loss.detach())} at epoch {epoch + 1}, step {step + 1} "
                            f"(bags {list(getattr(batch, 'slide_ids', []))[:4]}); nothing of this step was saved. "
                            "Check those bags for NaN/Inf features, or lower the learning rate"
                        )
                    (outp.loss / group_size).backward()
                for k in sums:
                    v = getattr(outp, k)
                    if v is not None:
                        sums[k] += float(v.detach())
                        counts[k] += 1
                if last_of_group:
                    for g in optimizer.param_groups:
                        g["lr"] = lr_at(step, **schedule)
                    if config.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(core.parameters(), config.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    if step % config.log_every == 0 or i == n_micro - 1:
                        report(progress, step, total, stage)

            record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"]}
            for k in sums:
                mean = sums[k] / counts[k] if counts[k] else float("nan")
                record[f"train_{k}"] = ddp.all_reduce_mean(mean, dist, device)
            if val_ds is not None:
                report(progress, step, total, f"{stage}: validating")
                pred = predict(model, val_ds, batch_size=micro, mode=mode, device=device, bf16=config.bf16,
                               dist=dist, cancel=cancel, generate=gen_val)  # fmt: skip
                record.update({f"val_{k}": v for k, v in metrics_of(pred, mcfg.num_classes).items()})
                record["val_combined"] = combined_score(metrics_of(pred, mcfg.num_classes))
                if pred.captions is not None:
                    record["val_distinct_captions"] = len(set(pred.captions))
                value = float(record.get(f"val_{metric_name}", float("nan")))
            else:
                value = record["train_loss"]
            record["seconds"] = round(time.perf_counter() - t0, 3)
            improved = _better(value, state["best_metric"], metric_name, config.min_delta)
            if improved:
                state.update(best_metric=value, best_epoch=epoch + 1, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
            may_stop = epoch + 1 >= max(config.min_epochs, math.ceil(warmup / max(1, steps_per_epoch)))
            state["stopped_early"] = (
                config.patience is not None and may_stop and state["bad_epochs"] >= config.patience
            )
            state.update(epoch=epoch + 1, step=step)
            state["history"].append(record)
            if dist.is_main:
                if improved:
                    core.save_pretrained(out / "best")
                meta = {**state, "train_config": json.loads(config.to_json()), "world_size": world}
                _save_last(core, optimizer, out, meta)
                _write_log(out / "log.csv", state["history"])
                if metrics_callback is not None:
                    metrics_callback(dict(record))
            ddp.barrier(dist)
            log.info("%s: %s", stage, {k: v for k, v in record.items() if not isinstance(v, list)})
            if epoch_log is not None and dist.is_main:
                epoch_log(dict(record))
        if dist.is_main and not (out / "best").exists():  # resumed a finished run, or no epoch improved
            core.save_pretrained(out / "best")
        verdict = judge_best(core, out, val_ds if val_ds is not None else train_ds, micro, mode, device,
                           config, dist, captioned, where="validation" if val_ds is not None else "training")  # fmt: skip
        core._pathm3_verdict = verdict  # inference on this in-memory model reads its warnings
        return TrainResult(
            out_dir=out, best_dir=out / "best", last_dir=out / "last", best_metric=state["best_metric"],
            best_epoch=state["best_epoch"], epochs_run=state["epoch"], step=state["step"],
            stopped_early=state["stopped_early"], history=state["history"], model=core,
            warnings=list(verdict.get("warnings", [])), verdict=verdict,
        )  # fmt: skip
    except Cancelled as err:
        raise Cancelled(
            f"training cancelled; finished epochs are in {out / 'last'} (resume=True continues)"
        ) from err
    finally:
        ddp.shutdown(dist)
