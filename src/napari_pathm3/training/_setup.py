"""Setting up a training run (datasets, seeding, model, optimiser, resume) and the state its phases share:
:class:`TrainState` (what ``last/`` saves) and :class:`_Run`; the log and the ``last/`` checkpoint writers."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from .._types import PathLike
from ..config import PathM3Config, TrainConfig
from ..errors import CheckpointError, ManifestError, PathM3Error
from . import ddp
from ._state import STATE_JSON, load_trainer_state, save_trainer_state, set_rng_state, unflatten_optimizer
from .data import BagDataset, BagRecord, SlideBag, collate_bags

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    from ..model.pathm3 import PathM3Model
    from .ddp import DistInfo

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

        cfg = dataclasses.replace(model_or_config, **overrides)  # type: ignore[arg-type]  # mode, alpha
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


@dataclass
class TrainState:
    """What a run has done so far: saved with ``last/`` (trainer_state.json) and restored on resume."""

    epoch: int = 0
    step: int = 0
    best_metric: float = float("nan")
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_meta(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def restore(self, meta: dict[str, Any]) -> None:
        for f in dataclasses.fields(self):
            if f.name in meta:
                setattr(self, f.name, meta[f.name])


class _Schedule(TypedDict):
    """The arguments of ``loop.lr_at`` besides the step."""

    lr: float
    warmup_lr: float
    warmup: int
    total: int
    min_lr: float


@dataclass
class _Run:
    """Everything one training run holds between its phases (prepare -> epochs -> validate-and-checkpoint)."""

    config: TrainConfig
    out: Path
    device: torch.device
    dist: DistInfo
    core: PathM3Model
    model: Any  # ``core``, or its DistributedDataParallel wrapper (whose ``no_sync`` the loop uses)
    optimizer: torch.optim.Optimizer
    loader: DataLoader[SlideBag]
    sampler: DistributedSampler[SlideBag]
    train_ds: BagDataset | Sequence[SlideBag]
    val_ds: BagDataset | Sequence[SlideBag] | None
    micro: int  # bags per micro-batch and process
    steps_per_epoch: int
    total: int  # optimiser steps of the whole run
    warmup: int
    metric_name: str
    captioned: bool  # the model is trained to caption and there are captions to judge it by
    gen_val: bool  # validation generates captions (for BLEU)
    state: TrainState = field(default_factory=TrainState)

    @property
    def schedule(self) -> _Schedule:
        o = self.core.config.optim
        return _Schedule(
            lr=o.lr, warmup_lr=o.warmup_lr, warmup=self.warmup, total=self.total, min_lr=self.config.min_lr
        )


def _device_and_processes(config: TrainConfig) -> tuple[torch.device, DistInfo]:
    """The device and the process group (one CUDA device per process under ``torchrun``)."""
    import torch

    from ..model.device import resolve_device

    device = resolve_device(config.device)
    dist = ddp.init_distributed(device.type)
    if dist.distributed and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device, dist


@dataclass(frozen=True)
class _Placement:
    """Where a run reads its features and runs: the features folder, the device and the processes."""

    features_dir: PathLike | None
    device: torch.device
    dist: DistInfo


def _prepare(
    model_or_config: Any,
    sets: tuple[Any, Any],
    config: TrainConfig,
    out: Path,
    where: _Placement,
    caption_style: str = "as given",
) -> _Run:
    """Datasets (train, validation), model, loader, optimiser and learning-rate schedule of a run."""
    train_set, val_set = sets
    features_dir, device, dist = where.features_dir, where.device, where.dist
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    _seed_all(config.seed)
    is_config = isinstance(model_or_config, PathM3Config)
    names = model_or_config.class_names if is_config else model_or_config.config.class_names
    train_ds = _as_dataset(train_set, names, features_dir, max_patches=config.max_patches, seed=config.seed)
    if (
        train_ds is None or len(train_ds) == 0
    ):  # an epoch on nothing: NaN loss, and a best/ of an untrained model
        raise ManifestError(
            "no training bags: the training set is empty (a manifest whose rows are all split val/test?); "
            "give at least one bag per class to train on"
        )
    core = _build_model(model_or_config, config, device, train_ds)
    core.provenance = _provenance(core, config, caption_style)
    mcfg, optim_cfg = core.config, core.config.optim
    val_ds = _as_dataset(val_set, names, features_dir)
    world, accum = dist.world_size, config.grad_accum_steps
    global_batch = config.batch_size or optim_cfg.batch_size
    if global_batch % (world * accum):
        raise ValueError(
            f"batch_size: {global_batch} bags per step must be divisible by processes x grad_accum_steps "
            f"= {world} x {accum}"
        )
    micro = global_batch // (world * accum)
    sampler: DistributedSampler[SlideBag] = DistributedSampler(
        train_ds, num_replicas=world, rank=dist.rank, shuffle=True, seed=config.seed
    )
    loader = DataLoader(
        train_ds, batch_size=micro, sampler=sampler, collate_fn=collate_bags, num_workers=config.num_workers
    )
    steps_per_epoch = math.ceil(len(loader) / accum)
    total = config.epochs * steps_per_epoch
    groups = core.optimizer_param_groups() if hasattr(core, "optimizer_param_groups") else core.parameters()
    optimizer = torch.optim.AdamW(
        groups,
        lr=optim_cfg.lr,
        betas=tuple(optim_cfg.betas),
        eps=optim_cfg.eps,
        weight_decay=optim_cfg.weight_decay,
    )
    metric_name = config.val_metric if val_ds is not None else "loss"
    captioned = mcfg.alpha < 1.0 and bool(_captions_of(val_ds if val_ds is not None else train_ds))
    return _Run(
        config=config,
        out=out,
        device=device,
        dist=dist,
        core=core,
        model=_distributed(core, device, dist),
        optimizer=optimizer,
        loader=loader,
        sampler=sampler,
        train_ds=train_ds,
        val_ds=val_ds,
        micro=micro,
        steps_per_epoch=steps_per_epoch,
        total=total,
        warmup=(
            min(optim_cfg.warmup_steps, steps_per_epoch)  # LAVIS warms up in the first epoch only
            if config.lr_schedule == "lavis"
            else min(optim_cfg.warmup_steps, max(1, int(config.warmup_max_fraction * total)))
        ),
        metric_name=metric_name,
        captioned=captioned,
        gen_val=captioned and metric_name in ("combined", "bleu_4"),
    )


def _provenance(core: PathM3Model, config: TrainConfig, caption_style: str) -> dict[str, Any]:
    """The run record saved with every checkpoint of this run (config.json ``provenance``)."""
    from ..model.provenance import RunProvenance

    report = getattr(core, "qformer_init_report", None)
    detail = report.summary() if report is not None else ""
    prov = RunProvenance.of(
        core.config, train_config=config, caption_style=caption_style, qformer_init_detail=detail
    )
    log.info("%s", prov.header())
    return prov.to_dict()


def _remove_old_best(out: Path) -> None:
    """A fresh run must not leave an older run's best checkpoint behind (only ever a checkpoint of ours)."""
    from ..model.checkpoint import is_checkpoint_dir

    if is_checkpoint_dir(out / "best"):
        shutil.rmtree(out / "best", ignore_errors=True)


def _distributed(core: PathM3Model, device: torch.device, dist: DistInfo) -> torch.nn.Module:
    """``core`` wrapped for DistributedDataParallel under ``torchrun`` (else as it is)."""
    if not dist.distributed:
        return core
    from torch.nn.parallel import DistributedDataParallel

    # image mode leaves the Q-Former's text side unused
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(core, device_ids=ids, find_unused_parameters=True)


def _resume(run: _Run) -> bool:
    """Model, optimiser, RNG and progress from ``out/last`` when a trainer state is there (then True)."""
    from ..model.checkpoint import load_tensors

    last_dir = run.out / "last"
    if not (last_dir / STATE_JSON).is_file():
        log.info("no trainer state in %s: starting from scratch", last_dir)
        return False
    tensors, meta = load_trainer_state(last_dir)
    weights = load_tensors(last_dir)
    unexpected = set(weights) - set(run.core.state_dict())
    if unexpected:
        raise CheckpointError(
            f"{last_dir}: weights of another model ({sorted(unexpected)[:3]}); use a new out_dir"
        )
    run.core.load_state_dict(weights, strict=False)
    run.optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
    set_rng_state(tensors, meta["rng"])
    run.state.restore(meta)
    if meta.get("train_config") != json.loads(run.config.to_json()):
        log.warning("resuming %s with a different TrainConfig than it was started with", last_dir)
    log.info("resumed from %s at epoch %d, step %d", last_dir, run.state.epoch, run.state.step)
    return True
